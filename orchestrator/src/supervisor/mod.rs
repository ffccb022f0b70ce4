//! The supervisor: the one task that owns the cluster's desired state (a master and `target` slaves) and
//! makes the cluster match it. Everything else sends it messages through a [`ClusterHandle`].
//!
//! It learns what happens from three sources: the runtime reports every worker process that ends (at once,
//! for a local process), the ZooKeeper view shows registrations, the master, the in-sync set and the election
//! candidates, and a tick drives retries and time limits. After each event it *reconciles*:
//! 1. a worker registered in ZooKeeper that it does not run is adopted if its process is alive (an earlier
//!    orchestrator started it), or else its stale znodes are removed;
//! 2. without a master, it leaves the in-sync slaves to elect one; only when none of them is alive (or none
//!    stands within [`STAND_GRACE`], or they have had [`ELECTION_GRACE`] and failed) does it restore a master
//!    itself: it starts a slave on every registered copy that has no worker, so that each reports how far its
//!    copy got, and restarts the worker of the furthest copy as master on it (see [`restore`]). It starts an
//!    empty master only when the registry holds no copy at all, so it never forks or drops data;
//! 3. it starts or retires slaves until there are `target` of them (a master failover leaves one short), each
//!    new one on the host [`place`] picks;
//! 4. once a healthy master holds everything, it has the runtime remove the copies of workers that are gone,
//!    and drops them from the registry.
//!
//! It never reads a worker's disk, which may be on another host: the registry of copies (`/<ns>/copies`, in
//! the view) says which copies exist and on which host, and each worker reports in its registration how far its
//! copy got.
//!
//! A worker that dies is forgotten in ZooKeeper at once (its znodes removed, see [`Registry::forget`]): the
//! worker lists stop showing it, and a dead master's election starts without waiting for its session to time
//! out. Slaves retired by scaling down are stopped on purpose and are not replaced.
//!
//! The runtime must see every worker of the namespace (true of local processes): a registered worker it
//! cannot find is taken for dead.
//!
//! One file per decision; where a decision is a pure function of the view, the supervisor's state and the
//! time, it is one, tested with plain values:
//! - this file: the task, its event loop and the order of reconciliation, starting a worker;
//! - [`adopt`]: adopting the workers that run already (after an orchestrator restart);
//! - [`restore`]: who can elect a master, when the supervisor must provide one itself, and from which copy;
//! - [`balance`]: starting and retiring slaves until there are `target` of them;
//! - [`place`]: the host for a new copy;
//! - [`heal`]: a worker gone (forgotten in ZooKeeper, replaced or not), holding starts back after failed ones,
//!   removing the copies of gone workers;
//! - [`crash`]: the crash APIs' choice of victim, and killing a worker on request.

mod adopt;
mod balance;
mod crash;
mod heal;
mod place;
mod restore;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use protocol::coord::CopyRecord;
use protocol::Role;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster::{new_worker_id, ClusterHandle, Msg, WorkerTemplate};
use crate::events::{Events, What, WorkerRef};
use crate::runtime::{Exited, WorkerProcess, WorkerRuntime};
use crate::view::{ClusterView, Registry};

use restore::{Electorate, Restoring};
pub use restore::{ELECTION_GRACE, RECORD_SETTLE, REPORT_WAIT, STAND_GRACE};

/// How often the supervisor looks again without being told anything: retries and the graces above run on
/// it, so they end at most this late.
const TICK: Duration = Duration::from_millis(500);

/// How long writing a copy's record to ZooKeeper may take before the start it precedes is given up (and
/// held back, like any failed start).
const RECORD_TIMEOUT: Duration = Duration::from_secs(5);

/// How many dead workers wait for a replacement at most: more die only in a crash loop, whose starts are held
/// back anyway; the oldest are then forgotten (for the events log only: replacing does not depend on it).
const DEPARTED_KEPT: usize = 16;

/// What the supervisor is given at start.
pub struct Settings {
    pub template: WorkerTemplate,
    pub initial_slaves: usize,
    pub self_healing: bool,
    /// Where replacements, crash API calls and restores are recorded.
    pub events: Events,
}

