//! Messages on RabbitMQ. Every body is JSON; binary payloads (changesets, snapshots) travel as base64 strings.
//!
//! RPCs (a command on `writeQ`, a read on `readQ`) carry `reply_to` and `correlation_id` properties; the reply
//! is published to `reply_to` with the same correlation id.

use serde::{Deserialize, Serialize};

use crate::http::{ReadRequest, ReadResponse, Statement, WriteResponse};

/// A command on `writeQ`, taken by the master alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Writes gathered by the orchestrator into one message, each its own transaction with its own idempotency
    /// key and its own answer (in a [`CommandReply::Batch`], in order). A second write with a key already
    /// applied is answered with the first one's result and applies nothing. Fewer, larger messages are what
    /// lets the broker keep up under load; a lone write is a batch of one.
    Writes { writes: Vec<KeyedWrite> },
    /// Delete every row of every table.
    Clear { key: String },
    /// A catching-up slave asks for a copy of the database at a known sequence number.
    Snapshot { worker: String },
    /// A slave that has applied everything up to `applied_seq` asks to join the in-sync set. `anchor` names this
    /// request as the moment its first read lease may be anchored at (see [`LeaseAnchor`]).
    Join {
        worker: String,
        applied_seq: u64,
        anchor: LeaseAnchor,
    },
    /// A slave that is being retired has stopped serving reads, finished the ones it had, and asks to leave the
    /// in-sync set at once (no lease to wait out: it has given it up).
    Leave { worker: String },
}

/// One write of a [`Command::Writes`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyedWrite {
    pub key: String,
    pub statements: Vec<Statement>,
}

/// The reply to a [`Command`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CommandReply {
    Written(WriteResponse),
    /// The write was refused by SQLite (syntax, constraint, …) and nothing of it was applied. A `400`.
    Rejected {
        error: String,
    },
    /// The write could not be replicated to enough slaves in time, or this worker is not the master. A `503`:
    /// retrying with the same key is safe.
    Unavailable {
        error: String,
    },
    Snapshot(Snapshot),
    /// The slave is in the in-sync set. `seq`: where the master stood when it let it in (the slave neither
    /// stands nor serves before it has applied that far); every message of this master numbered after `serial`
    /// names it for as long as it stays in the set.
    Joined {
        epoch: u64,
        seq: u64,
        #[serde(default)]
        serial: u64,
    },
    /// The slave has left the in-sync set.
    Left,
    /// The answers to a [`Command::Writes`], in its order.
    Batch {
        replies: Vec<CommandReply>,
    },
}

/// A consistent copy of the master's database file, taken between two log entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The master's epoch when it took the snapshot.
    pub epoch: u64,
    /// The last log entry the snapshot contains; the slave applies entries after it.
    pub seq: u64,
    #[serde(with = "base64_bytes")]
    pub database: Vec<u8>,
}

/// The effect of one replicated transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Payload {
    /// A SQLite session changeset: the row changes, applied as they are.
    Changeset {
        #[serde(with = "base64_bytes")]
        bytes: Vec<u8>,
        /// The master's `sqlite_sequence` rows (AUTOINCREMENT counters) after the transaction. Changesets do not
        /// carry that table (it has no primary key), and a row inserted then deleted in one transaction moves
        /// the counter without leaving a row change: ids must never be reused after a failover.
        #[serde(default)]
        sequences: Vec<(String, i64)>,
    },
    /// Statements re-executed in order in one transaction: used for writes that change the schema, which
    /// changesets cannot carry.
    Statements { statements: Vec<Statement> },
}

/// One entry of the replication log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub epoch: u64,
    pub seq: u64,
    pub payload: Payload,
}

