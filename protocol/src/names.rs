//! Names of queues, exchanges and znodes.
//!
//! Everything hangs off one namespace (default `rideshare`), so that tests can run many clusters side by side
//! on one RabbitMQ and one ZooKeeper without seeing each other's messages or workers.

/// The namespace every name is derived from.
pub const DEFAULT_NAMESPACE: &str = "rideshare";

/// Whether `s` may be a namespace or a worker id: both become parts of queue names and znode names, so only
/// `[A-Za-z0-9_-]`, and at least one character.
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    namespace: String,
}

impl Default for Names {
    fn default() -> Self {
        Self::new(DEFAULT_NAMESPACE)
    }
}

impl Names {
    /// A namespace is used as a queue-name prefix and a znode name, so only `[A-Za-z0-9_-]` is allowed.
    pub fn new(namespace: &str) -> Self {
        assert!(
            is_valid_name(namespace),
            "namespace must be non-empty [A-Za-z0-9_-]: {namespace:?}"
        );
        Self {
            namespace: namespace.to_owned(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Durable queue of commands for the master (writes, clear, snapshot and join requests).
    pub fn write_queue(&self) -> String {
        format!("{}.writeQ", self.namespace)
    }

    /// Durable queue of reads, consumed round-robin by the in-sync slaves.
    pub fn read_queue(&self) -> String {
        format!("{}.readQ", self.namespace)
    }

    /// Fanout exchange the master publishes log entries and heartbeats on; every slave binds its own queue.
    pub fn sync_exchange(&self) -> String {
        format!("{}.syncQ", self.namespace)
    }

    /// The queue one slave binds to the sync exchange.
    pub fn sync_queue(&self, worker_id: &str) -> String {
        format!("{}.syncQ.{}", self.namespace, worker_id)
    }

    /// Root znode of this cluster.
    pub fn zk_root(&self) -> String {
        format!("/{}", self.namespace)
    }

    /// Parent of the workers' ephemeral registration znodes.
    pub fn zk_workers(&self) -> String {
        format!("/{}/workers", self.namespace)
    }

    pub fn zk_worker(&self, worker_id: &str) -> String {
        format!("/{}/workers/{}", self.namespace, worker_id)
    }

    /// Parent of the registry of copies: one persistent znode per copy of the database, written by the
    /// orchestrator (see [`crate::coord::CopyRecord`]).
    pub fn zk_copies(&self) -> String {
        format!("/{}/copies", self.namespace)
    }

    pub fn zk_copy(&self, worker_id: &str) -> String {
        format!("/{}/copies/{}", self.namespace, worker_id)
    }

    /// Parent of the host pids handed to workers that cannot see theirs (a Swarm task's container, on another
    /// node than the orchestrator's files): one persistent znode per worker id, written by the orchestrator
    /// once the container runs, read by the worker before it registers.
    pub fn zk_host_pids(&self) -> String {
        format!("/{}/host-pids", self.namespace)
    }

    pub fn zk_host_pid(&self, worker_id: &str) -> String {
        format!("/{}/host-pids/{}", self.namespace, worker_id)
    }

    /// Ephemeral znode held by the current master; its existence is the master's lease on the role.
    pub fn zk_master(&self) -> String {
        format!("/{}/master", self.namespace)
    }

    /// Persistent znode holding the current epoch; bumped with a versioned set by every new master.
    pub fn zk_epoch(&self) -> String {
        format!("/{}/epoch", self.namespace)
    }

    /// Parent of the election candidates: one ephemeral znode per in-sync slave, named so that the names sort
    /// by pid (see [`Names::zk_candidate`]).
    pub fn zk_election(&self) -> String {
        format!("/{}/election", self.namespace)
    }

    /// A candidate's znode: the pid zero-padded to ten digits, so that names sort by pid, then the worker id.
    pub fn zk_candidate(&self, pid: u32, worker_id: &str) -> String {
        format!("/{}/election/{pid:010}-{worker_id}", self.namespace)
    }

    /// Persistent znode holding the in-sync set, written by the master with versioned sets.
    pub fn zk_in_sync(&self) -> String {
        format!("/{}/insync", self.namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_by_the_namespace() {
        let n = Names::new("t1");
        assert_eq!(n.write_queue(), "t1.writeQ");
        assert_eq!(n.sync_queue("w3"), "t1.syncQ.w3");
        assert_eq!(n.zk_worker("w3"), "/t1/workers/w3");
        assert_eq!(n.zk_copy("w3"), "/t1/copies/w3");
        assert_eq!(n.zk_host_pid("w3"), "/t1/host-pids/w3");
        assert!(n.zk_candidate(99, "b") < n.zk_candidate(100, "a"));
    }

    #[test]
    #[should_panic]
    fn a_namespace_with_a_slash_is_refused() {
        Names::new("a/b");
    }
}
