//! The slave's rules, driven by hand: a master's database makes real log entries and snapshots, and the clock is
//! whatever the test says it is.

use std::time::{Duration, Instant};

use protocol::queue::{LeaseGrant, LogEntry, Payload};
use protocol::{Statement, Value};

use super::*;
use crate::db::Job;

const ID: &str = "s1";
const LEASE_MS: u64 = 1500;
const PAUSE: Duration = Duration::from_millis(200);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A master's database to make entries and snapshots with, and a slave.
struct Fixture {
    _dir: tempfile::TempDir,
    master: Db,
    epoch: u64,
    /// The number of the master's last message.
    serial: std::cell::Cell<u64>,
    slave: Slave,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut master = Db::open_master(&dir.path().join("m/db.sqlite")).unwrap();
        let schema = Job::Write {
            key: "schema".into(),
            statements: vec![Statement::new(
                "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
                vec![],
            )],
        };
        master.execute_batch(1, &[schema]).unwrap();
        let params = Params {
            id: ID.into(),
            db_path: dir.path().join("s/db.sqlite"),
            retry_pause: PAUSE,
        };
        let (slave, effects) = Slave::new(params, 42);
        assert_eq!(effects, [Effect::Withdraw, Effect::RequestSnapshot]);
        Fixture {
            _dir: dir,
            master,
            epoch: 1,
            serial: std::cell::Cell::new(0),
            slave,
        }
    }

    fn snapshot(&mut self) -> Snapshot {
        let mut s = self.master.snapshot().unwrap();
        s.epoch = self.epoch;
        s
    }

    /// The next entry of the master's log: one insert.
    fn entry(&mut self, v: &str) -> LogEntry {
        let job = Job::Write {
            key: v.into(),
            statements: vec![Statement::new(
                "INSERT INTO t (v) VALUES (?)",
                vec![Value::Text(v.into())],
            )],
        };
        let mut result = self.master.execute_batch(self.epoch, &[job]).unwrap();
        result.entries.remove(0)
    }

    /// A message of the current master naming `in_sync`, granting `grants`.
    fn msg(&self, kind: SyncKind, in_sync: &[&str], grants: &[(&str, LeaseAnchor)]) -> SyncMessage {
        self.serial.set(self.serial.get() + 1);
        SyncMessage {
            kind,
            serial: self.serial.get(),
            epoch_start: 0,
            committed: self.master.position().1,
            in_sync: in_sync.iter().map(|s| (*s).to_owned()).collect(),
            grants: grants
                .iter()
                .map(|(w, a)| LeaseGrant {
                    worker: (*w).to_owned(),
                    anchor: *a,
                })
                .collect(),
            lease_ms: LEASE_MS,
        }
    }

    fn heartbeat(&self, in_sync: &[&str], grants: &[(&str, LeaseAnchor)]) -> SyncMessage {
        let kind = SyncKind::Heartbeat {
            epoch: self.epoch,
            seq: self.master.position().1,
        };
        self.msg(kind, in_sync, grants)
    }

    /// Catches up from a snapshot of the master as it is now, and joins at `now`. Returns the join's anchor.
    fn join(&mut self, now: Instant) -> LeaseAnchor {
        let snapshot = self.snapshot();
        assert!(self.slave.on_snapshot(now, Ok(snapshot)).is_empty());
        let requested = self.slave.on_idle(now);
        let [Effect::RequestJoin { anchor, .. }] = requested.as_slice() else {
            panic!("no join request")
        };
        let anchor = *anchor;
        let joined = CommandReply::Joined {
            epoch: self.epoch,
            seq: self.master.position().1,
            serial: self.serial.get(),
        };
        assert_eq!(self.slave.on_join(now, Ok(joined)), [Effect::Stand]);
        anchor
    }

    fn sync(&mut self, now: Instant, msg: SyncMessage) -> Vec<Effect> {
        self.slave.on_sync(now, Ok(msg), true)
    }
}

fn ack_of(effects: &[Effect]) -> Option<SyncAck> {
    effects.iter().find_map(|e| match e {
        Effect::Ack(a) => Some(a.clone()),
        _ => None,
    })
}

fn serves(slave: &Slave, now: Instant) -> bool {
    slave.serving().lease_until.is_some_and(|u| now < u)
}

