//! A test bed of hosts on one machine: each host is a network namespace with an address of its own on a bridge
//! the suite creates, so that processes on different hosts share nothing but the network, and the network
//! between any two can be cut (iptables, in each host's own namespace), slowed or made lossy (`tc netem`).
//!
//! Only addresses created here receive traffic: a private /24 per test bed (`10.77.<n>.0/24`), the bridge at `.1`
//! (the suite's own side: clients and the nemesis run in the root namespace and reach every host through it),
//! hosts from `.2` on. Everything is undone on [`Testbed::teardown`] (and on drop): processes left in a host are
//! killed, namespaces, veth pairs and the bridge deleted.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Command as StdCommand;

use anyhow::{bail, Context};
use tokio::process::Command;

/// One host: a network namespace and its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The name the suite knows it by (`zk`, `mq`, `orch`, `w1`, ...).
    pub name: String,
    /// The network namespace (`ip netns`).
    pub netns: String,
    pub addr: Ipv4Addr,
}

impl Host {
    /// A command run on this host (in its network namespace).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns]).arg(program);
        c
    }
}

/// How a host's link was degraded (see [`Testbed::netem`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Degraded {
    /// `tc netem`: delay with jitter, and loss.
    Netem,
    /// No netem in this kernel: a slow token bucket (delay under load) and random drops.
    RateAndDrop,
}

/// How two hosts' traffic is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Both directions.
    Both,
    /// Only packets from the first host to the second are dropped (the other way still passes).
    OneWay,
}

/// The hosts of one run, on one bridge.
pub struct Testbed {
    /// A short tag that makes this test bed's names unique on the machine (interface names are at most 15
    /// characters).
    tag: String,
    bridge: String,
    subnet: u8,
    hosts: BTreeMap<String, Host>,
    torn_down: bool,
}

/// Runs a command to completion, failing with its output when it fails.
fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = StdCommand::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs a command on a host's network namespace, to completion.
fn run_in(host: &Host, program: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["netns", "exec", &host.netns, program];
    all.extend_from_slice(args);
    run("ip", &all)
}