/// A worker that died (or was killed by a crash API) and whose place a new slave will take: the events log
/// pairs each slave started to bring the slaves back to the target with the oldest of these.
#[derive(Debug, Clone)]
struct Departed {
    role: Role,
    worker: WorkerRef,
    why: &'static str,
}

/// A worker the supervisor runs (started or adopted).
#[derive(Debug, Clone)]
struct Managed {
    pid: u32,
    /// Seen registered in ZooKeeper: it started properly. One that ends before that is a failed start.
    registered: bool,
}

/// Why a registered copy has no worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idle {
    /// Found at start: a worker of an earlier run. May be restarted as a slave on its own id.
    PreviousRun,
    /// Its worker died under this supervisor (or never started); replaced by a fresh worker, never restarted
    /// except to restore a master.
    Died,
}

/// How a worker left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gone {
    /// Killed by the supervisor (crash API, restoring a master, shutdown).
    Killed,
    /// Ended without being killed: a crash, or a retiring slave that stopped.
    Ended,
}

struct Supervisor {
    runtime: Arc<dyn WorkerRuntime>,
    registry: Registry,
    view: watch::Receiver<ClusterView>,
    template: WorkerTemplate,
    healing: bool,
    /// Set once the cluster first has a master. Until then the cluster is brought up (launched, or restored
    /// from its copies) even without self-healing.
    booted: bool,
    target: watch::Sender<usize>,
    workers: BTreeMap<String, Managed>,
    /// Slaves being removed by scaling down: their end is not a crash.
    retiring: BTreeSet<String>,
    /// A worker started to take the master role, until ZooKeeper shows a master (or it ends).
    pending_master: Option<String>,
    /// Dead workers whose znodes could not be removed yet, by id: retried every tick.
    unforgotten: BTreeMap<String, u32>,
    /// Registered copies without a running worker.
    idle: BTreeMap<String, Idle>,
    /// A master being restored from the copies, until it is started (or the restore is given up).
    restoring: Option<Restoring>,
    no_master_since: Option<Instant>,
    /// Starts are held back until then after failed starts.
    hold_until: Option<Instant>,
    failed_starts: u32,
    /// For messages to itself (a retirement's grace running out); weak, so the task still ends when every
    /// handle is gone.
    me: mpsc::WeakSender<Msg>,
    events: Events,
    /// Dead workers not replaced yet, oldest first (see [`Departed`]).
    departed: VecDeque<Departed>,
}

/// Adopts the running cluster (if any), then spawns the supervisor task. The target is the configured number
/// of slaves, or more if more are running: an orchestrator restart must not shrink the cluster.
pub async fn spawn(
    settings: Settings,
    runtime: Arc<dyn WorkerRuntime>,
    exits: mpsc::UnboundedReceiver<Exited>,
    view: watch::Receiver<ClusterView>,
    registry: Registry,
) -> anyhow::Result<(ClusterHandle, JoinHandle<()>)> {
    // Messages are small and handled quickly; a caller waits for room rather than fails.
    let (tx, rx) = mpsc::channel(64);
    let (target, target_rx) = watch::channel(settings.initial_slaves);
    let mut s = Supervisor {
        runtime: runtime.clone(),
        registry,
        view: view.clone(),
        template: settings.template,
        healing: settings.self_healing,
        booted: false,
        target,
        workers: BTreeMap::new(),
        retiring: BTreeSet::new(),
        pending_master: None,
        unforgotten: BTreeMap::new(),
        idle: BTreeMap::new(),
        restoring: None,
        no_master_since: None,
        hold_until: None,
        failed_starts: 0,
        me: tx.downgrade(),
        events: settings.events,
        departed: VecDeque::new(),
    };
    s.adopt_registered().await;
    let current = s.view.borrow().clone();
    let running_slaves = s.slaves(&current).len();
    if running_slaves > settings.initial_slaves {
        s.target.send_replace(running_slaves);
    }
    for id in current.copies.keys() {
        if !s.workers.contains_key(id) {
            s.idle.insert(id.clone(), Idle::PreviousRun);
        }
    }
    tracing::info!(
        adopted = ?s.workers.keys().collect::<Vec<_>>(),
        master = ?current.master.as_ref().map(|m| &m.id),
        copies_without_worker = ?s.idle.keys().collect::<Vec<_>>(),
        hosts = ?s.runtime.hosts(),
        target_slaves = *s.target.borrow(),
        self_healing = s.healing,
        "supervisor starting"
    );
    let task = tokio::spawn(s.run(rx, exits));
    Ok((ClusterHandle::new(tx, view, target_rx, runtime), task))
}