#[test]
fn a_new_slave_takes_no_message_until_its_snapshot_is_installed_then_skips_what_the_snapshot_holds()
{
    let t0 = Instant::now();
    let mut f = Fixture::new();
    let early = f.entry("early");
    assert!(!f.slave.accepts_sync(), "messages wait while catching up");
    let snapshot = f.snapshot();
    f.slave.on_snapshot(t0, Ok(snapshot));
    assert_eq!(f.slave.phase(), Phase::Following);
    assert_eq!(f.slave.serving().generation, 1);
    // The entry was queued before the snapshot was taken, and the snapshot holds it: skipped, acknowledged.
    let seq = early.seq;
    let effects = f.sync(t0, f.msg(SyncKind::Entry(early), &[], &[]));
    assert_eq!(ack_of(&effects).unwrap().seq, seq);
    assert_eq!(f.slave.position().1, seq);
}

#[test]
fn it_asks_to_join_only_once_nothing_is_waiting_and_stands_once_joined() {
    let t0 = Instant::now();
    let mut f = Fixture::new();
    let snapshot = f.snapshot();
    f.slave.on_snapshot(t0, Ok(snapshot));
    let next = f.entry("next");
    f.sync(t0, f.msg(SyncKind::Entry(next.clone()), &[], &[]));
    let effects = f.slave.on_idle(t0);
    let [Effect::RequestJoin { applied_seq, .. }] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!(*applied_seq, next.seq);
    assert_eq!(f.slave.phase(), Phase::Joining);
    assert!(f.slave.on_idle(t0).is_empty(), "one join request at a time");
    let joined = CommandReply::Joined {
        epoch: 1,
        seq: next.seq,
        serial: f.serial.get(),
    };
    assert_eq!(f.slave.on_join(t0, Ok(joined)), [Effect::Stand]);
    assert!(!serves(&f.slave, t0), "joined, but no grant yet");
}

#[test]
fn a_refused_join_is_asked_again_after_the_pause() {
    let t0 = Instant::now();
    let mut f = Fixture::new();
    let snapshot = f.snapshot();
    f.slave.on_snapshot(t0, Ok(snapshot));
    f.slave.on_idle(t0);
    assert!(f.slave.on_join(t0, Err("timed out".into())).is_empty());
    assert_eq!(f.slave.phase(), Phase::Following);
    assert!(f.slave.on_idle(t0 + ms(100)).is_empty());
    assert!(matches!(
        f.slave.on_idle(t0 + PAUSE).as_slice(),
        [Effect::RequestJoin { .. }]
    ));
}

#[test]
fn a_failed_snapshot_is_asked_again_after_the_pause() {
    let t0 = Instant::now();
    let mut f = Fixture::new();
    assert!(f.slave.on_snapshot(t0, Err("no master".into())).is_empty());
    assert_eq!(f.slave.next_timer(), Some(t0 + PAUSE));
    assert!(f.slave.on_timer(t0 + ms(10)).is_empty());
    assert_eq!(f.slave.on_timer(t0 + PAUSE), [Effect::RequestSnapshot]);
}

#[test]
fn an_in_sync_slave_serves_only_under_a_grant_echoing_an_anchor_it_sent() {
    let t0 = Instant::now();
    let mut f = Fixture::new();
    let join_anchor = f.join(t0);
    // Named, but granted on an anchor of another run: nothing.
    let foreign = LeaseAnchor {
        session: 7,
        n: join_anchor.n,
    };
    f.sync(t0 + ms(5), f.heartbeat(&[ID], &[(ID, foreign)]));
    assert!(!serves(&f.slave, t0 + ms(5)));
    // Granted on its join anchor: serves until the join was sent plus the lease.
    let effects = f.sync(t0 + ms(10), f.heartbeat(&[ID], &[(ID, join_anchor)]));
    assert!(serves(&f.slave, t0 + ms(10)));
    assert_eq!(f.slave.serving().lease_until, Some(t0 + ms(LEASE_MS)));
    // Its acknowledgement carries a fresh anchor, for the next grant.
    assert!(ack_of(&effects).unwrap().anchor.n > join_anchor.n);
}