impl Testbed {
    /// Creates `names` hosts on a new bridge. `subnet` picks the /24 (`10.77.<subnet>.0`); runs side by side need
    /// different ones.
    pub fn create(subnet: u8, names: &[&str]) -> anyhow::Result<Testbed> {
        anyhow::ensure!(
            names.len() <= 250,
            "at most 250 hosts on one bridge, not {}",
            names.len()
        );
        let tag = format!("rs{subnet}");
        let bridge = format!("{tag}br");
        let mut bed = Testbed {
            tag: tag.clone(),
            bridge: bridge.clone(),
            subnet,
            hosts: BTreeMap::new(),
            torn_down: false,
        };
        // A test bed left by a run that was killed: start clean.
        bed.remove_leftovers();
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", bed.gateway()),
                "dev",
                &bridge,
            ],
        )?;
        run("ip", &["link", "set", &bridge, "up"])?;
        // Where bridged traffic goes through the root namespace's iptables (br_netfilter, which Docker loads,
        // with Docker's FORWARD policy of DROP), let this bridge's own traffic through.
        run("iptables", &bed.forward_rule("-I"))?;
        for (i, name) in names.iter().enumerate() {
            let host = Host {
                name: (*name).to_owned(),
                netns: format!("{tag}-{name}"),
                addr: Ipv4Addr::new(10, 77, subnet, 2 + i as u8),
            };
            let veth = format!("{tag}v{i}");
            run("ip", &["netns", "add", &host.netns])?;
            run(
                "ip",
                &[
                    "link",
                    "add",
                    &veth,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    &host.netns,
                ],
            )?;
            run("ip", &["link", "set", &veth, "master", &bridge, "up"])?;
            run_in(
                &host,
                "ip",
                &["addr", "add", &format!("{}/24", host.addr), "dev", "eth0"],
            )?;
            run_in(&host, "ip", &["link", "set", "eth0", "up"])?;
            run_in(&host, "ip", &["link", "set", "lo", "up"])?;
            bed.hosts.insert(host.name.clone(), host);
        }
        Ok(bed)
    }

    /// The suite's own address on the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 1)
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .get(name)
            .unwrap_or_else(|| panic!("no host {name} in the test bed"))
    }

    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.hosts.values()
    }

    /// The host a process runs on, by its network namespace (`None`: not on any host of this bed).
    pub fn host_of(&self, pid: u32) -> Option<&Host> {
        let out = StdCommand::new("ip")
            .args(["netns", "identify", &pid.to_string()])
            .output()
            .ok()?;
        let netns = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        self.hosts.values().find(|h| h.netns == netns)
    }

    /// Cuts the traffic between two hosts, in both directions or from `a` to `b` only. Rules live in each host's
    /// own namespace, so that a cut between two hosts touches no other.
    pub fn cut(&self, a: &str, b: &str, how: Cut) -> anyhow::Result<()> {
        let (a, b) = (self.host(a), self.host(b));
        let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
        run_in(
            a,
            "iptables",
            &["-A", "OUTPUT", "-d", &b_addr, "-j", "DROP"],
        )?;
        run_in(b, "iptables", &["-A", "INPUT", "-s", &a_addr, "-j", "DROP"])?;
        if how == Cut::Both {
            run_in(
                b,
                "iptables",
                &["-A", "OUTPUT", "-d", &a_addr, "-j", "DROP"],
            )?;
            run_in(a, "iptables", &["-A", "INPUT", "-s", &b_addr, "-j", "DROP"])?;
        }
        Ok(())
    }

    /// Cuts a host from every other host, and from the suite's clients.
    pub fn isolate(&self, name: &str) -> anyhow::Result<()> {
        let host = self.host(name);
        let others: Vec<String> = self
            .hosts
            .values()
            .filter(|h| h.name != name)
            .map(|h| h.name.clone())
            .collect();
        for other in others {
            self.cut(name, &other, Cut::Both)?;
        }
        let gateway = self.gateway().to_string();
        run_in(
            host,
            "iptables",
            &["-A", "OUTPUT", "-d", &gateway, "-j", "DROP"],
        )?;
        run_in(
            host,
            "iptables",
            &["-A", "INPUT", "-s", &gateway, "-j", "DROP"],
        )?;
        Ok(())
    }

    /// Delay (with jitter) and loss on everything a host sends, with `tc netem`. Where the kernel has no netem
    /// (as on the development machine's VM: no `sch_netem`), the same fault is approximated: loss with
    /// iptables' `statistic` match, delay with a token bucket (`tbf`) slow enough that packets queue. Returns
    /// which of the two it used.
    pub fn netem(
        &self,
        name: &str,
        delay_ms: u32,
        jitter_ms: u32,
        loss_percent: u32,
    ) -> anyhow::Result<Degraded> {
        let host = self.host(name);
        let netem = run_in(
            host,
            "tc",
            &[
                "qdisc",
                "replace",
                "dev",
                "eth0",
                "root",
                "netem",
                "delay",
                &format!("{delay_ms}ms"),
                &format!("{jitter_ms}ms"),
                "loss",
                &format!("{loss_percent}%"),
            ],
        );
        if netem.is_ok() {
            return Ok(Degraded::Netem);
        }
        // 256 kbit/s with a queue of `delay` worth of bytes: a busy link waits about that long.
        let queue_bytes = (256_000 / 8) * u64::from(delay_ms.max(1)) / 1000;
        run_in(
            host,
            "tc",
            &[
                "qdisc",
                "replace",
                "dev",
                "eth0",
                "root",
                "tbf",
                "rate",
                "256kbit",
                "burst",
                "16kb",
                "limit",
                &format!("{}", queue_bytes.max(16_384)),
            ],
        )?;
        if loss_percent > 0 {
            let probability = format!("{:.3}", f64::from(loss_percent) / 100.0);
            run_in(
                host,
                "iptables",
                &[
                    "-A",
                    "OUTPUT",
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &probability,
                    "-j",
                    "DROP",
                ],
            )?;
        }
        Ok(Degraded::RateAndDrop)
    }

    /// Heals the network: no cut, no delay, no loss, on any host.
    pub fn heal(&self) -> anyhow::Result<()> {
        for host in self.hosts.values() {
            run_in(host, "iptables", &["-F"])?;
            // No qdisc to delete is not an error worth stopping for.
            let _ = run_in(host, "tc", &["qdisc", "del", "dev", "eth0", "root"]);
        }
        Ok(())
    }

    /// Kills what runs on the hosts, deletes them and the bridge.
    pub fn teardown(&mut self) {
        if !self.torn_down {
            self.torn_down = true;
            self.remove_leftovers();
        }
    }

    /// The root namespace's rule letting traffic between this bridge's ports through, to insert or delete.
    fn forward_rule<'a>(&'a self, action: &'a str) -> Vec<&'a str> {
        vec![
            action,
            "FORWARD",
            "-i",
            &self.bridge,
            "-o",
            &self.bridge,
            "-j",
            "ACCEPT",
        ]
    }

    fn remove_leftovers(&self) {
        // The veth pairs first, by their root-side ends: deleting a link is done when `ip` returns, while the
        // links inside a deleted namespace go later, in the background, and the next test bed on this subnet
        // would meet their names ("File exists").
        let veth = format!("{}v", self.tag);
        if let Ok(out) = StdCommand::new("ip").args(["-o", "link", "show"]).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                // "7: rs150v0@if6: <BROADCAST,…"
                let Some(name) = line.split(": ").nth(1) else {
                    continue;
                };
                let name = name.split('@').next().unwrap_or_default();
                if name
                    .strip_prefix(&veth)
                    .is_some_and(|n| n.parse::<u32>().is_ok())
                {
                    let _ = run("ip", &["link", "del", name]);
                }
            }
        }
        let prefix = format!("{}-", self.tag);
        let listed = StdCommand::new("ip").args(["netns", "list"]).output();
        if let Ok(out) = listed {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let netns = line.split_whitespace().next().unwrap_or_default();
                if !netns.starts_with(&prefix) {
                    continue;
                }
                kill_all_in(netns);
                let _ = run("ip", &["netns", "del", netns]);
            }
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
        while run("iptables", &self.forward_rule("-D")).is_ok() {}
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// SIGKILLs every process left in a network namespace.
fn kill_all_in(netns: &str) {
    let Ok(out) = StdCommand::new("ip")
        .args(["netns", "pids", netns])
        .output()
    else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let _ = StdCommand::new("kill").args(["-KILL", pid]).output();
    }
}

