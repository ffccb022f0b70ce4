//! The [`ClusterHandle`]: what the rest of the orchestrator (the HTTP API, the scaling policy, tests) holds to
//! look at the cluster and to ask the supervisor for changes.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use protocol::{Role, WorkerInfo};
use tokio::sync::{mpsc, oneshot, watch};

use crate::runtime::{WorkerProcess, WorkerRuntime, WorkerSpec};
use crate::view::ClusterView;

/// A cheap, cloneable handle on the cluster. The supervisor owns the workers and the desired state; what the
/// workers say about themselves comes from the ZooKeeper view.
#[derive(Clone)]
pub struct ClusterHandle {
    supervisor: mpsc::Sender<Msg>,
    view: watch::Receiver<ClusterView>,
    target: watch::Receiver<usize>,
    runtime: Arc<dyn WorkerRuntime>,
}

/// What the supervisor is asked to do.
pub(crate) enum Msg {
    SetTarget(usize),
    AddSlave {
        done: oneshot::Sender<anyhow::Result<String>>,
    },
    Crash {
        role: Role,
        done: oneshot::Sender<anyhow::Result<Option<u32>>>,
    },
    Kill {
        id: String,
        done: oneshot::Sender<anyhow::Result<bool>>,
    },
    /// A retiring slave's grace is over: kill it if it still runs.
    RetireDue {
        id: String,
        pid: u32,
    },
    Shutdown {
        kill_workers: bool,
        done: oneshot::Sender<()>,
    },
}

/// What every worker of this cluster shares. Where a worker keeps its copy is its host's business (the
/// runtime's).
#[derive(Debug, Clone)]
pub struct WorkerTemplate {
    pub amqp_url: String,
    pub zk: String,
    pub namespace: String,
}

impl WorkerTemplate {
    /// Worker `id` in `role` on `host`.
    pub fn spec(&self, id: &str, role: Role, host: &str) -> WorkerSpec {
        WorkerSpec {
            id: id.to_owned(),
            role,
            host: host.to_owned(),
            amqp_url: self.amqp_url.clone(),
            zk: self.zk.clone(),
            namespace: self.namespace.clone(),
        }
    }
}

/// The crash APIs, as the HTTP layer sees them (a trait, so handlers are tested without a cluster).
pub trait Control: Send + Sync + 'static {
    /// SIGKILLs the master, or the slave with the highest pid, and returns its pid once it is gone and
    /// forgotten by ZooKeeper; `Ok(None)` when there is no such worker.
    fn crash(&self, role: Role) -> BoxFuture<'_, anyhow::Result<Option<u32>>>;

    /// The number of slaves the cluster is kept at.
    fn target_slaves(&self) -> usize;
}

impl ClusterHandle {
    pub(crate) fn new(
        supervisor: mpsc::Sender<Msg>,
        view: watch::Receiver<ClusterView>,
        target: watch::Receiver<usize>,
        runtime: Arc<dyn WorkerRuntime>,
    ) -> Self {
        Self {
            supervisor,
            view,
            target,
            runtime,
        }
    }

    async fn ask<T>(&self, msg: impl FnOnce(oneshot::Sender<T>) -> Msg) -> anyhow::Result<T> {
        let (done, answer) = oneshot::channel();
        self.supervisor
            .send(msg(done))
            .await
            .map_err(|_| anyhow::anyhow!("the supervisor has stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the supervisor has stopped"))
    }

    /// Sets how many slaves the supervisor keeps. Slaves removed to get there are stopped on purpose, not
    /// treated as crashes.
    pub async fn set_target_slaves(&self, n: usize) -> anyhow::Result<()> {
        self.supervisor
            .send(Msg::SetTarget(n))
            .await
            .map_err(|_| anyhow::anyhow!("the supervisor has stopped"))
    }

