//! The master's rules, driven by hand: commands, acknowledgements and the clock, with a real SQLite database in a
//! temporary folder and no broker or ZooKeeper.

use std::time::{Duration, Instant};

use protocol::queue::{
    Command, CommandReply, KeyedWrite, LeaseAnchor, LeaseGrant, SyncAck, SyncKind, SyncMessage,
};
use protocol::Statement;

use super::*;

const EPOCH: u64 = 3;
const ACK_TIMEOUT: Duration = Duration::from_millis(1000);
const HEARTBEAT: Duration = Duration::from_millis(250);
const LEASE: Duration = Duration::from_millis(1500);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn params() -> Params {
    Params {
        epoch: EPOCH,
        ack_timeout: ACK_TIMEOUT,
        heartbeat: HEARTBEAT,
        lease: LEASE,
        min_in_sync: 1,
    }
}

/// A master on a fresh database holding table `t`, with no previous master's slaves to wait for.
fn master(t0: Instant) -> (tempfile::TempDir, Master) {
    master_with(t0, params(), Vec::new())
}

fn master_with(t0: Instant, params: Params, previous: Vec<String>) -> (tempfile::TempDir, Master) {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open_master(&dir.path().join("db.sqlite")).unwrap();
    let schema = Job::Write {
        key: "schema".into(),
        statements: vec![Statement::new(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
            vec![],
        )],
    };
    db.execute_batch(1, &[schema]).unwrap();
    let (m, effects) = Master::new(params, db, previous, false, t0);
    assert!(matches!(effects.as_slice(), [Effect::Publish(_)]));
    (dir, m)
}

fn anchor(n: u64) -> LeaseAnchor {
    LeaseAnchor { session: 9, n }
}

fn writes(tag: u64, keys: &[&str]) -> Incoming {
    Incoming {
        tag,
        command: Ok(Command::Writes {
            writes: keys
                .iter()
                .map(|k| KeyedWrite {
                    key: (*k).into(),
                    statements: vec![Statement::new(
                        "INSERT INTO t (v) VALUES (?)",
                        vec![protocol::Value::Text((*k).into())],
                    )],
                })
                .collect(),
        }),
    }
}

fn join(tag: u64, worker: &str, applied_seq: u64, n: u64) -> Incoming {
    Incoming {
        tag,
        command: Ok(Command::Join {
            worker: worker.into(),
            applied_seq,
            anchor: anchor(n),
        }),
    }
}

fn ack(worker: &str, seq: u64, n: u64) -> SyncAck {
    SyncAck {
        worker: worker.into(),
        epoch: EPOCH,
        seq,
        anchor: anchor(n),
    }
}

/// Lets `workers` join at `now` (a round of joins only), checking the set is written before they are answered.
fn admit(m: &mut Master, now: Instant, workers: &[&str]) {
    let seq = m.seq();
    let batch = workers
        .iter()
        .enumerate()
        .map(|(i, w)| join(100 + i as u64, w, seq, 1))
        .collect();
    let effects = m.on_commands(now, batch).unwrap();
    let set = effects
        .iter()
        .position(|e| matches!(e, Effect::WriteInSync(_)))
        .expect("the set is written");
    let first_reply = effects
        .iter()
        .position(|e| matches!(e, Effect::Reply(_, CommandReply::Joined { .. })))
        .expect("joined");
    assert!(set < first_reply, "{effects:?}");
}

fn published(effects: &[Effect]) -> Vec<&SyncMessage> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Publish(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn entry_seqs(effects: &[Effect]) -> Vec<u64> {
    published(effects)
        .iter()
        .filter_map(|m| match &m.kind {
            SyncKind::Entry(e) => Some(e.seq),
            SyncKind::Heartbeat { .. } => None,
        })
        .collect()
}

fn replies(effects: &[Effect]) -> Vec<(u64, CommandReply)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Reply(tag, r) => Some((*tag, r.clone())),
            _ => None,
        })
        .collect()
}

fn written(reply: &CommandReply) -> bool {
    matches!(reply, CommandReply::Batch { replies } if replies.iter().all(|r| matches!(r, CommandReply::Written(_))))
}