impl Supervisor {
    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Msg>,
        mut exits: mpsc::UnboundedReceiver<Exited>,
    ) {
        let mut changes = self.view.clone();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = inbox.recv() => match msg {
                    None => return,
                    Some(Msg::Shutdown { kill_workers, done }) => {
                        self.shut_down(kill_workers).await;
                        let _ = done.send(());
                        return;
                    }
                    Some(msg) => self.handle(msg).await,
                },
                Some(exit) = exits.recv() => self.on_gone(&exit.id, exit.pid, Gone::Ended).await,
                changed = changes.changed() => {
                    if changed.is_err() {
                        tracing::error!("the ZooKeeper view stopped; the supervisor stops");
                        return;
                    }
                }
                _ = tick.tick() => {}
            }
            self.reconcile().await;
        }
    }

    async fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::SetTarget(n) => {
                let old = self.target.send_replace(n);
                if old != n {
                    tracing::info!(from = old, to = n, "target number of slaves changed");
                }
            }
            Msg::AddSlave { done } => {
                self.target.send_modify(|t| *t += 1);
                let started = if let Some(id) = self.start_slave().await {
                    tracing::info!(
                        worker = %id,
                        target = *self.target.borrow(),
                        "slave added on request"
                    );
                    Ok(id)
                } else {
                    self.target.send_modify(|t| *t -= 1);
                    Err(anyhow::anyhow!("the slave could not be started"))
                };
                let _ = done.send(started);
            }
            Msg::Crash { role, done } => {
                let _ = done.send(self.crash(role).await);
            }
            Msg::Kill { id, done } => {
                let _ = done.send(self.kill(&id).await);
            }
            Msg::RetireDue { id, pid } => {
                let still_running = self.workers.get(&id).is_some_and(|w| w.pid == pid);
                if still_running && self.retiring.contains(&id) {
                    tracing::warn!(
                        worker = %id,
                        pid,
                        "retiring slave did not stop in time; killing it"
                    );
                    if let Err(e) = self.kill(&id).await {
                        tracing::error!(worker = %id, "killing a retiring slave: {e:#}");
                    }
                }
            }
            Msg::Shutdown { .. } => unreachable!("handled by the loop"),
        }
    }

    async fn reconcile(&mut self) {
        for (id, pid) in std::mem::take(&mut self.unforgotten) {
            self.forget(&id, pid).await;
        }
        self.adopt_registered().await;
        let view = self.view.borrow().clone();
        for (id, w) in &mut self.workers {
            w.registered |= view.workers.get(id).is_some_and(|r| r.pid == w.pid);
        }
        if let Some(master) = &view.master {
            self.booted = true;
            self.restoring = None;
            if let Some(pending) = self.pending_master.take() {
                if pending != master.id {
                    tracing::warn!(
                        started = %pending,
                        master = %master.id,
                        "another worker took the master role"
                    );
                }
            }
            if self.no_master_since.take().is_some() {
                tracing::info!(
                    master = %master.id,
                    pid = master.pid,
                    epoch = master.epoch,
                    "the cluster has a master"
                );
            }
            if !view.in_sync_members().is_empty() {
                self.failed_starts = 0;
            }
        } else if self.no_master_since.is_none() {
            self.no_master_since = Some(Instant::now());
            if self.healing && self.pending_master.is_none() {
                match self.electorate(&view) {
                    Electorate::Standing | Electorate::NotStanding => {
                        tracing::info!("no master: waiting for the in-sync slaves to elect one")
                    }
                    Electorate::Nobody if self.booted => {
                        tracing::warn!("no master and no in-sync slave alive to elect one")
                    }
                    Electorate::Nobody => tracing::info!("no master yet"),
                }
            }
        }
        let hands_off = !self.healing && self.booted;
        if hands_off || self.held() {
            return;
        }
        self.record_unknown_copies(&view).await;
        // A restore once begun goes on until it starts a master (or gives up): the slaves it starts on the last
        // in-sync set's copies make that set look alive, though none of them can be elected.
        if self.restoring.is_some() || self.needs_master(&view) {
            self.restore_master(&view).await;
            if self.held() || self.restoring.is_some() {
                return;
            }
        }
        self.balance_slaves(&view).await;
        self.remove_idle_copies(&view).await;
    }

    /// Starts a worker on its registered copy, on the host that holds it; false (and starts held back) when it
    /// could not be started.
    async fn start(&mut self, id: String, role: Role) -> bool {
        let reused = self.idle.remove(&id);
        let host = self.view.borrow().copies.get(&id).map(|c| c.host.clone());
        let started = match host {
            Some(host) => self
                .runtime
                .start(self.template.spec(&id, role, &host))
                .await
                .map(|p| (p, host)),
            None => Err(anyhow::anyhow!("the registry of copies holds no copy {id}")),
        };
        match started {
            Ok((WorkerProcess { id, pid }, host)) => {
                tracing::info!(
                    worker = %id,
                    pid,
                    ?role,
                    %host,
                    reused_copy = reused.is_some(),
                    "started a worker"
                );
                if role == Role::Master {
                    self.pending_master = Some(id.clone());
                }
                self.workers.insert(
                    id,
                    Managed {
                        pid,
                        registered: false,
                    },
                );
                true
            }
            Err(e) => {
                tracing::error!(worker = %id, ?role, "starting a worker: {e:#}");
                self.idle.insert(id, reused.unwrap_or(Idle::Died));
                self.hold();
                false
            }
        }
    }

    /// Starts a worker on a new copy on `host`: the copy is recorded in the registry first, so that no copy
    /// exists that a later orchestrator would not find. `None` (and starts held back) when it could not be.
    async fn start_new(&mut self, role: Role, host: String) -> Option<String> {
        let id = new_worker_id();
        let record = CopyRecord { host };
        let recorded =
            tokio::time::timeout(RECORD_TIMEOUT, self.registry.record_copy(&id, record)).await;
        match recorded {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(worker = %id, "recording a new copy: {e:#}; not starting it");
                self.hold();
                return None;
            }
            Err(_) => {
                tracing::error!(worker = %id, "recording a new copy timed out; not starting it");
                self.hold();
                return None;
            }
        }
        self.start(id.clone(), role).await.then_some(id)
    }

    /// The host for a new copy (see [`place`]).
    fn place(&self, view: &ClusterView) -> Option<String> {
        let hosts = self.runtime.hosts();
        place::place(&hosts, &view.copies, |id| self.workers.contains_key(id)).map(str::to_owned)
    }

    /// Records the copies of workers run here that the registry does not hold: adopted from an orchestrator
    /// that kept no registry, whose runtime had one host, where they are recorded.
    async fn record_unknown_copies(&mut self, view: &ClusterView) {
        let unknown: Vec<String> = self
            .workers
            .keys()
            .filter(|id| !view.copies.contains_key(*id))
            .cloned()
            .collect();
        let Some(host) = self.runtime.hosts().into_iter().next() else {
            return;
        };
        for id in unknown {
            let record = CopyRecord { host: host.clone() };
            match tokio::time::timeout(RECORD_TIMEOUT, self.registry.record_copy(&id, record)).await
            {
                Ok(Ok(())) => tracing::warn!(
                    worker = %id,
                    %host,
                    "a running worker's copy was not in the registry of copies: recorded"
                ),
                Ok(Err(e)) => tracing::warn!(worker = %id, "recording a copy: {e:#}; will retry"),
                Err(_) => tracing::warn!(worker = %id, "recording a copy timed out; will retry"),
            }
        }
    }

    /// Notes a worker gone for good, whose place the next slave started for the target takes.
    fn departed(&mut self, role: Role, id: &str, pid: u32, why: &'static str) {
        if self.departed.len() == DEPARTED_KEPT {
            self.departed.pop_front();
        }
        self.departed.push_back(Departed {
            role,
            worker: WorkerRef {
                id: id.to_owned(),
                pid,
            },
            why,
        });
    }

    /// Records that slave `id`, just started to bring the slaves back to the target, replaces the oldest worker
    /// gone (none: it is a scale-up, recorded as the scaling decision).
    fn replaced(&mut self, id: &str) {
        let Some(gone) = self.departed.pop_front() else {
            return;
        };
        let pid = self.workers.get(id).map_or(0, |w| w.pid);
        let role = crate::events::role_label(gone.role);
        let reason = format!(
            "{role} {} (pid {}) {}: slave {id} (pid {pid}) started in its place",
            gone.worker.id, gone.worker.pid, gone.why
        );
        self.events.record(
            What::Replacement {
                role: gone.role,
                died: gone.worker,
                replaced_by: WorkerRef {
                    id: id.to_owned(),
                    pid,
                },
            },
            reason,
        );
    }

    async fn is_running_anywhere(&self, id: &str) -> bool {
        match self.runtime.is_running_anywhere(id).await {
            Ok(running) => running,
            Err(e) => {
                // When in doubt, the copy is in use: starting on it or removing it is what must not happen.
                tracing::warn!(worker = %id, "checking whether the worker runs: {e:#}");
                true
            }
        }
    }

    async fn shut_down(&mut self, kill_workers: bool) {
        if !kill_workers {
            tracing::info!(
                workers = ?self.workers.keys().collect::<Vec<_>>(),
                "supervisor stopping; the workers keep running"
            );
            return;
        }
        let running: Vec<(String, u32)> = self
            .workers
            .iter()
            .map(|(id, w)| (id.clone(), w.pid))
            .collect();
        tracing::info!(workers = ?running, "supervisor stopping the workers");
        for (id, pid) in running {
            match self.runtime.kill(&id).await {
                Ok(_) => self.on_gone(&id, pid, Gone::Killed).await,
                Err(e) => tracing::error!(worker = %id, "stopping a worker: {e:#}"),
            }
        }
    }
}

