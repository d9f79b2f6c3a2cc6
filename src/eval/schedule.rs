//! Scheduling the trials of a run: cache look-ups first, then concurrent execution under a
//! semaphore in the planned order, journaling each result before it is reported, with an
//! optional early-stop predicate and a two-stage interrupt (stop scheduling, then abort).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::TrialResult;
use super::cache::Cache;
use super::journal::Journal;
use crate::error::{Error, Result};
use crate::experiment::Split;
use crate::gate::Decision;
use crate::task::Task;

/// One trial to run.
#[derive(Debug, Clone)]
pub struct PlannedTrial {
    pub task: Task,
    pub split: Split,
    pub trial: u32,
    pub seed: u64,
    /// Digest of the cache key; `None` for trials that must not be cached (worktree runs).
    pub cache_key: Option<String>,
}

/// What executing a trial produced: the result and the trace bytes to store.
pub struct Executed {
    pub result: TrialResult,
    pub end: TrialEnd,
    pub trace: Option<Vec<u8>>,
    /// The kept final workspace (a tar of the workdir), when the run keeps them.
    pub workspace: Option<Vec<u8>>,
    /// Model requests of the trial, and how many were cut off before an answer.
    pub requests: u32,
    pub unanswered: u32,
}

/// How a trial's execution ended, as the scheduler counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrialEnd {
    /// It ran to its end: its result counts.
    Finished,
    /// Cancelled because the verdict was settled or the user interrupted: not a result, but
    /// what it spent is counted.
    Cancelled,
}

/// Runs one trial; implemented by the harness agent and by the built-in agents.
#[async_trait]
pub trait Executor: Send + Sync {
    async fn execute(&self, trial: &PlannedTrial, cancel: CancellationToken) -> Executed;
}

/// Told about progress; the CLI draws a progress bar with it. The library never prints.
pub trait Observer: Send {
    fn planned(&mut self, _total: usize, _cached: usize) {}
    fn finished(&mut self, _result: &TrialResult) {}
    fn stopping(&mut self, _reason: &str) {}
    /// The first interrupt: no trial starts any more; `running` (`task#trial`) are waited for.
    fn interrupted(&mut self, _running: &[String]) {}
    /// The scheduler is done (finished, stopped or aborted): no trial of it runs any more.
    fn ended(&mut self) {}
    /// Progress of what comes before trials (image pulls), one short line each.
    fn note(&mut self, _text: &str) {}
}

/// Why a run stopped before every planned trial had a result. The run record stores its text
/// (`stop_reason`).
#[derive(Debug, Clone)]
pub enum Stop {
    /// The user interrupted before every trial had run.
    Interrupted,
    /// The circuit breaker: trials in a row failed with the same infrastructure error.
    Tripped(Tripped),
    /// The gate's verdict is settled whatever the remaining trials give.
    Settled(Box<Decision>),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Interrupted => f.write_str("interrupted"),
            Stop::Tripped(t) => write!(
                f,
                "{} trials in a row failed with the same {} error",
                t.count,
                t.kind.as_str()
            ),
            Stop::Settled(d) => {
                let reason = d.early_stopped.as_ref().map_or(&d.reason, |e| &e.reason);
                write!(f, "verdict settled: {reason}")
            }
        }
    }
}

/// An observer that ignores everything.
pub struct Quiet;
impl Observer for Quiet {}

/// Decides after each result whether the rest of the trials can still matter: the gate's
/// decision when it is settled.
pub type Stopper<'a> = Box<dyn FnMut(&[TrialResult]) -> Option<Decision> + Send + 'a>;

pub struct Options<'a> {
    pub run_id: String,
    pub concurrency: usize,
    pub no_cache: bool,
    pub stopper: Option<Stopper<'a>>,
    /// 0 = running, 1 = stop scheduling (first Ctrl-C), 2 = abort (second Ctrl-C).
    pub interrupt: Option<watch::Receiver<u8>>,
    /// How long running trials may finish after the first interrupt before they are cancelled.
    pub grace: Duration,
    /// Stop scheduling after this many trials in a row ended with the same infrastructure
    /// error (0: never): a dead endpoint fails every trial alike, so more of them say nothing.
    pub breaker: u32,
}