#[test]
fn a_grant_that_sat_in_the_queue_while_the_slave_was_paused_lets_it_serve_nothing() {
    let t0 = Instant::now();
    let mut f = Fixture::new();
    let anchor = f.join(t0);
    // The slave was paused for 10 s right after joining; the grant waited in its queue.
    let woke = t0 + ms(10_000);
    f.sync(woke, f.heartbeat(&[ID], &[(ID, anchor)]));
    assert!(!serves(&f.slave, woke));
    // The acknowledgement it sends on waking gives an anchor the next grant can use.
    let effects = f.sync(woke, f.heartbeat(&[ID], &[]));
    let fresh = ack_of(&effects).unwrap().anchor;
    f.sync(woke + ms(20), f.heartbeat(&[ID], &[(ID, fresh)]));
    assert!(serves(&f.slave, woke + ms(20)));
}

#[test]
fn a_redelivered_entry_is_skipped_and_acknowledged_with_the_seq_applied() {
    let t0 = Instant::now();
    let mut f = Fixture::new();
    f.join(t0);
    let e = f.entry("x");
    let seq = e.seq;
    f.sync(t0, f.msg(SyncKind::Entry(e.clone()), &[ID], &[]));
    let effects = f.sync(t0, f.msg(SyncKind::Entry(e), &[ID], &[]));
    assert_eq!(ack_of(&effects).unwrap().seq, seq);
    assert!(f.slave.accepts_sync());
    assert_eq!(
        f.slave.position().1,
        seq,
        "applied once: the count of rows is checked by db's own tests"
    );
}

#[test]
fn a_gap_in_the_log_sends_it_back_to_catching_up_and_ends_its_lease() {
    let t0 = Instant::now();
    let mut f = Fixture::new();
    let anchor = f.join(t0);
    f.sync(t0, f.heartbeat(&[ID], &[(ID, anchor)]));
    assert!(serves(&f.slave, t0));
    let _lost = f.entry("lost");
    let after = f.entry("after");
    let effects = f.sync(t0 + ms(1), f.msg(SyncKind::Entry(after), &[ID], &[]));
    assert_eq!(effects, [Effect::Withdraw, Effect::RequestSnapshot]);
    assert_eq!(f.slave.phase(), Phase::CatchingUp { asked: true });
    assert!(!serves(&f.slave, t0 + ms(1)));
    assert!(!f.slave.accepts_sync());
}

#[test]
fn a_heartbeat_ahead_of_the_copy_sends_it_back_to_catching_up() {
    let t0 = Instant::now();
    let mut f = Fixture::new();
    f.join(t0);
    f.entry("missed");
    let effects = f.sync(t0, f.heartbeat(&[ID], &[]));
    assert_eq!(effects, [Effect::Withdraw, Effect::RequestSnapshot]);
}

#[test]
fn an_entry_that_does_not_apply_sends_it_back_to_catching_up() {
    let t0 = Instant::now();
    let mut f = Fixture::new();
    f.join(t0);
    let forged = LogEntry {
        epoch: 1,
        seq: f.slave.position().1 + 1,
        payload: Payload::Changeset {
            bytes: vec![1, 2, 3],
            sequences: vec![],
        },
    };
    let effects = f.sync(t0, f.msg(SyncKind::Entry(forged), &[ID], &[]));
    assert_eq!(effects, [Effect::Withdraw, Effect::RequestSnapshot]);
}

#[test]
fn a_message_of_a_deposed_master_changes_nothing() {
    let t0 = Instant::now();
    let mut f = Fixture::new();
    // The slave follows a master of epoch 3 (its snapshot says so).
    f.epoch = 3;
    let anchor = f.join(t0);
    let before = f.slave.position();
    let stale = LogEntry {
        epoch: 2,
        seq: before.1 + 1,
        payload: Payload::Statements {
            statements: vec![Statement::new("DELETE FROM t", vec![])],
        },
    };
    let msg = f.msg(SyncKind::Entry(stale), &[ID], &[(ID, anchor)]);
    assert!(f.sync(t0, msg).is_empty(), "not even acknowledged");
    assert_eq!(f.slave.position(), before);
    assert!(!serves(&f.slave, t0), "and no lease taken from it");
}