#[cfg(test)]
mod fixtures {
    use protocol::coord::{InSyncSet, MasterRecord, WorkerRecord};

    use super::*;

    /// A view with `master` (which must be among `workers`), registered `workers` by (id, pid), the in-sync set
    /// written by that master, and the election's candidates.
    pub fn view(
        master: Option<&str>,
        workers: &[(&str, u32)],
        in_sync: &[&str],
        candidates: &[&str],
    ) -> ClusterView {
        let pid_of = |id: &str| {
            workers
                .iter()
                .find(|(w, _)| *w == id)
                .map_or(0, |(_, p)| *p)
        };
        ClusterView {
            master: master.map(|id| MasterRecord {
                id: id.to_owned(),
                pid: pid_of(id),
                epoch: 1,
            }),
            in_sync: Some(InSyncSet {
                epoch: 1,
                master: master.unwrap_or("gone").to_owned(),
                members: in_sync.iter().map(|m| (*m).to_owned()).collect(),
            }),
            workers: workers
                .iter()
                .map(|(id, pid)| {
                    let record = WorkerRecord {
                        id: (*id).to_owned(),
                        pid: *pid,
                        role: if Some(*id) == master {
                            Role::Master
                        } else {
                            Role::Slave
                        },
                        epoch: 1,
                        applied_seq: 0,
                    };
                    ((*id).to_owned(), record)
                })
                .collect(),
            candidates: candidates.iter().map(|c| (*c).to_owned()).collect(),
            copies: BTreeMap::new(),
        }
    }

    /// Workers the supervisor runs, by (id, pid), all registered.
    pub fn managed(workers: &[(&str, u32)]) -> BTreeMap<String, Managed> {
        workers
            .iter()
            .map(|(id, pid)| {
                let managed = Managed {
                    pid: *pid,
                    registered: true,
                };
                ((*id).to_owned(), managed)
            })
            .collect()
    }
}