/// Whether this process may create network namespaces (root, with `ip` and `iptables` installed): the suite
/// needs it; a test that cannot have it says so rather than pass.
pub fn can_create_hosts() -> bool {
    let root = StdCommand::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    root && StdCommand::new("ip").arg("-V").output().is_ok()
        && StdCommand::new("iptables").arg("-V").output().is_ok()
        && StdCommand::new("tc").arg("-V").output().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener on one host, a client on another: connects, then not once they are cut, then again once healed.
    #[tokio::test]
    async fn hosts_reach_each_other_until_cut_and_again_once_healed() {
        assert!(
            can_create_hosts(),
            "the test bed needs root, ip, iptables and tc (scripts/setup.sh installs them)"
        );
        let mut bed = Testbed::create(201, &["a", "b", "c"]).unwrap();
        let (a, b) = (bed.host("a").clone(), bed.host("b").clone());
        // A server on b answering "hi" to every connection, in b's namespace.
        let mut server = b
            .command("socat")
            .arg(format!("TCP-LISTEN:7000,bind={},fork,reuseaddr", b.addr))
            .arg("SYSTEM:echo hi")
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let connects = |from: &Host| {
            let mut c = from.command("timeout");
            c.args([
                "1",
                "bash",
                "-c",
                "exec 3<>\"/dev/tcp/$0/7000\" && head -n 1 <&3",
            ])
            .arg(b.addr.to_string());
            async move {
                c.output()
                    .await
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("hi"))
            }
        };
        let mut up = false;
        for _ in 0..50 {
            if connects(&a).await {
                up = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(up, "a never reached b");
        bed.cut("a", "b", Cut::Both).unwrap();
        assert!(!connects(&a).await, "a reached b across a cut");
        assert!(
            connects(bed.host("c")).await,
            "the cut between a and b cut c off too"
        );
        bed.heal().unwrap();
        assert!(connects(&a).await, "a does not reach b once healed");
        let _ = server.kill().await;
        bed.teardown();
        let left = StdCommand::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap();
        assert!(!String::from_utf8_lossy(&left.stdout).contains("rs201-"));
        // The next run on the subnet can start at once: nothing of this one is still being removed.
        let mut again = Testbed::create(201, &["a", "b", "c"]).unwrap();
        again.teardown();
    }
}
