//! A pool of Docker engines (`runner.hosts`): one scheduler places each trial on the engine with
//! the most free capacity; an engine that stops answering is drained, and the trial that met it
//! fails with an infrastructure error that the trial's retry places elsewhere.
//!
//! Images are made per engine (each builds or pulls what its trials need, checked before the
//! trials start in `prepare`). Results do not depend on the engine: the environment id of the
//! cache key is the id of the images, the same on every engine that loaded or pulled them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::DockerProvider;
use crate::error::{Error, Kind, Result};
use crate::sandbox::{
    CreateOptions, ExecOutput, ExecRequest, GatewayEndpoints, GatewayRoute, InfraClass, Notes,
    Phase, Sandbox, SandboxProvider,
};
use crate::task::Task;

/// One engine of the pool.
struct Member {
    /// The address as configured (`tcp://127.0.0.1:2375`), the name trials are placed under.
    name: String,
    provider: DockerProvider,
    capacity: usize,
    slots: Arc<Semaphore>,
    /// Why the engine was drained (it stopped answering); `None` while it takes trials.
    drained: Mutex<Option<String>>,
    /// Tasks whose environment this engine could not make (in `prepare`): placed elsewhere.
    unfit: Mutex<std::collections::HashSet<String>>,
    placed: AtomicUsize,
}

impl Member {
    fn drained(&self) -> Option<String> {
        self.drained.lock().ok().and_then(|d| d.clone())
    }

    fn fits(&self, task: &str) -> bool {
        self.drained().is_none() && self.unfit.lock().is_ok_and(|u| !u.contains(task))
    }
}

/// Shared by the pool and the sandboxes it placed: a freed slot or a drained engine wakes the
/// trials waiting for a place.
struct Shared {
    members: Vec<Member>,
    changed: Notify,
}

impl Shared {
    /// Drain `m` when its engine no longer answers; returns whether it was drained.
    async fn drain_if_lost(&self, m: usize, why: &Error) -> bool {
        let member = &self.members[m];
        if member.drained().is_some() {
            return true;
        }
        if member.provider.answers().await {
            return false;
        }
        if let Ok(mut d) = member.drained.lock()
            && d.is_none()
        {
            *d = Some(why.to_string());
        }
        self.changed.notify_waiters();
        true
    }
}

pub struct DockerPool {
    shared: Arc<Shared>,
}

impl DockerPool {
    /// A pool of `(name, provider, capacity)`; capacities are at least 1.
    pub fn new(members: Vec<(String, DockerProvider, usize)>) -> Self {
        let members = members
            .into_iter()
            .map(|(name, provider, capacity)| {
                let capacity = capacity.max(1);
                Member {
                    name,
                    provider,
                    capacity,
                    slots: Arc::new(Semaphore::new(capacity)),
                    drained: Mutex::new(None),
                    unfit: Mutex::new(Default::default()),
                    placed: AtomicUsize::new(0),
                }
            })
            .collect();
        DockerPool {
            shared: Arc::new(Shared {
                members,
                changed: Notify::new(),
            }),
        }
    }

    /// Trials placed on each engine so far, in the configured order.
    pub fn placements(&self) -> Vec<(String, usize)> {
        self.shared
            .members
            .iter()
            .map(|m| (m.name.clone(), m.placed.load(Ordering::SeqCst)))
            .collect()
    }

    /// The engine among those that can take `task` with the most free capacity (a share of
    /// its own), with a slot of it held; `Ok(None)` while all of them are full.
    fn reserve(&self, task: &str) -> Result<Option<(usize, OwnedSemaphorePermit)>> {
        let members = &self.shared.members;
        let fit: Vec<usize> = (0..members.len())
            .filter(|&i| members[i].fits(task))
            .collect();
        if fit.is_empty() {
            return Err(self.none_left(task));
        }
        let free = |i: usize| {
            let m = &members[i];
            m.slots.available_permits() as f64 / m.capacity as f64
        };
        let best = fit
            .iter()
            .copied()
            .filter(|&i| members[i].slots.available_permits() > 0)
            .max_by(|&a, &b| free(a).total_cmp(&free(b)).then(b.cmp(&a)));
        let Some(i) = best else { return Ok(None) };
        Ok(members[i]
            .slots
            .clone()
            .try_acquire_owned()
            .ok()
            .map(|p| (i, p)))
    }

