#!/usr/bin/env bash
# Runs the gateway (nginx) in the foreground: renders gateway/nginx.conf.template into a runtime directory, then
# replaces this shell with nginx, so the caller's pid is nginx's master process (SIGTERM or SIGQUIT stops it).
#
# Options (each also an environment variable):
#   --listen ADDR       RIDESHARE_GATEWAY_LISTEN   where the gateway listens (default 127.0.0.1:8080)
#   --users ADDR        RIDESHARE_USERS_UPSTREAM   the users service (default 127.0.0.1:8081)
#   --rides ADDR        RIDESHARE_RIDES_UPSTREAM   the rides service (default 127.0.0.1:8082)
#   --www DIR           RIDESHARE_GATEWAY_WWW      the rider page's files, served at / (default gateway/www
#                                                  under the repository root)
#   --runtime-dir DIR   RIDESHARE_GATEWAY_DIR      config, pid file, error log, temp files (default data/gateway
#                                                  under the repository root)
#   --check             render and check the configuration (nginx -t), then exit
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)

listen=${RIDESHARE_GATEWAY_LISTEN:-127.0.0.1:8080}
users=${RIDESHARE_USERS_UPSTREAM:-127.0.0.1:8081}
rides=${RIDESHARE_RIDES_UPSTREAM:-127.0.0.1:8082}
dir=${RIDESHARE_GATEWAY_DIR:-$root/data/gateway}
www=${RIDESHARE_GATEWAY_WWW:-$root/gateway/www}
check=false

die() {
    echo "gateway.sh: error: $*" >&2
    exit 2
}

while (($# > 0)); do
    case $1 in
    --listen) listen=${2:?--listen needs a value}; shift 2 ;;
    --users) users=${2:?--users needs a value}; shift 2 ;;
    --rides) rides=${2:?--rides needs a value}; shift 2 ;;
    --www) www=${2:?--www needs a value}; shift 2 ;;
    --runtime-dir) dir=${2:?--runtime-dir needs a value}; shift 2 ;;
    --check) check=true; shift ;;
    *) die "unknown argument: $1" ;;
    esac
done

# The values go into the config verbatim: refuse anything that could end a directive or start a new one.
safe='^[][A-Za-z0-9_./:-]+$' # also brackets, for IPv6 addresses
for value in "$listen" "$users" "$rides" "$dir" "$www"; do
    [[ $value =~ $safe ]] || die "unsafe value for the nginx config: $value"
done

command -v nginx >/dev/null 2>&1 || die "nginx is not installed (scripts/setup.sh installs it)"

[[ -f $www/index.html ]] || die "no rider page in $www (index.html missing)"
www=$(cd "$www" && pwd)
# Started as root, nginx runs its workers as `nobody`, who may not be able to enter a private clone (a 0700
# folder) to read the page: run them as the owner of the page's files instead. Otherwise there is no choice
# to make (the workers run as this user) and the directive would only draw a warning.
user_directive=""
if [[ $(id -u) == 0 ]]; then
    user_directive="user $(stat -c '%U %G' "$www");"
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf=$dir/nginx.conf
sed -e "s|@LISTEN@|$listen|g" \
    -e "s|@USERS_UPSTREAM@|$users|g" \
    -e "s|@RIDES_UPSTREAM@|$rides|g" \
    -e "s|@RUNTIME_DIR@|$dir|g" \
    -e "s|@WWW_DIR@|$www|g" \
    -e "s|@USER_DIRECTIVE@|$user_directive|g" \
    "$root/gateway/nginx.conf.template" >"$conf.tmp"
mv "$conf.tmp" "$conf"

# -e: the error log before the config is read (the compiled-in default may not be writable).
if $check; then
    exec nginx -e "$dir/error.log" -p "$dir" -c "$conf" -t -q
fi
echo "gateway.sh: nginx on $listen: /api/v1/users* -> $users, everything else -> $rides (config: $conf)" >&2
exec nginx -e "$dir/error.log" -p "$dir" -c "$conf" -g 'daemon off;'
