//! A deterministic simulation of the replication rules: the master's and the slaves' state machines, exchanging
//! their messages through queues with random delays, while processes are paused and slaves crash and are
//! replaced, each process reading a clock of its own that runs up to 1 % fast or slow (no two clocks agree on
//! anything but the rate bound). Real SQLite databases, no broker, no ZooKeeper.
//!
//! What it checks, over random schedules: **no read is ever served stale** (a slave that serves at some moment,
//! by its own lease, has applied every write whose acknowledgement the master sent before that moment), and that
//! the run is not vacuous (writes were acknowledged and reads served).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use protocol::lease::MAX_DRIFT_PPM;
use protocol::queue::{Command, CommandReply, KeyedWrite, SyncAck, SyncMessage};
use protocol::{Statement, Value};
use worker::db::{Db, Job};
use worker::master::machine::{self as m, Master};
use worker::slave::machine::{self as s, Phase, Slave};

const PPM: u128 = 1_000_000;
const SLAVES: usize = 3;
const RUN: Duration = Duration::from_secs(20);

/// A small deterministic generator (xorshift64*), seeded by proptest.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn ms(&mut self, max: u64) -> Duration {
        Duration::from_millis(self.below(max + 1))
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Who a command came from, so its answer can be routed back.
#[derive(Debug, Clone, Copy)]
enum Sender {
    Client,
    Slave(usize, u64),
}

