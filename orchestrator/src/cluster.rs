//! Control of the worker cluster: starting and killing workers, and reading what ZooKeeper says about them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use protocol::{Role, WorkerInfo};
use tokio::sync::watch;

use crate::runtime::{WorkerProcess, WorkerRuntime, WorkerSpec};
use crate::view::ClusterView;

/// A cheap, cloneable handle on the cluster. The workers themselves are owned by the runtime, and what they
/// say about themselves comes from the ZooKeeper view.
#[derive(Clone)]
pub struct ClusterHandle {
    runtime: Arc<dyn WorkerRuntime>,
    view: watch::Receiver<ClusterView>,
    template: WorkerTemplate,
}

/// What every worker of this cluster shares.
#[derive(Debug, Clone)]
pub struct WorkerTemplate {
    /// Worker `id` keeps its database in `<data_dir>/workers/<id>`.
    pub data_dir: PathBuf,
    pub amqp_url: String,
    pub zk: String,
    pub namespace: String,
}

impl ClusterHandle {
    pub fn new(
        runtime: Arc<dyn WorkerRuntime>,
        view: watch::Receiver<ClusterView>,
        template: WorkerTemplate,
    ) -> Self {
        Self {
            runtime,
            view,
            template,
        }
    }

    /// Starts a worker that takes the master role; returns its id.
    pub async fn start_master(&self) -> anyhow::Result<String> {
        self.start(Role::Master).await
    }

    /// Starts a slave (it catches up and joins the in-sync set by itself); returns its id.
    pub async fn start_slave(&self) -> anyhow::Result<String> {
        self.start(Role::Slave).await
    }

    async fn start(&self, role: Role) -> anyhow::Result<String> {
        let id = new_worker_id();
        let spec = WorkerSpec {
            id: id.clone(),
            role,
            data_dir: self.template.data_dir.join("workers").join(&id),
            amqp_url: self.template.amqp_url.clone(),
            zk: self.template.zk.clone(),
            namespace: self.template.namespace.clone(),
        };
        self.runtime.start(spec).await?;
        Ok(id)
    }

    /// The registered workers as `GET /api/v1/workers` shows them, by ascending pid.
    pub async fn workers(&self) -> anyhow::Result<Vec<WorkerInfo>> {
        Ok(self.view.borrow().worker_infos())
    }

    /// SIGKILLs a worker this orchestrator started. `Ok(false)` when it is not alive (or not ours).
    pub async fn kill_worker(&self, id: &str) -> anyhow::Result<bool> {
        self.runtime.kill(id).await
    }

    /// The live workers this orchestrator started, by ascending pid.
    pub async fn processes(&self) -> anyhow::Result<Vec<WorkerProcess>> {
        self.runtime.list().await
    }

    /// Kills every worker this orchestrator started.
    pub async fn kill_all(&self) -> anyhow::Result<()> {
        for worker in self.runtime.list().await? {
            self.runtime.kill(&worker.id).await?;
        }
        Ok(())
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

/// `w-` and 8 random hex digits: short enough for logs, random enough never to meet an old worker's znode or
/// sync queue.
fn new_worker_id() -> String {
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
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }
}