#[test]
fn a_write_is_answered_only_after_every_member_acknowledged_its_entry() {
    let t0 = Instant::now();
    let (_d, mut m) = master(t0);
    admit(&mut m, t0, &["a", "b"]);
    let effects = m.on_commands(t0, vec![writes(1, &["x", "y"])]).unwrap();
    let seqs = entry_seqs(&effects);
    assert_eq!(seqs.len(), 1, "two writes, one changeset entry");
    assert!(replies(&effects).is_empty(), "nothing answered yet");
    assert!(!m.ready_for_commands());

    assert_eq!(
        published(&effects)[0].committed,
        seqs[0] - 1,
        "not committed yet"
    );
    assert!(replies(&m.on_ack(t0 + ms(5), ack("a", seqs[0], 2))).is_empty());
    let effects = m.on_ack(t0 + ms(6), ack("b", seqs[0], 2));
    let answered = replies(&effects);
    assert_eq!(answered.len(), 1);
    assert!(written(&answered[0].1), "{answered:?}");
    // The commit notice goes out with the answer, unacknowledged, so that slaves may show the write at once.
    let notice = effects
        .iter()
        .find_map(|e| match e {
            Effect::Notify(notice) => Some(notice),
            _ => None,
        })
        .expect("a commit notice");
    assert_eq!(notice.committed, seqs[0]);
    assert_eq!(effects.last(), Some(&Effect::AckCommands(1)));
    assert!(m.ready_for_commands());
}

#[test]
fn a_member_that_does_not_acknowledge_is_dropped_only_after_its_lease_and_the_set_is_written_first()
{
    let t0 = Instant::now();
    let (_d, mut m) = master(t0);
    admit(&mut m, t0, &["a", "b"]);
    // The round's entry grants both members a lease on their join anchors, heard at t0.
    let effects = m.on_commands(t0, vec![writes(1, &["x"])]).unwrap();
    let seq = entry_seqs(&effects)[0];
    m.on_ack(t0 + ms(2), ack("a", seq, 2));

    // The ack timeout passes without b: b is out of the set, but its lease is still counted as held.
    let effects = m.on_timer(t0 + ACK_TIMEOUT);
    assert!(replies(&effects).is_empty());
    assert!(!effects.iter().any(|e| matches!(e, Effect::WriteInSync(_))));
    assert_eq!(m.members(), ["a"]);
    let heartbeat = published(&effects)[0];
    assert_eq!(heartbeat.in_sync, ["a"], "b learns at once it is out");

    // b's lease was anchored at its join, heard at t0: counted until t0 + the grantor's hold.
    let lease_end = t0 + grantor_hold(LEASE);
    assert_eq!(m.next_timer().min(lease_end), m.next_timer());
    let before = m.on_timer(lease_end - ms(1));
    assert!(!before.iter().any(|e| matches!(e, Effect::WriteInSync(_))));
    assert!(replies(&before).is_empty());
    let after = m.on_timer(lease_end);
    let set = after
        .iter()
        .position(|e| e == &Effect::WriteInSync(vec!["a".into()]))
        .expect("the new set is written");
    let reply = after
        .iter()
        .position(|e| matches!(e, Effect::Reply(1, r) if written(r)))
        .expect("the write is answered");
    assert!(set < reply, "{after:?}");
}

#[test]
fn a_write_without_enough_members_is_refused_unavailable_and_not_applied() {
    let t0 = Instant::now();
    let (_d, mut m) = master(t0);
    let before = m.seq();
    let effects = m.on_commands(t0, vec![writes(4, &["x", "y"])]).unwrap();
    assert!(entry_seqs(&effects).is_empty());
    assert_eq!(m.seq(), before);
    let answered = replies(&effects);
    let [(4, CommandReply::Batch { replies })] = answered.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!(replies.len(), 2);
    assert!(replies
        .iter()
        .all(|r| matches!(r, CommandReply::Unavailable { .. })));
    assert_eq!(effects.last(), Some(&Effect::AckCommands(4)));
}

#[test]
fn every_message_grants_each_member_a_lease_on_the_last_anchor_heard_from_it() {
    let t0 = Instant::now();
    let (_d, mut m) = master(t0);
    admit(&mut m, t0, &["a", "b"]);
    m.on_ack(t0 + ms(10), ack("a", m.seq(), 7));
    let effects = m.on_timer(t0 + HEARTBEAT);
    let messages = published(&effects);
    let [msg] = messages.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!(
        msg.grants,
        [
            LeaseGrant {
                worker: "a".into(),
                anchor: anchor(7)
            },
            LeaseGrant {
                worker: "b".into(),
                anchor: anchor(1)
            },
        ]
    );
    assert_eq!(msg.lease_ms, 1500);
    assert_eq!(msg.in_sync, ["a", "b"]);
}