#[test]
fn meeting_a_new_master_ends_the_lease_at_once_and_the_slave_joins_it() {
    let t0 = Instant::now();
    let mut f = Fixture::new();
    let anchor = f.join(t0);
    f.sync(t0, f.heartbeat(&[ID], &[(ID, anchor)]));
    assert!(serves(&f.slave, t0));
    // The old master's lease would hold until t0 + 1500 ms; the new master's first heartbeat ends it.
    f.epoch = 2;
    let mut hb = f.heartbeat(&[], &[]);
    hb.epoch_start = f.slave.position().1;
    let effects = f.sync(t0 + ms(10), hb);
    assert!(!serves(&f.slave, t0 + ms(10)));
    assert_eq!(f.slave.phase(), Phase::Following);
    assert_eq!(effects[0], Effect::Withdraw);
    let ack = ack_of(&effects).unwrap();
    assert_eq!(
        ack.epoch, 2,
        "the acknowledgement tells the new master the old lease is over"
    );
    assert!(matches!(
        f.slave.on_idle(t0 + ms(10)).as_slice(),
        [Effect::RequestJoin { .. }]
    ));
}

#[test]
fn a_new_master_that_started_elsewhere_than_this_copy_sends_it_back_to_catching_up() {
    let t0 = Instant::now();
    let mut f = Fixture::new();
    f.join(t0);
    f.epoch = 2;
    let mut hb = f.heartbeat(&[], &[]);
    hb.epoch_start = f.slave.position().1 + 3;
    assert_eq!(f.sync(t0, hb), [Effect::Withdraw, Effect::RequestSnapshot]);
}

#[test]
fn no_longer_named_after_being_named_it_withdraws_and_rejoins_but_an_early_message_does_not_count()
{
    let t0 = Instant::now();
    let mut f = Fixture::new();
    // Published before the master let this slave in (it waited in the queue): it does not name it yet.
    let early = f.heartbeat(&[], &[]);
    let anchor = f.join(t0);
    let effects = f.sync(t0, early);
    assert!(!effects.contains(&Effect::Withdraw));
    assert_eq!(f.slave.phase(), Phase::InSync { named: false });
    f.sync(t0, f.heartbeat(&[ID], &[(ID, anchor)]));
    assert!(serves(&f.slave, t0));
    let effects = f.sync(t0 + ms(5), f.heartbeat(&["other"], &[]));
    assert!(effects.contains(&Effect::Withdraw));
    assert_eq!(f.slave.phase(), Phase::Following);
    assert!(!serves(&f.slave, t0 + ms(5)));
}

#[test]
fn dropped_before_any_message_named_it_it_withdraws_as_soon_as_a_later_message_leaves_it_out() {
    let t0 = Instant::now();
    let mut f = Fixture::new();
    f.join(t0);
    // The master let it in, then dropped it before publishing anything naming it (it was slow to acknowledge).
    let effects = f.sync(t0, f.heartbeat(&["other"], &[]));
    assert!(effects.contains(&Effect::Withdraw), "{effects:?}");
    assert_eq!(f.slave.phase(), Phase::Following);
}

/// A slave caught up from a snapshot asks to join; meanwhile the master commits one more entry without it and
/// lets it in standing there. Returns the entry it still lacks and its join's anchor.
fn let_in_one_entry_behind(f: &mut Fixture, now: Instant) -> (LogEntry, LeaseAnchor) {
    let snapshot = f.snapshot();
    f.slave.on_snapshot(now, Ok(snapshot));
    let requested = f.slave.on_idle(now);
    let [Effect::RequestJoin { anchor, .. }] = requested.as_slice() else {
        panic!("{requested:?}")
    };
    let anchor = *anchor;
    let missed = f.entry("missed");
    let joined = CommandReply::Joined {
        epoch: 1,
        seq: missed.seq,
        serial: f.serial.get(),
    };
    assert!(
        f.slave.on_join(now, Ok(joined)).is_empty(),
        "no candidacy yet"
    );
    (missed, anchor)
}