/// Why the circuit breaker stopped a run: the repeated error, verbatim, and how often.
#[derive(Debug, Clone)]
pub struct Tripped {
    pub kind: super::InfraClass,
    pub error: String,
    pub count: u32,
}

/// Counts trials in a row that ended with the same infrastructure error.
#[derive(Default)]
struct Breaker {
    last: Option<(super::InfraClass, String)>,
    count: u32,
}

impl Breaker {
    fn observe(&mut self, r: &TrialResult, limit: u32) -> Option<Tripped> {
        let now = match (r.infra, &r.error) {
            (Some(kind), Some(error)) if r.is_infra() => Some((kind, error.clone())),
            _ => None,
        };
        if now.is_some() && now == self.last {
            self.count += 1;
        } else {
            self.count = u32::from(now.is_some());
            self.last = now;
        }
        match &self.last {
            Some((kind, error)) if limit > 0 && self.count >= limit => Some(Tripped {
                kind: *kind,
                error: error.clone(),
                count: self.count,
            }),
            _ => None,
        }
    }
}

pub struct Finished {
    pub results: Vec<TrialResult>,
    /// Why the run stopped before every planned trial had a result.
    pub stopped: Option<Stop>,
    pub interrupted: bool,
    pub executed: usize,
    /// What the trials cancelled before their end spent.
    pub cancelled: super::Overhead,
}

/// Run `plan`. Results already in `journaled` (a resumed run) are kept as they are.
pub async fn execute(
    plan: Vec<PlannedTrial>,
    journaled: Vec<TrialResult>,
    executor: Arc<dyn Executor>,
    cache: &Cache,
    journal: &mut Journal,
    opts: Options<'_>,
    observer: &mut dyn Observer,
) -> Result<Finished> {
    let out = run_plan(plan, journaled, executor, cache, journal, opts, observer).await;
    observer.ended();
    out
}