/// What the master publishes on the `syncQ` fanout exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncMessage {
    pub kind: SyncKind,
    /// Numbers this master's messages, from 1 at the start of its epoch: a slave that joined after message
    /// `serial` and is not named by a later one has been dropped from the set.
    #[serde(default)]
    pub serial: u64,
    /// The seq this master's epoch started from (what it had applied when it took the role). A slave meeting
    /// a new epoch keeps its copy only if it stands exactly there: a slave ahead holds entries the new master
    /// never had, a slave behind cannot get the missing ones from a master that keeps no log; both resync.
    pub epoch_start: u64,
    /// The last seq of this master's log that every slave of the in-sync set holds (and at least the minimum
    /// number of them): it will survive any failover. A slave shows a read only data up to here, never an entry
    /// that a failover could still take back.
    #[serde(default)]
    pub committed: u64,
    /// The slaves in the in-sync set when this was sent.
    pub in_sync: Vec<String>,
    /// A read lease for each in-sync slave the master has heard from: the last anchor it received from that
    /// slave. No time crosses the wire: the slave holds the lease for the lease duration from the moment *it*
    /// sent that anchor, measured on its own monotonic clock (see `worker::lease`). A message that sat in a
    /// queue therefore grants nothing fresher than the acknowledgement it answers.
    pub grants: Vec<LeaseGrant>,
    /// How long each grant lasts from its anchor, on the slave's clock: a duration, never an instant. The
    /// master's own count of the leases it granted uses the same figure, so the two cannot be configured apart.
    pub lease_ms: u64,
}

/// A read lease handed to one slave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    pub worker: String,
    pub anchor: LeaseAnchor,
}

/// Names one message a slave sent to the master (an acknowledgement or a join request). The slave remembers
/// when it sent each anchor, on its own clock; a grant echoing the anchor is therefore known to have been made
/// after that moment, which is what the lease is measured from (Gray and Cheriton's leases, with no clock
/// shared between hosts). `session` is drawn at random by each slave run, so that an anchor of an earlier run
/// under the same worker id is never taken for one of this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseAnchor {
    pub session: u64,
    pub n: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SyncKind {
    Entry(LogEntry),
    /// Sent when the master is idle, so that leases are renewed and a slave sees the last sequence number.
    Heartbeat {
        epoch: u64,
        seq: u64,
    },
}

/// A slave's answer to a [`SyncMessage`]: it has applied everything up to `seq` (a heartbeat is acknowledged
/// with the slave's applied seq).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncAck {
    pub worker: String,
    pub epoch: u64,
    pub seq: u64,
    /// The anchor a lease granted in answer to this acknowledgement is measured from.
    pub anchor: LeaseAnchor,
}

/// How far a copy of the database is, as reads compare it: the epoch of the master the slave follows, then the
/// seq of the last entry applied. Ordered by epoch first: once a slave follows a newer master, entries of the old
/// one that it never got were never acknowledged, and waiting for them would wait forever.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ReadPosition {
    pub epoch: u64,
    pub seq: u64,
}

/// What `readQ` carries: reads gathered by the orchestrator, run together by one slave, answered together
/// by a [`ReadBatchReply`] in the same order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadBatch {
    pub reads: Vec<ReadRequest>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadBatchReply {
    pub replies: Vec<ReadReply>,
    /// The position of the data the reads saw: committed by the master, so no failover takes it back.
    #[serde(default)]
    pub position: ReadPosition,
}

/// The reply to a read. Externally tagged (`{"rows": {...}}`), unlike the other messages: serde decodes an
/// internally tagged enum by buffering the whole value first, which for rows was 9 % of the orchestrator's CPU
/// under read load (bench/profile.sh).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadReply {
    Rows(ReadResponse),
    /// SQL error, or a statement that would write. A `400`.
    Rejected {
        error: String,
    },
}

mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_entry_round_trips_through_json() {
        let msg = SyncMessage {
            kind: SyncKind::Entry(LogEntry {
                epoch: 2,
                seq: 9,
                payload: Payload::Changeset {
                    bytes: vec![0, 1, 255],
                    sequences: vec![("rides".into(), 7)],
                },
            }),
            serial: 2,
            epoch_start: 3,
            committed: 8,
            in_sync: vec!["w1".into()],
            grants: vec![LeaseGrant {
                worker: "w1".into(),
                anchor: LeaseAnchor { session: 5, n: 8 },
            }],
            lease_ms: 1500,
        };
        let json = serde_json::to_vec(&msg).unwrap();
        assert_eq!(serde_json::from_slice::<SyncMessage>(&json).unwrap(), msg);
    }

    #[test]
    fn a_command_round_trips_through_json() {
        let cmd = Command::Writes {
            writes: vec![KeyedWrite {
                key: "k".into(),
                statements: vec![Statement::new("select ?", vec![crate::Value::Integer(1)])],
            }],
        };
        let json = serde_json::to_vec(&cmd).unwrap();
        assert_eq!(serde_json::from_slice::<Command>(&json).unwrap(), cmd);
    }
}
