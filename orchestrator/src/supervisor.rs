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
//!    itself, from the copy of the database that got furthest ([`Folders`]), restarting that worker on its
//!    own folder. It starts an empty master only when no copy exists at all, so it never forks or drops data;
//! 3. it starts or retires slaves until there are `target` of them (a master failover leaves one short);
//! 4. once a healthy master holds everything, it removes the folders of workers that are gone.
//!
//! A worker that dies is forgotten in ZooKeeper at once (its znodes removed, see [`Registry::forget`]): the
//! worker lists stop showing it, and a dead master's election starts without waiting for its session to time
//! out. Slaves retired by scaling down are stopped on purpose and are not replaced.
//!
//! The runtime must see every worker of the namespace (true of local processes): a registered worker it
//! cannot find is taken for dead.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use protocol::Role;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster::{new_worker_id, ClusterHandle, Msg, WorkerTemplate};
use crate::folders::{Folders, Position};
use crate::runtime::{Exited, WorkerProcess, WorkerRuntime};
use crate::view::{ClusterView, Registry};

/// How long the in-sync slaves get to elect a master before the supervisor restores one itself. An election
/// after a death the supervisor saw takes well under a second (it removes the master znode at once); after a
/// death it did not see, a ZooKeeper session timeout (4 s) comes first. 10 s leaves a slow election its
/// chance while bounding how long a stuck one keeps the cluster without a master.
pub const ELECTION_GRACE: Duration = Duration::from_secs(10);

/// How long live in-sync slaves that do not stand as candidates get to do so before the supervisor restores
/// a master itself. A slave stands just after it applied a message naming it in sync, so a master that dies
/// right after acknowledging a write may leave its slaves a few milliseconds short of standing; a second
/// covers that many times over, and one that has not stood by then never will.
pub const STAND_GRACE: Duration = Duration::from_secs(1);

/// How often the supervisor looks again without being told anything: retries and the graces above run on
/// it, so they end at most this late.
const TICK: Duration = Duration::from_millis(500);

/// After a failed start (a worker that ends before it registers in ZooKeeper, a master that ends before it
/// takes the role, or one that cannot be spawned) further starts are held back, from [`HOLD_MIN`] doubling
/// up to [`HOLD_MAX`], so a broken binary or folder cannot become a crash loop that eats the host. A worker
/// that died after it registered is a crash, replaced at once.
const HOLD_MIN: Duration = Duration::from_millis(500);
const HOLD_MAX: Duration = Duration::from_secs(30);

/// How long a retiring slave gets to stop after SIGTERM before it is killed.
const RETIRE_GRACE: Duration = Duration::from_secs(5);

/// How long removing a dead worker's znodes may take before it is left to a later tick.
const FORGET_TIMEOUT: Duration = Duration::from_secs(5);

/// What the supervisor is given at start.
pub struct Settings {
    pub template: WorkerTemplate,
    pub initial_slaves: usize,
    pub self_healing: bool,
}

/// A worker the supervisor runs (started or adopted).
#[derive(Debug, Clone)]
struct Managed {
    pid: u32,
    /// Seen registered in ZooKeeper: it started properly. One that ends before that is a failed start.
    registered: bool,
}

/// Why a folder has no worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idle {
    /// Found at start: a worker of an earlier run. May be restarted as a slave on its own id.
    PreviousRun,
    /// Its worker died under this supervisor; replaced by a fresh worker, never restarted (except to restore
    /// a master from it).
    Died,
}