#[test]
fn a_silent_member_is_dropped_by_heartbeats_when_there_are_no_writes() {
    let t0 = Instant::now();
    let (_d, mut m) = master(t0);
    admit(&mut m, t0, &["a", "b"]);
    let mut now = t0;
    // a acknowledges every heartbeat; b never does.
    while now < t0 + ACK_TIMEOUT + HEARTBEAT * 2 {
        now = m.next_timer();
        let effects = m.on_timer(now);
        if !published(&effects).is_empty() {
            m.on_ack(now, ack("a", m.seq(), 5));
        }
        if m.members() == ["a"] {
            break;
        }
    }
    assert_eq!(m.members(), ["a"], "b dropped");
    assert!(now > t0 + ACK_TIMEOUT, "not before the ack timeout");
    assert!(now <= t0 + ACK_TIMEOUT + HEARTBEAT * 2);
    // The set is written once b's lease is over, and new commands wait until then.
    assert!(!m.ready_for_commands());
    let effects = m.on_timer(t0 + grantor_hold(LEASE));
    assert!(effects.contains(&Effect::WriteInSync(vec!["a".into()])));
    assert!(m.ready_for_commands());
}

#[test]
fn a_leave_takes_the_member_out_at_once_so_the_writes_of_the_batch_do_not_wait_for_it() {
    let t0 = Instant::now();
    let (_d, mut m) = master(t0);
    admit(&mut m, t0, &["a", "b"]);
    let leave = Incoming {
        tag: 1,
        command: Ok(Command::Leave { worker: "b".into() }),
    };
    let effects = m.on_commands(t0, vec![leave, writes(2, &["x"])]).unwrap();
    let set = effects
        .iter()
        .position(|e| e == &Effect::WriteInSync(vec!["a".into()]))
        .expect("the set without b");
    let left = effects
        .iter()
        .position(|e| e == &Effect::Reply(1, CommandReply::Left))
        .expect("left");
    let entry = effects
        .iter()
        .position(|e| {
            matches!(
                e,
                Effect::Publish(SyncMessage {
                    kind: SyncKind::Entry(_),
                    ..
                })
            )
        })
        .expect("entry");
    assert!(set < left && left < entry, "{effects:?}");
    let seq = entry_seqs(&effects)[0];
    let effects = m.on_ack(t0 + ms(3), ack("a", seq, 2));
    assert!(matches!(replies(&effects).as_slice(), [(2, r)] if written(r)));
}

#[test]
fn a_join_waits_for_the_round_it_came_with_and_is_named_from_the_next_message() {
    let t0 = Instant::now();
    let (_d, mut m) = master(t0);
    admit(&mut m, t0, &["a"]);
    let seq_before = m.seq();
    let effects = m
        .on_commands(t0, vec![writes(1, &["x"]), join(2, "c", seq_before, 1)])
        .unwrap();
    let entry = entry_seqs(&effects)[0];
    // The entry went out before c joined: the round does not wait for c.
    assert_eq!(published(&effects)[0].in_sync, ["a"]);
    let effects = m.on_ack(t0 + ms(1), ack("a", entry, 2));
    let answered = replies(&effects);
    assert!(written(&answered[0].1));
    assert_eq!(
        answered[1],
        (
            2,
            CommandReply::Joined {
                epoch: EPOCH,
                seq: entry,
                // The first heartbeat, the entry and its commit notice went out before.
                serial: 3,
            }
        )
    );
    let effects = m.on_timer(t0 + HEARTBEAT);
    assert_eq!(published(&effects)[0].in_sync, ["a", "c"]);
}