#[derive(Debug)]
enum Event {
    /// A command reaches `writeQ`.
    Command(Sender, Command),
    /// A message of the log reaches a slave's queue.
    Sync(usize, u64, SyncMessage),
    Ack(SyncAck),
    Reply(usize, u64, CommandReply),
    MasterWake,
    SlaveWake(usize, u64),
    ClientWrite,
    ClientRead,
    Pause(Process, Duration),
    Crash(usize),
    Restart(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Process {
    Master,
    Slave(usize),
}

/// One slave process: its machine, the queue bound to the sync exchange, and its incarnation (an event for an
/// earlier incarnation is dropped, as a dead process's messages are).
struct SlaveProc {
    machine: Slave,
    inbox: VecDeque<(SyncMessage, bool)>,
    incarnation: u64,
    alive: bool,
    paused_until: Duration,
    rate: u128,
    /// When the last message was delivered to its queue: the queue is first in, first out.
    last_delivery: Duration,
    request_out: bool,
}

struct World {
    rng: Rng,
    base: Instant,
    dir: tempfile::TempDir,
    now: Duration,
    events: BinaryHeap<Reverse<(Duration, u64, usize)>>,
    payloads: BTreeMap<usize, Event>,
    next_id: usize,
    master: Master,
    master_rate: u128,
    master_paused_until: Duration,
    write_q: VecDeque<(u64, Command)>,
    senders: BTreeMap<u64, Sender>,
    next_tag: u64,
    slaves: Vec<SlaveProc>,
    /// Per slave id, the last delivery time of acknowledgements to the master (one channel: in order).
    next_key: u64,
    /// The highest seq any acknowledgement the master sent covered, by the moment it was sent.
    acked: Vec<(Duration, u64)>,
    reads_served: u64,
    writes_acked: u64,
}

fn local(base: Instant, real: Duration, rate: u128) -> Instant {
    base + Duration::from_nanos((real.as_nanos() * rate / PPM) as u64)
}

fn real_of(base: Instant, local_t: Instant, rate: u128) -> Duration {
    let since = local_t.saturating_duration_since(base);
    Duration::from_nanos((since.as_nanos() * PPM / rate) as u64)
}

impl World {
    fn new(seed: u64) -> World {
        let mut rng = Rng(seed | 1);
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open_master(&dir.path().join("master/db.sqlite")).unwrap();
        let schema = Job::Write {
            key: "schema".into(),
            statements: vec![Statement::new(
                "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
                vec![],
            )],
        };
        db.execute_batch(1, &[schema]).unwrap();
        let drift = u128::from(MAX_DRIFT_PPM);
        let mut rate = || PPM - drift + u128::from(rng.below((2 * drift + 1) as u64));
        let master_rate = rate();
        let slave_rates: Vec<u128> = (0..SLAVES).map(|_| rate()).collect();
        let base = Instant::now();
        let params = m::Params {
            epoch: 1,
            ack_timeout: Duration::from_millis(1000),
            heartbeat: Duration::from_millis(250),
            lease: Duration::from_millis(1500),
            min_in_sync: 1,
        };
        let (master, effects) = Master::new(params, db, Vec::<String>::new(), false, base);
        let mut w = World {
            rng,
            base,
            dir,
            now: Duration::ZERO,
            events: BinaryHeap::new(),
            payloads: BTreeMap::new(),
            next_id: 0,
            master,
            master_rate,
            master_paused_until: Duration::ZERO,
            write_q: VecDeque::new(),
            senders: BTreeMap::new(),
            next_tag: 1,
            slaves: Vec::new(),
            next_key: 0,
            acked: Vec::new(),
            reads_served: 0,
            writes_acked: 0,
        };
        for (i, rate) in slave_rates.into_iter().enumerate() {
            let machine = w.new_slave(i, 0);
            w.slaves.push(SlaveProc {
                machine: machine.0,
                inbox: VecDeque::new(),
                incarnation: 0,
                alive: true,
                paused_until: Duration::ZERO,
                rate,
                last_delivery: Duration::ZERO,
                request_out: false,
            });
            w.slave_effects(i, machine.1);
        }
        w.master_effects(effects);
        w.at(Duration::ZERO, Event::MasterWake);
        w.at(Duration::from_millis(5), Event::ClientWrite);
        w.at(Duration::from_millis(7), Event::ClientRead);
        w
    }

    fn new_slave(&mut self, i: usize, incarnation: u64) -> (Slave, Vec<s::Effect>) {
        let params = s::Params {
            id: format!("s{i}"),
            db_path: self
                .dir
                .path()
                .join(format!("s{i}-{incarnation}/db.sqlite")),
            retry_pause: Duration::from_millis(200),
        };
        Slave::new(params, self.rng.next())
    }

    fn at(&mut self, when: Duration, event: Event) {
        let id = self.next_id;
        self.next_id += 1;
        self.payloads.insert(id, event);
        self.events.push(Reverse((when, self.rng.next(), id)));
    }

    fn master_now(&self) -> Instant {
        local(self.base, self.now, self.master_rate)
    }

    fn slave_now(&self, i: usize) -> Instant {
        local(self.base, self.now, self.slaves[i].rate)
    }

    /// A delay on the broker: mostly short, sometimes long (a busy broker, a slow consumer).
    fn delay(&mut self) -> Duration {
        if self.rng.chance(10) {
            self.rng.ms(2500)
        } else {
            self.rng.ms(20)
        }
    }

    fn master_effects(&mut self, effects: Vec<m::Effect>) {
        for effect in effects {
            match effect {
                m::Effect::Publish(msg) => {
                    for i in 0..self.slaves.len() {
                        if !self.slaves[i].alive {
                            continue;
                        }
                        let when = (self.now + self.delay()).max(self.slaves[i].last_delivery);
                        self.slaves[i].last_delivery = when;
                        let inc = self.slaves[i].incarnation;
                        self.at(when, Event::Sync(i, inc, msg.clone()));
                    }
                }
                m::Effect::WriteInSync(_) | m::Effect::AckCommands(_) => {}
                m::Effect::Reply(tag, reply) => match self.senders.remove(&tag) {
                    Some(Sender::Client) => {
                        self.record_ack(&reply);
                    }
                    Some(Sender::Slave(i, inc)) => {
                        let when = self.now + self.delay();
                        self.at(when, Event::Reply(i, inc, reply));
                    }
                    None => {}
                },
            }
        }
    }

    fn record_ack(&mut self, reply: &CommandReply) {
        let CommandReply::Batch { replies } = reply else {
            return;
        };
        for r in replies {
            if let CommandReply::Written(w) = r {
                self.writes_acked += 1;
                self.acked.push((self.now, w.seq));
            }
        }
    }

    fn slave_effects(&mut self, i: usize, effects: Vec<s::Effect>) {
        let inc = self.slaves.get(i).map_or(0, |p| p.incarnation);
        let id = format!("s{i}");
        for effect in effects {
            let command = match effect {
                s::Effect::RequestSnapshot => Some(Command::Snapshot { worker: id.clone() }),
                s::Effect::RequestJoin {
                    applied_seq,
                    anchor,
                } => Some(Command::Join {
                    worker: id.clone(),
                    applied_seq,
                    anchor,
                }),
                s::Effect::Leave => Some(Command::Leave { worker: id.clone() }),
                s::Effect::Ack(ack) => {
                    let when = self.now + self.delay();
                    self.at(when, Event::Ack(ack));
                    None
                }
                s::Effect::Stand | s::Effect::Withdraw | s::Effect::TakeOver { .. } => None,
            };
            if let Some(command) = command {
                if let Some(p) = self.slaves.get_mut(i) {
                    p.request_out = true;
                }
                let when = self.now + self.delay();
                self.at(when, Event::Command(Sender::Slave(i, inc), command));
            }
        }
    }

    /// Lets the master take what waits in `writeQ`, if it can, and wakes it for its timers.
    fn run_master(&mut self) {
        if self.now < self.master_paused_until {
            let until = self.master_paused_until;
            self.at(until, Event::MasterWake);
            return;
        }
        let now = self.master_now();
        let mut effects = self.master.on_timer(now);
        if self.master.ready_for_commands() && !self.write_q.is_empty() {
            let batch: Vec<m::Incoming> = self
                .write_q
                .drain(..)
                .map(|(tag, command)| m::Incoming {
                    tag,
                    command: Ok(command),
                })
                .collect();
            effects.extend(self.master.on_commands(now, batch).unwrap());
        }
        self.master_effects(effects);
        let wake = real_of(self.base, self.master.next_timer(), self.master_rate).max(self.now);
        self.at(
            wake.max(self.now + Duration::from_millis(1)),
            Event::MasterWake,
        );
    }

    /// Lets slave `i` handle what it can now.
    fn run_slave(&mut self, i: usize) {
        let p = &self.slaves[i];
        if !p.alive {
            return;
        }
        if self.now < p.paused_until {
            let (until, inc) = (p.paused_until, p.incarnation);
            self.at(until, Event::SlaveWake(i, inc));
            return;
        }
        let now = self.slave_now(i);
        let inc = self.slaves[i].incarnation;
        let mut effects = self.slaves[i].machine.on_timer(now);
        // One message at a time, each taking a little while: reads and other events fall in between.
        if self.slaves[i].machine.accepts_sync() {
            if let Some((msg, ackable)) = self.slaves[i].inbox.pop_front() {
                effects.extend(self.slaves[i].machine.on_sync(now, Ok(msg), ackable));
                if !self.slaves[i].inbox.is_empty() {
                    let next = self.now + self.rng.ms(3);
                    self.at(next, Event::SlaveWake(i, inc));
                }
            }
        }
        if !self.slaves[i].request_out && self.slaves[i].inbox.is_empty() {
            effects.extend(self.slaves[i].machine.on_idle(now));
        }
        self.slave_effects(i, effects);
        if let Some(t) = self.slaves[i].machine.next_timer() {
            let wake = real_of(self.base, t, self.slaves[i].rate).max(self.now);
            self.at(wake + Duration::from_millis(1), Event::SlaveWake(i, inc));
        }
    }

    fn step(&mut self) -> bool {
        let Some(Reverse((when, _, id))) = self.events.pop() else {
            return false;
        };
        if when > RUN {
            return false;
        }
        self.now = when;
        let event = self.payloads.remove(&id).expect("payload");
        match event {
            Event::Command(sender, command) => {
                if let Sender::Slave(i, inc) = sender {
                    if self.slaves[i].incarnation != inc || !self.slaves[i].alive {
                        return true;
                    }
                }
                let tag = self.next_tag;
                self.next_tag += 1;
                self.senders.insert(tag, sender);
                self.write_q.push_back((tag, command));
                self.run_master();
            }
            Event::Ack(ack) => {
                if self.now >= self.master_paused_until {
                    let now = self.master_now();
                    let effects = self.master.on_ack(now, ack);
                    self.master_effects(effects);
                } else {
                    let until = self.master_paused_until;
                    self.at(until, Event::Ack(ack));
                }
            }
            Event::MasterWake => self.run_master(),
            Event::Sync(i, inc, msg) => {
                if self.slaves[i].incarnation == inc && self.slaves[i].alive {
                    self.slaves[i].inbox.push_back((msg, true));
                    self.run_slave(i);
                }
            }
            Event::Reply(i, inc, reply) => {
                if self.slaves[i].incarnation != inc || !self.slaves[i].alive {
                    return true;
                }
                if self.now < self.slaves[i].paused_until {
                    let until = self.slaves[i].paused_until;
                    self.at(until, Event::Reply(i, inc, reply));
                    return true;
                }
                self.slaves[i].request_out = false;
                let now = self.slave_now(i);
                let machine = &mut self.slaves[i].machine;
                let effects = match (machine.phase(), reply) {
                    (Phase::CatchingUp { .. }, CommandReply::Snapshot(snap)) => {
                        machine.on_snapshot(now, Ok(snap))
                    }
                    (Phase::Joining, reply) => machine.on_join(now, Ok(reply)),
                    (Phase::Leaving { .. }, _) => {
                        machine.on_left();
                        Vec::new()
                    }
                    _ => Vec::new(),
                };
                self.slave_effects(i, effects);
                self.run_slave(i);
            }
            Event::SlaveWake(i, inc) => {
                if self.slaves[i].incarnation == inc {
                    self.run_slave(i);
                }
            }
            Event::ClientWrite => {
                self.next_key += 1;
                let key = format!("w{}", self.next_key);
                let command = Command::Writes {
                    writes: vec![KeyedWrite {
                        key: key.clone(),
                        statements: vec![Statement::new(
                            "INSERT INTO t (v) VALUES (?)",
                            vec![Value::Text(key)],
                        )],
                    }],
                };
                let when = self.now + self.delay();
                self.at(when, Event::Command(Sender::Client, command));
                let next = self.now + self.rng.ms(40);
                self.at(next, Event::ClientWrite);
                self.maybe_fault();
            }
            Event::ClientRead => {
                self.read();
                let next = self.now + self.rng.ms(10);
                self.at(next, Event::ClientRead);
            }
            Event::Pause(Process::Master, d) => {
                self.master_paused_until = self.master_paused_until.max(self.now + d);
            }
            Event::Pause(Process::Slave(i), d) => {
                let p = &mut self.slaves[i];
                p.paused_until = p.paused_until.max(self.now + d);
            }
            Event::Crash(i) => {
                self.slaves[i].alive = false;
                let when = self.now + self.rng.ms(3000);
                self.at(when, Event::Restart(i));
            }
            Event::Restart(i) => {
                let inc = self.slaves[i].incarnation + 1;
                let (machine, effects) = self.new_slave(i, inc);
                let p = &mut self.slaves[i];
                p.machine = machine;
                p.inbox.clear();
                p.incarnation = inc;
                p.alive = true;
                p.paused_until = Duration::ZERO;
                p.request_out = false;
                self.slave_effects(i, effects);
            }
        }
        true
    }

    /// Now and then (about once every two seconds): pause the master or a slave (up to 4 s: past its leases),
    /// or crash a slave.
    fn maybe_fault(&mut self) {
        if !self.rng.chance(1) {
            return;
        }
        let i = self.rng.below(SLAVES as u64) as usize;
        let event = match self.rng.below(4) {
            0 => Event::Pause(Process::Master, self.rng.ms(4000)),
            1 | 2 => Event::Pause(Process::Slave(i), self.rng.ms(4000)),
            _ => Event::Crash(i),
        };
        let now = self.now;
        self.at(now, event);
    }

    /// A client's read, served by a slave that holds a lease by its own clock at this moment; it must see every
    /// write acknowledged before.
    fn read(&mut self) {
        let i = self.rng.below(SLAVES as u64) as usize;
        let p = &self.slaves[i];
        if !p.alive || self.now < p.paused_until {
            return;
        }
        let serving = p.machine.serving();
        let now = self.slave_now(i);
        if serving.lease_until.is_none_or(|until| now >= until) {
            return;
        }
        let acked = self
            .acked
            .iter()
            .filter(|(t, _)| *t <= self.now)
            .map(|(_, seq)| *seq)
            .max()
            .unwrap_or(0);
        assert!(
            serving.position.seq >= acked,
            "stale read at {:?} on s{i}: it stands at {} but seq {acked} was acknowledged",
            self.now,
            serving.position.seq
        );
        self.reads_served += 1;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn no_read_is_ever_served_stale_whatever_the_delays_pauses_crashes_and_clock_rates(seed in any::<u64>()) {
        let mut world = World::new(seed);
        while world.step() {}
        prop_assert!(world.writes_acked > 0, "no write was acknowledged");
        prop_assert!(world.reads_served > 0, "no read was served");
    }
}