#[test]
fn a_slave_let_in_behind_the_master_neither_stands_nor_serves_until_it_has_caught_up() {
    let t0 = Instant::now();
    let mut f = Fixture::new();
    let (_, anchor) = let_in_one_entry_behind(&mut f, t0);
    let grant = f.heartbeat(&[ID], &[(ID, anchor)]);
    // The heartbeat is ahead of the copy: it resyncs rather than serve without the committed write.
    assert_eq!(
        f.sync(t0, grant),
        [Effect::Withdraw, Effect::RequestSnapshot]
    );

    // The same, but the entry arrives first: once applied, it stands and serves.
    let mut f = Fixture::new();
    let (missed, anchor) = let_in_one_entry_behind(&mut f, t0);
    let grant = f.msg(SyncKind::Entry(missed), &[ID], &[(ID, anchor)]);
    assert!(f.sync(t0, grant).contains(&Effect::Stand));
    assert!(serves(&f.slave, t0));
}

#[test]
fn a_retiring_slave_serves_nothing_but_goes_on_applying_and_acknowledging() {
    let t0 = Instant::now();
    let mut f = Fixture::new();
    let anchor = f.join(t0);
    f.sync(t0, f.heartbeat(&[ID], &[(ID, anchor)]));
    assert_eq!(f.slave.on_stop(), [Effect::Leave]);
    assert!(!serves(&f.slave, t0));
    let e = f.entry("during");
    let seq = e.seq;
    let effects = f.sync(
        t0 + ms(1),
        f.msg(SyncKind::Entry(e), &[ID], &[(ID, anchor)]),
    );
    assert_eq!(ack_of(&effects).unwrap().seq, seq);
    assert!(
        !serves(&f.slave, t0 + ms(1)),
        "a grant does not bring it back"
    );
    f.slave.on_left();
    assert_eq!(f.slave.phase(), Phase::Left);
}

#[test]
fn only_an_in_sync_slave_tries_to_take_over_and_one_not_in_the_set_rejoins() {
    let t0 = Instant::now();
    let mut f = Fixture::new();
    let snapshot = f.snapshot();
    f.slave.on_snapshot(t0, Ok(snapshot));
    assert!(f.slave.on_turn().is_empty(), "not joined: not a candidate");
    f.slave.on_idle(t0);
    let joined = CommandReply::Joined {
        epoch: 1,
        seq: 1,
        serial: 0,
    };
    f.slave.on_join(t0, Ok(joined));
    assert!(matches!(
        f.slave.on_turn().as_slice(),
        [Effect::TakeOver { db_epoch: 1 }]
    ));
    assert!(!f.slave.accepts_sync(), "nothing applied while promoting");
    let Takeover::Lost(effects) = f.slave.on_takeover(Err(TakeoverError::NotInSync)) else {
        panic!("won")
    };
    assert_eq!(effects, [Effect::Withdraw]);
    assert_eq!(f.slave.phase(), Phase::Following);
}

#[test]
fn a_won_takeover_hands_the_database_over() {
    let t0 = Instant::now();
    let mut f = Fixture::new();
    f.join(t0);
    f.slave.on_turn();
    let role = MasterRole {
        epoch: 2,
        in_sync_version: 4,
        previous: vec![],
    };
    let Takeover::Won(db, role, effects) = f.slave.on_takeover(Ok(role)) else {
        panic!("lost")
    };
    assert_eq!(db.position(), f.master.position());
    assert_eq!(role.epoch, 2);
    assert_eq!(effects, [Effect::Withdraw]);
}

#[test]
fn the_commit_point_heard_from_the_master_bounds_what_reads_may_show() {
    let t0 = Instant::now();
    let mut f = Fixture::new();
    f.join(t0);
    assert_eq!(f.slave.serving().committed, 0, "unknown after a snapshot");
    let e = f.entry("x");
    let seq = e.seq;
    let mut msg = f.msg(SyncKind::Entry(e), &[ID], &[]);
    msg.committed = seq - 1;
    f.sync(t0, msg);
    let serving = f.slave.serving();
    assert_eq!((serving.position.seq, serving.committed), (seq, seq - 1));
    // The commit notice nobody acknowledges: no ack, but the commit point moves.
    let notice = f.heartbeat(&[ID], &[]);
    assert!(f.slave.on_sync(t0, Ok(notice), false).is_empty());
    assert_eq!(f.slave.serving().committed, seq);
    // A commit point heard late never moves it back.
    let mut old = f.heartbeat(&[ID], &[]);
    old.committed = 1;
    f.sync(t0, old);
    assert_eq!(f.slave.serving().committed, seq);
}