#[test]
fn a_new_master_acknowledges_no_write_until_its_predecessors_slaves_met_its_epoch_or_their_leases_ended(
) {
    let t0 = Instant::now();
    let (_d, mut m) = master_with(t0, params(), vec!["a".into(), "old".into()]);
    admit(&mut m, t0, &["a"]);
    let effects = m.on_commands(t0, vec![writes(1, &["x"])]).unwrap();
    let seq = entry_seqs(&effects)[0];
    // a acknowledged (and joined): but "old" may still serve reads under the previous master's lease.
    assert!(replies(&m.on_ack(t0 + ms(2), ack("a", seq, 2))).is_empty());
    // "old" acknowledges a message of this epoch: it has dropped the old lease, the write is answered.
    let effects = m.on_ack(t0 + ms(3), ack("old", seq, 1));
    assert!(matches!(replies(&effects).as_slice(), [(1, r)] if written(r)));

    // Another new master whose predecessor's slave never shows up: it waits out the longest possible lease.
    let (_d2, mut m) = master_with(t0, params(), vec!["gone".into()]);
    admit(&mut m, t0, &["a"]);
    let effects = m.on_commands(t0, vec![writes(1, &["x"])]).unwrap();
    let seq = entry_seqs(&effects)[0];
    assert!(replies(&m.on_ack(t0 + ms(2), ack("a", seq, 2))).is_empty());
    assert_eq!(m.next_timer(), t0 + HEARTBEAT, "heartbeats go on meanwhile");
    let mut answered = Vec::new();
    let mut now = t0;
    while answered.is_empty() {
        now = m.next_timer();
        answered = replies(&m.on_timer(now));
        m.on_ack(now, ack("a", seq, 3));
    }
    assert_eq!(now, t0 + grantor_hold(LEASE));
    assert!(written(&answered[0].1));
}

#[test]
fn acknowledgements_of_another_epoch_count_for_nothing() {
    let t0 = Instant::now();
    let (_d, mut m) = master(t0);
    admit(&mut m, t0, &["a"]);
    let effects = m.on_commands(t0, vec![writes(1, &["x"])]).unwrap();
    let seq = entry_seqs(&effects)[0];
    let mut stale = ack("a", seq, 2);
    stale.epoch = EPOCH - 1;
    assert!(m.on_ack(t0 + ms(1), stale).is_empty());
    assert!(!m.ready_for_commands());
}

#[test]
fn an_undecodable_command_is_rejected_and_its_delivery_acknowledged() {
    let t0 = Instant::now();
    let (_d, mut m) = master(t0);
    let bad = Incoming {
        tag: 7,
        command: Err("expected value at line 1".into()),
    };
    let effects = m.on_commands(t0, vec![bad]).unwrap();
    assert!(matches!(
        replies(&effects).as_slice(),
        [(7, CommandReply::Rejected { error })] if error.contains("undecodable")
    ));
    assert_eq!(effects.last(), Some(&Effect::AckCommands(7)));
}

#[test]
fn a_write_sent_again_with_its_key_is_answered_with_the_first_result_and_applied_once() {
    let t0 = Instant::now();
    let (_d, mut m) = master(t0);
    admit(&mut m, t0, &["a"]);
    let effects = m.on_commands(t0, vec![writes(1, &["k"])]).unwrap();
    let seq = entry_seqs(&effects)[0];
    let first = replies(&m.on_ack(t0, ack("a", seq, 2)));
    let effects = m.on_commands(t0 + ms(5), vec![writes(2, &["k"])]).unwrap();
    assert!(entry_seqs(&effects).is_empty(), "nothing new to replicate");
    let again = replies(&effects);
    assert_eq!(first[0].1, again[0].1);
    assert_eq!(m.seq(), seq);
}

#[test]
fn a_snapshot_is_taken_at_once_with_this_masters_epoch() {
    let t0 = Instant::now();
    let (_d, mut m) = master(t0);
    let ask = Incoming {
        tag: 3,
        command: Ok(Command::Snapshot { worker: "s".into() }),
    };
    let effects = m.on_commands(t0, vec![ask]).unwrap();
    let answered = replies(&effects);
    let [(3, CommandReply::Snapshot(snapshot))] = answered.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!((snapshot.epoch, snapshot.seq), (EPOCH, m.seq()));
}

#[test]
fn a_master_that_takes_over_a_set_naming_other_slaves_empties_it_first() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_master(&dir.path().join("db.sqlite")).unwrap();
    let (_, effects) = Master::new(params(), db, vec!["a".into()], true, t0);
    assert_eq!(effects[0], Effect::WriteInSync(vec![]));
    assert!(matches!(
        &effects[1],
        Effect::Publish(SyncMessage {
            kind: SyncKind::Heartbeat { epoch: EPOCH, .. },
            ..
        })
    ));
}