/// Who can elect a master when there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Electorate {
    /// No live worker is in the last in-sync set: nobody can.
    Nobody,
    /// Live members of the set, none standing (yet).
    NotStanding,
    /// A live member stands: the election is under way.
    Standing,
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
    folders: Folders,
    healing: bool,
    /// Set once the cluster first has a master. Until then the cluster is brought up (launched, or restored
    /// from its folders) even without self-healing.
    booted: bool,
    target: watch::Sender<usize>,
    workers: BTreeMap<String, Managed>,
    /// Slaves being removed by scaling down: their end is not a crash.
    retiring: BTreeSet<String>,
    /// A worker started to take the master role, until ZooKeeper shows a master (or it ends).
    pending_master: Option<String>,
    /// Dead workers whose znodes could not be removed yet, by id: retried every tick.
    unforgotten: BTreeMap<String, u32>,
    /// Folders without a running worker.
    idle: BTreeMap<String, Idle>,
    no_master_since: Option<Instant>,
    /// Starts are held back until then after failed starts.
    hold_until: Option<Instant>,
    failed_starts: u32,
    /// For messages to itself (a retirement's grace running out); weak, so the task still ends when every
    /// handle is gone.
    me: mpsc::WeakSender<Msg>,
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
    let folders = Folders::new(&settings.template.data_dir);
    let mut s = Supervisor {
        runtime: runtime.clone(),
        registry,
        view: view.clone(),
        template: settings.template,
        folders,
        healing: settings.self_healing,
        booted: false,
        target,
        workers: BTreeMap::new(),
        retiring: BTreeSet::new(),
        pending_master: None,
        unforgotten: BTreeMap::new(),
        idle: BTreeMap::new(),
        no_master_since: None,
        hold_until: None,
        failed_starts: 0,
        me: tx.downgrade(),
    };
    s.adopt_registered().await;
    let current = s.view.borrow().clone();
    let running_slaves = s.slaves(&current).len();
    if running_slaves > settings.initial_slaves {
        s.target.send_replace(running_slaves);
    }
    for id in s.folders.ids()? {
        if !s.workers.contains_key(&id) {
            s.idle.insert(id, Idle::PreviousRun);
        }
    }
    tracing::info!(
        adopted = ?s.workers.keys().collect::<Vec<_>>(),
        master = ?current.master.as_ref().map(|m| &m.id),
        folders_without_worker = ?s.idle.keys().collect::<Vec<_>>(),
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
                let id = self.reusable_folder().await.unwrap_or_else(new_worker_id);
                let started = if self.start(id.clone(), Role::Slave).await {
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

    /// Kills the master or the slave with the highest pid, for the crash APIs. `Ok(None)`: there is none.
    async fn crash(&mut self, role: Role) -> anyhow::Result<Option<u32>> {
        loop {
            let view = self.view.borrow().clone();
            let victim = match role {
                Role::Master => view.master.as_ref().map(|m| {
                    let pid = view.workers.get(&m.id).map_or(m.pid, |w| w.pid);
                    (m.id.clone(), pid)
                }),
                Role::Slave => view
                    .workers
                    .values()
                    .filter(|w| view.role_of(w) == Role::Slave && !self.retiring.contains(&w.id))
                    .map(|w| (w.id.clone(), w.pid))
                    .max_by_key(|(_, pid)| *pid),
            };
            let Some((id, pid)) = victim else {
                return Ok(None);
            };
            if self.unforgotten.get(&id) == Some(&pid) {
                // Known dead, its znodes not removed yet (ZooKeeper is unreachable): not a worker to kill.
                anyhow::bail!("ZooKeeper still lists worker {id} (pid {pid}), which is dead");
            }
            if self.ensure_managed(&id, pid).await? && self.runtime.kill(&id).await? {
                tracing::info!(worker = %id, pid, ?role, "killed on request (crash API)");
                self.on_gone(&id, pid, Gone::Killed).await;
                return Ok(Some(pid));
            }
            // It was dead already: forgotten now, so the next look finds the next candidate.
            self.on_gone(&id, pid, Gone::Ended).await;
        }
    }

    /// Kills worker `id` and waits until it is gone. `Ok(false)` when it is not running.
    async fn kill(&mut self, id: &str) -> anyhow::Result<bool> {
        let registered = self.view.borrow().workers.get(id).map(|w| w.pid);
        if !self.workers.contains_key(id) {
            match registered {
                Some(pid) if self.ensure_managed(id, pid).await? => {}
                _ => return Ok(false),
            }
        }
        let Some(pid) = self.workers.get(id).map(|w| w.pid) else {
            return Ok(false);
        };
        if !self.runtime.kill(id).await? {
            return Ok(false);
        }
        self.on_gone(id, pid, Gone::Killed).await;
        Ok(true)
    }

    /// Whether worker `id` (pid `pid`) is one this supervisor runs, adopting it if it is alive.
    async fn ensure_managed(&mut self, id: &str, pid: u32) -> anyhow::Result<bool> {
        if let Some(w) = self.workers.get(id) {
            return Ok(w.pid == pid);
        }
        if !self.runtime.adopt(id, pid).await? {
            return Ok(false);
        }
        tracing::info!(worker = %id, pid, "adopted a running worker");
        self.workers.insert(
            id.to_owned(),
            Managed {
                pid,
                registered: true,
            },
        );
        self.idle.remove(id);
        Ok(true)
    }

    /// A worker process is gone: it is no longer run, its znodes are removed, its folder is idle.
    async fn on_gone(&mut self, id: &str, pid: u32, how: Gone) {
        let Some(managed) = self.workers.get(id).filter(|w| w.pid == pid).cloned() else {
            // Reported twice (a kill and its exit), or a process this supervisor never ran: only make sure
            // ZooKeeper forgets it.
            if self
                .view
                .borrow()
                .workers
                .get(id)
                .is_some_and(|w| w.pid == pid)
            {
                self.forget(id, pid).await;
            }
            return;
        };
        self.workers.remove(id);
        let was_master = self
            .view
            .borrow()
            .master
            .as_ref()
            .is_some_and(|m| m.id == id && m.pid == pid);
        let retired = self.retiring.remove(id);
        let mut failed_start = !managed.registered;
        if self.pending_master.as_deref() == Some(id) {
            self.pending_master = None;
            failed_start = true;
            tracing::warn!(
                worker = %id,
                pid,
                "the worker started as master ended before taking the role"
            );
        }
        match how {
            Gone::Killed => {}
            Gone::Ended if retired => tracing::info!(worker = %id, pid, "retired slave stopped"),
            Gone::Ended if failed_start => {
                tracing::warn!(worker = %id, pid, "worker ended before it started properly");
                self.hold();
            }
            Gone::Ended if was_master => tracing::warn!(
                worker = %id,
                pid,
                "the master died; the in-sync slaves elect another, then a slave is added"
            ),
            Gone::Ended => tracing::warn!(worker = %id, pid, "a slave died; replacing it"),
        }
        self.idle.insert(id.to_owned(), Idle::Died);
        self.forget(id, pid).await;
    }

    /// Removes a dead worker's znodes; on failure, remembers to retry.
    async fn forget(&mut self, id: &str, pid: u32) {
        match tokio::time::timeout(FORGET_TIMEOUT, self.registry.forget(id, pid)).await {
            Ok(Ok(())) => {
                self.unforgotten.remove(id);
            }
            Ok(Err(e)) => {
                tracing::warn!(
                    worker = %id,
                    pid,
                    "removing a dead worker's znodes: {e:#}; will retry"
                );
                self.unforgotten.insert(id.to_owned(), pid);
            }
            Err(_) => {
                tracing::warn!(
                    worker = %id,
                    pid,
                    "removing a dead worker's znodes timed out; will retry"
                );
                self.unforgotten.insert(id.to_owned(), pid);
            }
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
        if self.needs_master(&view) {
            self.restore_master(&view).await;
            if self.held() {
                return;
            }
        }
        self.balance_slaves(&view).await;
        self.remove_idle_folders(&view).await;
    }

    /// Adopts every registered worker (and the master) not run by this supervisor whose process is alive,
    /// and forgets those whose process is not.
    async fn adopt_registered(&mut self) {
        let view = self.view.borrow().clone();
        let mut registered: BTreeSet<(String, u32)> = view
            .workers
            .values()
            .map(|w| (w.id.clone(), w.pid))
            .collect();
        if let Some(m) = &view.master {
            registered.insert((m.id.clone(), m.pid));
        }
        for (id, pid) in registered {
            if self.unforgotten.get(&id) == Some(&pid) {
                continue;
            }
            if let Some(w) = self.workers.get(&id) {
                if w.pid != pid {
                    // An earlier process under this id (we restarted it on its folder): never alive at the same
                    // time as ours, since a folder is reused only when nothing runs it.
                    tracing::info!(
                        worker = %id,
                        pid,
                        "removing the znodes of an earlier process of this worker"
                    );
                    self.forget(&id, pid).await;
                }
                continue;
            }
            match self.ensure_managed(&id, pid).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(
                        worker = %id,
                        pid,
                        "registered worker is not running; removing its znodes"
                    );
                    if self.folders.path(&id).is_dir() {
                        self.idle.entry(id.clone()).or_insert(Idle::Died);
                    }
                    self.forget(&id, pid).await;
                }
                Err(e) => tracing::warn!(worker = %id, pid, "checking a registered worker: {e:#}"),
            }
        }
    }

    /// What an election can do without the supervisor: the last in-sync set's live members, and whether one
    /// of them stands as a candidate. (A slave stands once a message of its master has named it in sync, just
    /// after it applied it; one that joined the set just before the master died may never hear so.)
    fn electorate(&self, view: &ClusterView) -> Electorate {
        let live: Vec<&String> = view
            .in_sync
            .as_ref()
            .map(|set| {
                set.members
                    .iter()
                    .filter(|m| self.workers.contains_key(*m))
                    .collect()
            })
            .unwrap_or_default();
        if live.iter().any(|m| view.candidates.contains(*m)) {
            Electorate::Standing
        } else if live.is_empty() {
            Electorate::Nobody
        } else {
            Electorate::NotStanding
        }
    }

    /// Whether the supervisor must provide a master itself: there is none, none is on its way, and no
    /// election can bring one (or one has had its chance).
    fn needs_master(&self, view: &ClusterView) -> bool {
        if view.master.is_some() || self.pending_master.is_some() {
            return false;
        }
        let waited = self.no_master_since.map_or(Duration::ZERO, |t| t.elapsed());
        match self.electorate(view) {
            Electorate::Nobody => true,
            Electorate::NotStanding => waited >= STAND_GRACE,
            Electorate::Standing => waited >= ELECTION_GRACE,
        }
    }

    /// Starts a master on the copy of the database that got furthest, or an empty one when there is no copy
    /// at all.
    async fn restore_master(&mut self, view: &ClusterView) {
        let mut candidates: Vec<(String, bool)> = Vec::new();
        let ids = match self.folders.ids() {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!("listing the workers' folders: {e:#}; not starting a master");
                self.hold();
                return;
            }
        };
        for id in ids {
            let live = self.workers.contains_key(&id);
            if !live && self.is_running_anywhere(&id).await {
                // A worker we do not know runs on it: started by an earlier orchestrator (perhaps as the master
                // it was restoring), not registered yet. It registers within moments and is adopted; choosing
                // without its copy could choose a worse one.
                tracing::info!(
                    worker = %id,
                    "waiting for a running worker to register before restoring a master"
                );
                return;
            }
            candidates.push((id, live));
        }
        let folders = self.folders.clone();
        let read = tokio::task::spawn_blocking(move || {
            candidates
                .into_iter()
                .map(|(id, live)| {
                    let position = folders.position(&id);
                    (id, live, position)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let positions = match read {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("reading the copies' positions: {e}");
                self.hold();
                return;
            }
        };
        let mut unreadable = false;
        let mut copies: Vec<(Position, bool, String)> = Vec::new();
        for (id, live, position) in positions {
            match position {
                Ok(Some(p)) => copies.push((p, live, id)),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(worker = %id, "{e:#}");
                    unreadable = true;
                }
            }
        }
        let summary: Vec<String> = copies
            .iter()
            .map(|(p, live, id)| {
                format!(
                    "{id}@{}:{}{}",
                    p.epoch,
                    p.seq,
                    if *live { " (running)" } else { "" }
                )
            })
            .collect();
        if unreadable {
            // The copy that cannot be read may be the one that got furthest: choosing among the others could
            // drop acknowledged writes. Someone has to look at it.
            tracing::error!(
                readable = ?summary,
                "a copy of the database cannot be read; not restoring a master until it can"
            );
            self.hold();
            return;
        }
        let Some((position, live, id)) = choose_master(&copies) else {
            let id = new_worker_id();
            tracing::info!(
                worker = %id,
                "no copy of the database anywhere: starting a new, empty master"
            );
            self.start(id, Role::Master).await;
            return;
        };
        if live {
            // Only after a failed election: the furthest copy is held by a slave that did not take the role.
            tracing::warn!(
                worker = %id,
                "the furthest copy is a running slave's, not elected: restarting it as master"
            );
            let pid = self.workers.get(&id).map(|w| w.pid);
            match self.runtime.kill(&id).await {
                Ok(_) => {
                    if let Some(pid) = pid {
                        self.on_gone(&id, pid, Gone::Killed).await;
                    }
                }
                Err(e) => {
                    tracing::error!(worker = %id, "killing it: {e:#}");
                    self.hold();
                    return;
                }
            }
        }
        tracing::info!(
            worker = %id,
            epoch = position.epoch,
            seq = position.seq,
            copies = ?summary,
            via = ?view.in_sync.as_ref().map(|s| &s.members),
            "restoring the master from the furthest copy of the database"
        );
        self.start(id, Role::Master).await;
    }

    /// The running slaves (not retiring), by id.
    fn slaves(&self, view: &ClusterView) -> Vec<String> {
        let master = view
            .master
            .as_ref()
            .map(|m| m.id.as_str())
            .or(self.pending_master.as_deref());
        self.workers
            .keys()
            .filter(|id| Some(id.as_str()) != master && !self.retiring.contains(*id))
            .cloned()
            .collect()
    }

    async fn balance_slaves(&mut self, view: &ClusterView) {
        let target = *self.target.borrow();
        let slaves = self.slaves(view);
        if slaves.len() < target {
            let missing = target - slaves.len();
            tracing::info!(
                running = slaves.len(),
                target,
                "starting {missing} slave(s)"
            );
            for _ in 0..missing {
                let id = self.reusable_folder().await.unwrap_or_else(new_worker_id);
                if !self.start(id, Role::Slave).await {
                    break;
                }
            }
        } else if slaves.len() > target {
            let excess = slaves.len() - target;
            let in_sync = view.in_sync_members();
            let mut ranked: Vec<(bool, u32, String)> = slaves
                .into_iter()
                .filter_map(|id| {
                    let pid = self.workers.get(&id)?.pid;
                    Some((in_sync.contains(&id), pid, id))
                })
                .collect();
            // Slaves not in sync go first (they serve nothing yet), then the highest pids.
            ranked.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            for (_, pid, id) in ranked.into_iter().take(excess) {
                self.retire(id, pid).await;
            }
        }
    }

    /// A folder of an earlier run that a new slave can take over (it resyncs from the master anyway, and
    /// keeping the ids of a restarted cluster makes its logs readable).
    async fn reusable_folder(&mut self) -> Option<String> {
        let ids: Vec<String> = self
            .idle
            .iter()
            .filter(|(_, why)| **why == Idle::PreviousRun)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if !self.is_running_anywhere(&id).await {
                return Some(id);
            }
        }
        None
    }

    async fn retire(&mut self, id: String, pid: u32) {
        tracing::info!(worker = %id, pid, "retiring a slave (scaling down)");
        self.retiring.insert(id.clone());
        match self.runtime.terminate(&id).await {
            Ok(true) => {
                if let Some(me) = self.me.upgrade() {
                    tokio::spawn(async move {
                        tokio::time::sleep(RETIRE_GRACE).await;
                        let _ = me.send(Msg::RetireDue { id, pid }).await;
                    });
                }
            }
            Ok(false) => {}
            Err(e) => tracing::error!(worker = %id, "stopping a retiring slave: {e:#}"),
        }
    }

    /// Starts a worker; false (and starts held back) when it could not be started.
    async fn start(&mut self, id: String, role: Role) -> bool {
        let spec = self.template.spec(&id, role);
        let reused = self.idle.remove(&id);
        match self.runtime.start(spec).await {
            Ok(WorkerProcess { id, pid }) => {
                tracing::info!(
                    worker = %id,
                    pid,
                    ?role,
                    reused_folder = reused.is_some(),
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
                if let Some(why) = reused {
                    self.idle.insert(id, why);
                }
                self.hold();
                false
            }
        }
    }

    fn held(&self) -> bool {
        self.hold_until.is_some_and(|t| Instant::now() < t)
    }

    /// Holds starts back after a setback (a failed start, a copy that cannot be read), longer after each one
    /// in a row; the count is reset once the cluster is healthy.
    fn hold(&mut self) {
        self.failed_starts += 1;
        let hold = HOLD_MIN
            .saturating_mul(1u32 << (self.failed_starts - 1).min(16))
            .min(HOLD_MAX);
        tracing::warn!(
            setbacks = self.failed_starts,
            "holding starts back for {hold:?}"
        );
        self.hold_until = Some(Instant::now() + hold);
    }

    /// Once a healthy master (not one of them) holds every acknowledged write, the folders of dead workers
    /// hold nothing that is needed: removed, so crashes do not fill the disk.
    async fn remove_idle_folders(&mut self, view: &ClusterView) {
        let Some(master) = &view.master else { return };
        if self.idle.is_empty()
            || self.idle.contains_key(&master.id)
            || view.in_sync_members().is_empty()
            || !self.workers.contains_key(&master.id)
        {
            return;
        }
        let ids: Vec<String> = self.idle.keys().cloned().collect();
        for id in ids {
            if self.workers.contains_key(&id) || self.is_running_anywhere(&id).await {
                continue;
            }
            match self.folders.remove(&id) {
                Ok(()) => {
                    tracing::info!(
                        worker = %id,
                        master = %master.id,
                        "removed a gone worker's folder: the master holds everything it held"
                    );
                    self.idle.remove(&id);
                }
                Err(e) => tracing::warn!(worker = %id, "{e:#}"),
            }
        }
    }

    async fn is_running_anywhere(&self, id: &str) -> bool {
        match self.runtime.is_running_anywhere(id).await {
            Ok(running) => running,
            Err(e) => {
                // When in doubt, the folder is in use: reusing or removing it is what must not happen.
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

/// The copy a restored master starts from: the furthest position; on a tie, one without a running worker
/// (nothing to kill), then the smallest id (a stable choice).
fn choose_master(copies: &[(Position, bool, String)]) -> Option<(Position, bool, String)> {
    copies
        .iter()
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2)))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(epoch: u64, seq: u64, live: bool, id: &str) -> (Position, bool, String) {
        (Position { epoch, seq }, live, id.to_owned())
    }

    #[test]
    fn the_restored_master_is_the_copy_with_the_highest_epoch_then_seq() {
        let copies = [
            copy(1, 500, false, "old-master"),
            copy(2, 10, false, "elected"),
            copy(2, 9, false, "lagging"),
        ];
        assert_eq!(choose_master(&copies).unwrap().2, "elected");
    }

    #[test]
    fn on_a_tie_a_copy_without_a_running_worker_wins_then_the_smallest_id() {
        let copies = [
            copy(3, 7, true, "a-running"),
            copy(3, 7, false, "c-dead"),
            copy(3, 7, false, "b-dead"),
        ];
        assert_eq!(choose_master(&copies).unwrap().2, "b-dead");
        assert!(choose_master(&[]).is_none());
    }
}
