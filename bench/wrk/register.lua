-- wrk script: PUT /api/v1/users, each request a new username (run id, thread number, counter).
-- Arguments (after `--`): the run id.
local threads = 0
function setup(thread)
    threads = threads + 1
    thread:set("thread_no", threads)
end

local prefix
local counter = 0
function init(args)
    prefix = (args[1] or "bench") .. "-" .. thread_no
end

local password = "3d0f3b9ddcacec30c4008c5e030e6c13a478cb4f"
function request()
    counter = counter + 1
    local body = string.format('{"username":"%s-%d","password":"%s"}', prefix, counter, password)
    return wrk.format("PUT", "/api/v1/users", nil, body)
end