#[test]
fn a_slave_let_in_behind_what_was_committed_gets_no_lease_and_no_place_in_the_set_until_it_caught_up(
) {
    let t0 = Instant::now();
    let (_d, mut m) = master(t0);
    admit(&mut m, t0, &["a"]);
    let effects = m.on_commands(t0, vec![writes(1, &["x"])]).unwrap();
    let seq = entry_seqs(&effects)[0];
    m.on_ack(t0, ack("a", seq, 2));
    // b asks to join standing one entry behind (the join waited in the queue while x was committed).
    let effects = m.on_commands(t0, vec![join(2, "b", seq - 1, 1)]).unwrap();
    assert!(
        effects.contains(&Effect::WriteInSync(vec!["a".into()])),
        "{effects:?}"
    );
    assert_eq!(
        m.members(),
        ["a", "b"],
        "its acknowledgements are waited for"
    );
    let effects = m.on_timer(t0 + HEARTBEAT);
    let msg = published(&effects)[0];
    assert_eq!(msg.in_sync, ["a", "b"], "named, so it knows it is in");
    assert!(msg.grants.iter().all(|g| g.worker != "b"), "but no lease");
    // Once it acknowledged the entry it missed, it is written into the set and granted leases.
    let effects = m.on_ack(t0 + HEARTBEAT, ack("b", seq, 3));
    assert_eq!(effects, [Effect::WriteInSync(vec!["a".into(), "b".into()])]);
    let effects = m.on_timer(t0 + HEARTBEAT * 2);
    assert!(published(&effects)[0]
        .grants
        .iter()
        .any(|g| g.worker == "b"));
}

/// The I/O loop stalls (ZooKeeper out of reach, the role to be confirmed) with a round's entry and heartbeats
/// published by the machine but not yet sent, and the members' acknowledgements unread. When it goes on, the
/// members are not dropped for the time the master stood still: they acknowledge what is then sent, and the write
/// is answered.
#[test]
fn a_stall_of_the_master_itself_is_not_counted_against_its_members() {
    let t0 = Instant::now();
    let (_d, mut m) = master(t0);
    admit(&mut m, t0, &["a", "b"]);
    let effects = m.on_commands(t0, vec![writes(1, &["x"])]).unwrap();
    let seq = entry_seqs(&effects)[0];

    // The entry goes out only after a stall of twice the ack timeout.
    let stall = ACK_TIMEOUT * 2;
    m.on_stalled(stall);
    let resumed = t0 + stall;
    let effects = m.on_timer(resumed);
    assert_eq!(m.members(), ["a", "b"], "nobody dropped: {effects:?}");
    assert!(replies(&effects).is_empty());

    // Their acknowledgements of the entry come in just after; the write is answered with both in the set.
    m.on_ack(resumed + ms(3), ack("a", seq, 2));
    let effects = m.on_ack(resumed + ms(4), ack("b", seq, 2));
    assert!(
        replies(&effects)
            .iter()
            .any(|(tag, r)| *tag == 1 && written(r)),
        "{effects:?}"
    );
    assert_eq!(m.members(), ["a", "b"]);

    // Idle now, another stall: the heartbeats published before it are not held against them either.
    let before = m.next_timer().max(resumed + ms(5));
    let effects = m.on_timer(before);
    assert_eq!(published(&effects).len(), 1, "a heartbeat");
    m.on_stalled(stall);
    let resumed = before + stall;
    m.on_timer(resumed);
    assert_eq!(m.members(), ["a", "b"]);

    // A member that still says nothing once the master acts again is dropped after the ack timeout as ever.
    let mut now = resumed;
    while now < resumed + ACK_TIMEOUT + HEARTBEAT * 2 && m.members().len() == 2 {
        now = m.next_timer();
        if !published(&m.on_timer(now)).is_empty() {
            m.on_ack(now, ack("a", m.seq(), 6));
        }
    }
    assert_eq!(m.members(), ["a"], "b, silent after the stall, dropped");
    assert!(
        now >= resumed + ACK_TIMEOUT,
        "given the whole ack timeout after the stall"
    );
}
