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
    /// Run `statements` as one transaction. `key` is the idempotency key: a second write with the same key is
    /// answered with the first one's result and applies nothing.
    Write {
        key: String,
        statements: Vec<Statement>,
    },
    /// Several writes gathered by the orchestrator into one message, each its own transaction with its own
    /// key and its own answer (in a [`CommandReply::Batch`], in order). Fewer, larger messages are what lets
    /// the broker keep up under load.
    Writes { writes: Vec<KeyedWrite> },
    /// Delete every row of every table.
    Clear { key: String },
    /// A catching-up slave asks for a copy of the database at a known sequence number.
    Snapshot { worker: String },
    /// A slave that has applied everything up to `applied_seq` asks to join the in-sync set.
    Join { worker: String, applied_seq: u64 },
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
    /// The slave is in the in-sync set from `seq` on, and may serve reads while its lease holds.
    Joined {
        epoch: u64,
        seq: u64,
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
    /// The seq this master's epoch started from (what it had applied when it took the role). A slave meeting
    /// a new epoch keeps its copy only if it stands exactly there: a slave ahead holds entries the new master
    /// never had, a slave behind cannot get the missing ones from a master that keeps no log; both resync.
    pub epoch_start: u64,
    /// The slaves in the in-sync set when this was sent.
    pub in_sync: Vec<String>,
    /// Read lease of those slaves: they may serve reads until this time (Unix milliseconds). An absolute time,
    /// so that a message the broker delays cannot stretch a lease the master has already given up on; it
    /// assumes the hosts' clocks agree to within the lease margin (one host: exactly).
    pub lease_until_ms: u64,
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
    /// The slave reads only once it stands at least here: the furthest position any read answered so far has
    /// shown, so that no read sees less than an earlier one did (reads never go back in time).
    #[serde(default)]
    pub at_least: ReadPosition,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadBatchReply {
    pub replies: Vec<ReadReply>,
    /// The position of the data the reads saw (an upper bound: never less than what they saw).
    #[serde(default)]
    pub position: ReadPosition,
}

/// The reply to a read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
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
            epoch_start: 3,
            in_sync: vec!["w1".into()],
            lease_until_ms: 1,
        };
        let json = serde_json::to_vec(&msg).unwrap();
        assert_eq!(serde_json::from_slice::<SyncMessage>(&json).unwrap(), msg);
    }

    #[test]
    fn a_command_round_trips_through_json() {
        let cmd = Command::Write {
            key: "k".into(),
            statements: vec![Statement::new("select ?", vec![crate::Value::Integer(1)])],
        };
        let json = serde_json::to_vec(&cmd).unwrap();
        assert_eq!(serde_json::from_slice::<Command>(&json).unwrap(), cmd);
    }
}