async fn run_plan(
    plan: Vec<PlannedTrial>,
    journaled: Vec<TrialResult>,
    executor: Arc<dyn Executor>,
    cache: &Cache,
    journal: &mut Journal,
    mut opts: Options<'_>,
    observer: &mut dyn Observer,
) -> Result<Finished> {
    let mut results: Vec<TrialResult> = Vec::new();
    let mut todo: Vec<PlannedTrial> = Vec::new();
    for p in plan {
        if let Some(r) = journaled
            .iter()
            .find(|r| r.task == p.task.id && r.trial == p.trial && !r.is_infra())
        {
            results.push(r.clone());
            continue;
        }
        let hit = match (&p.cache_key, opts.no_cache) {
            (Some(k), false) => cache.lookup(k, &p.task.id, p.trial)?,
            _ => None,
        };
        match hit {
            Some(c) => {
                let mut r = c.result;
                r.split = p.split.to_string();
                r.cached_from = Some(c.run);
                results.push(r);
            }
            None => todo.push(p),
        }
    }
    observer.planned(results.len() + todo.len(), results.len());
    for r in &results {
        observer.finished(r);
    }
    let mut stopped = settled(&mut opts.stopper, &results);
    if let Some(stop) = &stopped {
        observer.stopping(&stop.to_string());
    }

    let cancel = CancellationToken::new();
    let mut set: JoinSet<Executed> = JoinSet::new();
    let mut queue = todo.into_iter();
    let mut interrupted = false;
    let mut executed = 0usize;
    let mut interrupt = opts.interrupt.take();
    let mut grace_deadline: Option<tokio::time::Instant> = None;
    let mut breaker = Breaker::default();
    let mut cancelled = super::Overhead::default();
    let concurrency = opts.concurrency.max(1);
    // Trials in flight, as `task#trial`, to say what an interrupt waits for.
    let mut running: Vec<String> = Vec::new();
    let mut cancelled_any = false;
    let label = |task: &str, trial: u32| format!("{task}#{trial}");
    if let Some(rx) = interrupt.as_mut() {
        match *rx.borrow_and_update() {
            0 => {}
            1 => interrupted = true,
            _ => return Err(Error::Interrupted { run: None }),
        }
    }

    // Results go to the journal's group writer as trials end, and are reported (cached,
    // observed, counted) when they are on disk: a slot is refilled without waiting for the disk.
    let (journal_tx, mut on_disk) = journal
        .group_writer(|e: &Executed| (&e.result, e.trace.as_deref(), e.workspace.as_deref()))?;
    let mut writing = 0usize;

    loop {
        while stopped.is_none() && !interrupted && set.len() < concurrency {
            let Some(p) = queue.next() else { break };
            let ex = executor.clone();
            let token = cancel.child_token();
            running.push(label(&p.task.id, p.trial));
            set.spawn(async move { ex.execute(&p, token).await });
        }
        if set.is_empty() && writing == 0 {
            break;
        }
        let sleep_until = grace_deadline
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            joined = set.join_next(), if !set.is_empty() => {
                let Some(joined) = joined else { continue };
                let done = joined.map_err(|e| Error::Internal(format!("a trial task failed: {e}")))?;
                let l = label(&done.result.task, done.result.trial);
                if let Some(i) = running.iter().position(|r| *r == l) {
                    running.remove(i);
                }
                // Trials cancelled because the verdict was settled or the user interrupted
                // are not results, but what they spent is counted.
                if done.end == TrialEnd::Cancelled {
                    cancelled_any = true;
                    cancelled += super::Overhead {
                        requests: done.requests,
                        unanswered: done.unanswered,
                        usage: done.result.usage,
                        cost_usd: done.result.cost_usd,
                    };
                    continue;
                }
                executed += 1;
                writing += 1;
                journal_tx
                    .send(done)
                    .map_err(|_| Error::Internal("the journal's writer ended".into()))?;
            }
            written = on_disk.recv(), if writing > 0 => {
                let Some((done, written)) = written else {
                    return Err(Error::Internal("the journal's writer ended".into()));
                };
                writing -= 1;
                written?;
                if let Some(k) = &done.result.cache_key {
                    cache.put(k, &opts.run_id, &done.result)?;
                }
                observer.finished(&done.result);
                let trip = breaker.observe(&done.result, opts.breaker);
                results.push(done.result);
                if stopped.is_none()
                    && let Some(t) = trip
                {
                    let stop = Stop::Tripped(t);
                    observer.stopping(&stop.to_string());
                    stopped = Some(stop);
                    // The trials still running hit the same wall: do not wait for them.
                    cancel.cancel();
                }
                if stopped.is_none()
                    && let Some(stop) = settled(&mut opts.stopper, &results)
                {
                    observer.stopping(&stop.to_string());
                    stopped = Some(stop);
                    // The remaining trials cannot change the verdict: do not wait for them.
                    cancel.cancel();
                }
            }
            changed = async {
                match interrupt.as_mut() {
                    Some(rx) => rx.changed().await.map(|_| *rx.borrow()),
                    None => std::future::pending().await,
                }
            } => {
                match changed {
                    Ok(1) => {
                        interrupted = true;
                        observer.interrupted(&running);
                        grace_deadline = Some(tokio::time::Instant::now() + opts.grace);
                    }
                    Ok(n) if n >= 2 => {
                        // Abort: the trials' futures are dropped, and their sandboxes' drop
                        // guards kill processes and remove temp dirs and containers.
                        cancel.cancel();
                        set.abort_all();
                        while set.join_next().await.is_some() {}
                        return Err(Error::Interrupted { run: None });
                    }
                    Ok(_) => {}
                    Err(_) => interrupt = None,
                }
            }
            _ = tokio::time::sleep_until(sleep_until), if grace_deadline.is_some() => {
                cancel.cancel();
                grace_deadline = None;
            }
        }
    }
    // Interrupted after the last trial had started and before any was cancelled: complete.
    let incomplete = queue.len() > 0 || cancelled_any;
    if interrupted && stopped.is_none() && incomplete {
        stopped = Some(Stop::Interrupted);
    }
    Ok(Finished {
        results,
        stopped,
        interrupted,
        executed,
        cancelled,
    })
}

fn settled(stopper: &mut Option<Stopper<'_>>, results: &[TrialResult]) -> Option<Stop> {
    let decision = stopper.as_mut().and_then(|s| s(results))?;
    Some(Stop::Settled(Box::new(decision)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_reads_as_the_run_record_stores_it() {
        assert_eq!(Stop::Interrupted.to_string(), "interrupted");
        let t = Tripped {
            kind: super::super::InfraClass::Model,
            error: "connection refused".into(),
            count: 3,
        };
        assert_eq!(
            Stop::Tripped(t).to_string(),
            "3 trials in a row failed with the same model error"
        );
    }
}