    /// What an engine's failure to make `task`'s environment means: a usage error (refused
    /// certificates) stops the run; an engine that no longer answers is drained; one that
    /// answers takes none of the task's trials. `first` keeps the first such error.
    async fn set_aside(
        &self,
        i: usize,
        task: &Task,
        e: Error,
        notes: &mut Notes<'_>,
        first: &mut Option<Error>,
    ) -> Result<()> {
        let m = &self.shared.members[i];
        if e.kind() == Kind::Usage {
            return Err(Error::usage_hint(
                format!("Docker host {}: {e}", m.name),
                e.hint()
                    .unwrap_or_else(|| "check this host's entry in runner.hosts".into()),
            ));
        }
        if self.shared.drain_if_lost(i, &e).await {
            notes(&format!("host {} drained: {e}", m.name));
        } else {
            if let Ok(mut u) = m.unfit.lock() {
                u.insert(task.id.clone());
            }
            notes(&format!(
                "host {} takes no trial of `{}`: {e}",
                m.name, task.id
            ));
        }
        first.get_or_insert(e);
        Ok(())
    }

    /// Through `runner.registry`: the first engine, in the configured order, that can make
    /// the image `task` builds makes it (from its own store, the registry, or a build) and
    /// pushes it; every other engine pulls it, and each must then hold it under the same id
    /// (the image's content digest), the id that enters the cache key. `None`: no registry,
    /// or the task builds no image.
    async fn publish(&self, task: &Task, notes: &mut Notes<'_>) -> Result<Option<String>> {
        let members = &self.shared.members;
        let mut first_err = None;
        let mut built = None;
        for (i, m) in members.iter().enumerate() {
            if m.drained().is_some() {
                continue;
            }
            match m.provider.publish(task, notes).await {
                Ok(None) => return Ok(None),
                Ok(Some(p)) => {
                    built = Some((i, p));
                    break;
                }
                Err(e) => self.set_aside(i, task, e, notes, &mut first_err).await?,
            }
        }
        let Some((b, (image, id))) = built else {
            return Err(first_err.unwrap_or_else(|| self.none_left(&task.id)));
        };
        let (image, id) = (&image, &id);
        let fetched =
            futures_util::future::join_all(
                members
                    .iter()
                    .enumerate()
                    .filter(|(i, m)| *i != b && m.drained().is_none())
                    .map(|(i, m)| async move {
                        (i, m.provider.fetch(task, image, id, &mut |_| {}).await)
                    }),
            )
            .await;
        for (i, r) in fetched {
            if let Err(e) = r {
                self.set_aside(i, task, e, notes, &mut first_err).await?;
            }
        }
        notes(&format!(
            "{image} ({}) pushed from {} and pulled by the other hosts",
            id.strip_prefix("sha256:")
                .unwrap_or(id)
                .get(..12)
                .unwrap_or(id),
            members[b].name
        ));
        Ok(Some(id.clone()))
    }

    fn none_left(&self, task: &str) -> Error {
        let why: Vec<String> = self
            .shared
            .members
            .iter()
            .map(|m| match m.drained() {
                Some(e) => format!("{}: drained ({e})", m.name),
                None => format!("{}: cannot make the environment of `{task}`", m.name),
            })
            .collect();
        InfraClass::Sandbox.error_hint(
            format!(
                "no Docker host of runner.hosts can take task `{task}`:\n  {}",
                why.join("\n  ")
            ),
            "start the engines again (or fix runner.hosts), then `git harness run --resume` retries these trials",
        )
    }
}

#[async_trait]
impl SandboxProvider for DockerPool {
    fn name(&self) -> &str {
        "docker (a pool of hosts)"
    }

    async fn create(&self, task: &Task) -> Result<Box<dyn Sandbox>> {
        self.create_with(task, &CreateOptions::default()).await
    }

