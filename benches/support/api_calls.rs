//! Engine-API call timings for the benches: git-harness reports each call it makes as a
//! `debug` event of `git_harness::engine_api` (see `sandbox::engine::timed`); a subscriber
//! collects them here, and a floor program notes its own.

#![allow(dead_code, reason = "each bench uses part of it")]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Engine-API calls and their microseconds: git-harness's from its `engine_api` events, the
/// floor's timed here.
#[derive(Default)]
pub struct Calls(Mutex<Vec<(String, u64)>>);

impl Calls {
    pub fn note(&self, call: &str, since: Instant) {
        self.0
            .lock()
            .unwrap()
            .push((call.to_string(), since.elapsed().as_micros() as u64));
    }

    /// Per call: how many per trial and their mean ms per trial, over `trials` trials.
    pub fn per_trial(&self, trials: usize) -> BTreeMap<String, (f64, f64)> {
        let mut m: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for (c, us) in self.0.lock().unwrap().drain(..) {
            let e = m.entry(c).or_default();
            e.0 += 1.0 / trials as f64;
            e.1 += us as f64 / 1000.0 / trials as f64;
        }
        m
    }
}

/// Collects git-harness's `engine_api` events into a [`Calls`] while `on`.
pub struct ApiLayer {
    calls: Arc<Calls>,
    on: Arc<AtomicBool>,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ApiLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != git_harness::sandbox::docker::API_TARGET
            || !self.on.load(Ordering::Relaxed)
        {
            return;
        }
        #[derive(Default)]
        struct V(String, u64);
        impl tracing::field::Visit for V {
            fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
                if f.name() == "call" {
                    self.0 = v.to_string();
                }
            }
            fn record_u64(&mut self, f: &tracing::field::Field, v: u64) {
                if f.name() == "us" {
                    self.1 = v;
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        let mut v = V::default();
        event.record(&mut v);
        self.calls.0.lock().unwrap().push((v.0, v.1));
    }
}

/// Install the collecting subscriber for the process: the calls, and the switch that says
/// when they count.
pub fn install() -> (Arc<Calls>, Arc<AtomicBool>) {
    use tracing_subscriber::layer::SubscriberExt;
    let calls = Arc::new(Calls::default());
    let on = Arc::new(AtomicBool::new(false));
    let sub = tracing_subscriber::registry()
        .with(ApiLayer {
            calls: calls.clone(),
            on: on.clone(),
        })
        .with(tracing_subscriber::filter::Targets::new().with_target(
            git_harness::sandbox::docker::API_TARGET,
            tracing::Level::DEBUG,
        ));
    tracing::subscriber::set_global_default(sub).expect("one subscriber");
    (calls, on)
}

/// Print `calls` (per trial: count, mean ms) beside `floor` when given.
pub fn print_table(
    calls: &BTreeMap<String, (f64, f64)>,
    floor: Option<&BTreeMap<String, (f64, f64)>>,
) {
    let empty = BTreeMap::new();
    let f = floor.unwrap_or(&empty);
    if floor.is_some() {
        println!(
            "{:<28} {:>7} {:>9} {:>7} {:>9}",
            "call", "gh n", "gh ms", "floor n", "floor ms"
        );
    } else {
        println!("  {:<28} {:>7} {:>9}", "call", "n", "ms");
    }
    let mut names: Vec<&String> = calls.keys().chain(f.keys()).collect();
    names.sort();
    names.dedup();
    let (mut gt, mut ft) = (0.0, 0.0);
    for c in names {
        let (gn, gm) = calls.get(c).copied().unwrap_or_default();
        let (fnn, fm) = f.get(c).copied().unwrap_or_default();
        gt += gm;
        ft += fm;
        if floor.is_some() {
            println!("{c:<28} {gn:>7.1} {gm:>9.1} {fnn:>7.1} {fm:>9.1}");
        } else {
            println!("  {c:<28} {gn:>7.1} {gm:>9.1}");
        }
    }
    if floor.is_some() {
        println!(
            "{:<28} {:>7} {gt:>9.1} {:>7} {ft:>9.1}",
            "sum of calls", "", ""
        );
    } else {
        println!("  {:<28} {:>7} {gt:>9.1}", "sum of calls", "");
    }
}