    /// Starts one more slave now and keeps it: the target grows by one, even when self-healing is off. Returns
    /// its id; it catches up and joins the in-sync set by itself.
    pub async fn add_slave(&self) -> anyhow::Result<String> {
        self.ask(|done| Msg::AddSlave { done }).await?
    }

    /// The number of slaves the supervisor keeps.
    pub fn target_slaves(&self) -> usize {
        *self.target.borrow()
    }

    /// The number of slaves the supervisor keeps, as a channel that tells of each change.
    pub fn watch_target(&self) -> watch::Receiver<usize> {
        self.target.clone()
    }

    /// SIGKILLs the master (`Role::Master`) or the slave with the highest pid, as the crash APIs do.
    pub async fn crash(&self, role: Role) -> anyhow::Result<Option<u32>> {
        self.ask(|done| Msg::Crash { role, done }).await?
    }

    /// SIGKILLs worker `id` and waits until it is gone; the supervisor replaces it as after any crash.
    /// `Ok(false)` when it is not running.
    pub async fn kill_worker(&self, id: &str) -> anyhow::Result<bool> {
        let id = id.to_owned();
        self.ask(|done| Msg::Kill { id, done }).await?
    }

    /// Stops the supervisor, and kills the workers if asked; otherwise they keep running. Done already is
    /// fine.
    pub async fn shutdown(&self, kill_workers: bool) {
        let (done, answer) = oneshot::channel();
        if self
            .supervisor
            .send(Msg::Shutdown { kill_workers, done })
            .await
            .is_ok()
        {
            // Dropped unanswered only if the supervisor ended meanwhile: stopped either way.
            let _ = answer.await;
        }
    }

    /// The registered workers as `GET /api/v1/workers` shows them, by ascending pid.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.view.borrow().worker_infos()
    }

    /// The live worker processes the supervisor runs (started or adopted), by ascending pid.
    pub async fn processes(&self) -> anyhow::Result<Vec<WorkerProcess>> {
        self.runtime.list().await
    }

    /// The current view of ZooKeeper.
    pub fn view(&self) -> ClusterView {
        self.view.borrow().clone()
    }

    /// Waits until the view satisfies `condition`, for at most `timeout`; returns the view that did. For tests
    /// and start-up logic that must wait for the cluster without sleeping.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        condition: impl FnMut(&ClusterView) -> bool,
    ) -> anyhow::Result<ClusterView> {
        let mut view = self.view.clone();
        let reached = tokio::time::timeout(timeout, async {
            view.wait_for(condition).await.map(|v| v.clone())
        })
        .await;
        match reached {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => anyhow::bail!("the ZooKeeper view task has stopped"),
            Err(_) => anyhow::bail!(
                "the cluster did not reach the expected state within {timeout:?}; last view: {:?}",
                *self.view.borrow()
            ),
        }
    }
}

impl Control for ClusterHandle {
    fn crash(&self, role: Role) -> BoxFuture<'_, anyhow::Result<Option<u32>>> {
        Box::pin(ClusterHandle::crash(self, role))
    }

    fn target_slaves(&self) -> usize {
        ClusterHandle::target_slaves(self)
    }
}

/// `w-` and 8 random hex digits: short enough for logs, random enough never to meet an old worker's znode or
/// sync queue.
pub fn new_worker_id() -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("w-{}", &hex[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_ids_are_fresh_and_valid_for_names() {
        let a = new_worker_id();
        let b = new_worker_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 10);
        assert!(protocol::names::is_valid_name(&a));
    }

    #[test]
    fn a_worker_is_started_on_the_host_given() {
        let t = WorkerTemplate {
            amqp_url: "amqp://x".into(),
            zk: "zk:1".into(),
            namespace: "ns".into(),
        };
        let spec = t.spec("w-1", Role::Slave, "b");
        assert_eq!(spec.host, "b");
        assert_eq!(spec.role, Role::Slave);
        assert_eq!(spec.namespace, "ns");
    }
}