    async fn create_with(&self, task: &Task, opts: &CreateOptions) -> Result<Box<dyn Sandbox>> {
        let id = opts
            .trial_id
            .clone()
            .unwrap_or_else(crate::sandbox::new_trial_id);
        loop {
            // Registered before looking, so a slot freed meanwhile is not missed.
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let Some((i, permit)) = self.reserve(&task.id)? else {
                changed.await;
                continue;
            };
            let member = &self.shared.members[i];
            match member.provider.create_docker(task, &id).await {
                Ok(sb) => {
                    member.placed.fetch_add(1, Ordering::SeqCst);
                    return Ok(Box::new(Placed {
                        inner: Box::new(sb),
                        shared: self.shared.clone(),
                        member: i,
                        slot: Some(permit),
                    }));
                }
                Err(e) if e.kind() == Kind::Usage => return Err(e),
                // A lost engine: try the others.
                Err(e) if self.shared.drain_if_lost(i, &e).await => {
                    drop(permit);
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn environment_id(&self, task: &Task) -> Result<Option<String>> {
        let mut first = None;
        for m in self.shared.members.iter().filter(|m| m.fits(&task.id)) {
            match m.provider.environment_id(task).await {
                Ok(id) => return Ok(Some(id)),
                Err(e) if e.kind() == Kind::Usage => return Err(e),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        Err(first.unwrap_or_else(|| self.none_left(&task.id)))
    }

    /// Every engine makes ready what the task needs, before trials start: one that does not
    /// answer is drained, one that cannot make the environment takes none of the task's
    /// trials; certificates an engine refuses stop the run (the user's to fix). The id is the
    /// first engine's that made it, in the configured order. Through `runner.registry` an
    /// image the task builds is built once and pulled by the others (see `publish`).
    async fn prepare(&self, task: &Task, notes: &mut Notes<'_>) -> Result<Option<String>> {
        if let Some(id) = self.publish(task, notes).await? {
            return Ok(Some(id));
        }
        let members = &self.shared.members;
        let ready = futures_util::future::join_all(members.iter().map(|m| async move {
            if m.drained().is_some() {
                return None;
            }
            Some(m.provider.prepare(task, &mut |_| {}).await)
        }))
        .await;
        let mut id = None;
        let mut first_err = None;
        for (i, r) in ready.into_iter().enumerate() {
            match r {
                None => {}
                Some(Ok(env)) => {
                    id.get_or_insert(env);
                }
                Some(Err(e)) => {
                    self.set_aside(i, task, e, notes, &mut first_err).await?;
                }
            }
        }
        match (id, first_err) {
            (Some(id), _) => Ok(Some(id)),
            (None, Some(e)) => Err(e),
            (None, None) => Err(self.none_left(&task.id)),
        }
    }

    async fn sweep(&self) -> Result<usize> {
        let mut n = 0;
        for m in &self.shared.members {
            // An engine that does not answer has nothing of ours that we could reach.
            n += m.provider.sweep().await.unwrap_or(0);
        }
        Ok(n)
    }

    async fn sweep_own(&self) -> Result<usize> {
        let mut n = 0;
        for m in &self.shared.members {
            n += m.provider.sweep_own().await.unwrap_or(0);
        }
        Ok(n)
    }
}

/// A sandbox on one engine of the pool, holding its slot until it is dropped. An
/// infrastructure error of a call drains the engine when it no longer answers.
struct Placed {
    inner: Box<dyn Sandbox>,
    shared: Arc<Shared>,
    member: usize,
    slot: Option<OwnedSemaphorePermit>,
}

impl Drop for Placed {
    fn drop(&mut self) {
        drop(self.slot.take());
        self.shared.changed.notify_waiters();
    }
}

impl Placed {
    async fn watch<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r
            && e.kind() == Kind::Infra
        {
            self.shared.drain_if_lost(self.member, e).await;
        }
        r
    }
}

#[async_trait]
impl Sandbox for Placed {
    fn workdir(&self) -> &str {
        self.inner.workdir()
    }
    async fn exec(&self, req: ExecRequest) -> Result<ExecOutput> {
        let r = self.inner.exec(req).await;
        self.watch(r).await
    }
    async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let r = self.inner.read_file(path).await;
        self.watch(r).await
    }
    async fn read_file_capped(&self, path: &str, limit: u64) -> Result<(Vec<u8>, u64)> {
        let r = self.inner.read_file_capped(path, limit).await;
        self.watch(r).await
    }
    async fn write_file(&self, path: &str, data: &[u8]) -> Result<()> {
        let r = self.inner.write_file(path, data).await;
        self.watch(r).await
    }
    async fn copy_dir_in(&self, host_dir: &std::path::Path, dest: &str) -> Result<()> {
        let r = self.inner.copy_dir_in(host_dir, dest).await;
        self.watch(r).await
    }
    async fn destroy(&mut self) -> Result<()> {
        let r = self.inner.destroy().await;
        self.watch(r).await
    }
    fn tests_dir(&self) -> &str {
        self.inner.tests_dir()
    }
    fn logs_dir(&self) -> &str {
        self.inner.logs_dir()
    }
    fn solution_dir(&self) -> &str {
        self.inner.solution_dir()
    }
    async fn reset_dirs(&self, dirs: &[&str]) -> Result<()> {
        let r = self.inner.reset_dirs(dirs).await;
        self.watch(r).await
    }
    async fn read_dir_files(&self, dir: &str, names: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let r = self.inner.read_dir_files(dir, names).await;
        self.watch(r).await
    }
    async fn workdir_fingerprint(&self) -> Result<Option<String>> {
        let r = self.inner.workdir_fingerprint().await;
        self.watch(r).await
    }
    async fn kill_strays(&self) -> Result<()> {
        let r = self.inner.kill_strays().await;
        self.watch(r).await
    }
    async fn run_verifier(
        &self,
        run: crate::sandbox::VerifierRun,
    ) -> Result<crate::sandbox::VerifierRan> {
        let r = self.inner.run_verifier(run).await;
        self.watch(r).await
    }
    async fn toolchain_changes(&self) -> Result<Vec<String>> {
        let r = self.inner.toolchain_changes().await;
        self.watch(r).await
    }
    fn verifier_path(&self) -> Option<String> {
        self.inner.verifier_path()
    }
    fn trial_id(&self) -> &str {
        self.inner.trial_id()
    }
    fn placement(&self) -> Option<&str> {
        Some(&self.shared.members[self.member].name)
    }
    async fn set_phase(&self, phase: Phase) -> Result<()> {
        let r = self.inner.set_phase(phase).await;
        self.watch(r).await
    }
    async fn show_read_only(&self, host_dir: &std::path::Path, at: &str) -> Result<String> {
        let r = self.inner.show_read_only(host_dir, at).await;
        self.watch(r).await
    }
    async fn hide_read_only(&self) {
        self.inner.hide_read_only().await
    }
    async fn gateway_route(&self, gateway: &GatewayEndpoints) -> Result<GatewayRoute> {
        let r = self.inner.gateway_route(gateway).await;
        self.watch(r).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(capacities: &[usize]) -> DockerPool {
        let members = capacities
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                // A client is made without connecting: nothing here talks to an engine.
                let host = format!("tcp://127.0.0.1:{}", 9 + i);
                let e = crate::sandbox::docker::Endpoint::new(&host, false, None).unwrap();
                let p =
                    DockerProvider::connect_to(e, Default::default(), Default::default()).unwrap();
                (host, p, c)
            })
            .collect();
        DockerPool::new(members)
    }

    #[tokio::test]
    async fn trials_go_to_the_most_free_share_and_never_to_a_drained_host() {
        let p = pool(&[2, 1]);
        let mut held = Vec::new();
        let mut placed = Vec::new();
        while let Some((i, slot)) = p.reserve("t").unwrap() {
            placed.push(i);
            held.push(slot);
        }
        // Both free (100%): the first; then 50% against 100%: the second; then the first.
        assert_eq!(placed, vec![0, 1, 0]);
        held.clear();
        *p.shared.members[0].drained.lock().unwrap() = Some("gone".into());
        let (i, _slot) = p.reserve("t").unwrap().unwrap();
        assert_eq!(i, 1);
        // A host that cannot make a task's environment takes none of its trials.
        p.shared.members[1]
            .unfit
            .lock()
            .unwrap()
            .insert("other".into());
        let e = p.reserve("other").unwrap_err().to_string();
        assert!(e.contains("drained (gone)"), "{e}");
        assert!(e.contains("cannot make the environment of `other`"), "{e}");
    }
}
