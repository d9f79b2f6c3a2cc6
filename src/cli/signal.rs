//! One handler of SIGINT and SIGTERM for every command that runs trials. The first signal stops
//! scheduling (running trials finish, and the scheduler says which it waits for); the second
//! aborts them (their sandboxes are torn down); a third leaves at once. The handler lives on its
//! own thread, so it answers whatever runtime a command uses, and it is installed only by the
//! commands that run trials: the others keep the default dispositions.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use git_harness::eval::context::Overrides;
use git_harness::exit;
use tokio::sync::watch;

/// How long an abort may take to tear sandboxes down before the process leaves anyway.
const ABORT_GRACE: Duration = Duration::from_secs(30);

static RECEIVER: OnceLock<watch::Receiver<u8>> = OnceLock::new();
/// How many schedulers (or other owners of sandboxes) are live; with none, an interrupt has
/// nothing to wait for.
static BUSY: AtomicUsize = AtomicUsize::new(0);

/// The interrupt channel (0: running, 1: stop scheduling, 2 or more: abort), installing the
/// handler on first use.
pub fn interrupts() -> watch::Receiver<u8> {
    RECEIVER
        .get_or_init(|| {
            let (tx, rx) = watch::channel(0u8);
            let _ = std::thread::Builder::new()
                .name("signals".into())
                .spawn(move || listen(tx));
            rx
        })
        .clone()
}

/// Overrides for a command's evaluation context that hand it the interrupt channel.
pub fn overrides() -> Overrides {
    Overrides {
        interrupt: Some(interrupts()),
        ..Default::default()
    }
}

/// Marks work that owns sandboxes while it lives: an abort waits for it to clean up.
pub struct Busy(());

impl Busy {
    pub fn new() -> Busy {
        BUSY.fetch_add(1, Ordering::SeqCst);
        Busy(())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.fetch_sub(1, Ordering::SeqCst);
    }
}

fn busy() -> bool {
    BUSY.load(Ordering::SeqCst) > 0
}

fn listen(tx: watch::Sender<u8>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        let mut n = 0u8;
        loop {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            n = n.saturating_add(1);
            let _ = tx.send(n);
            match n {
                1 if !busy() => say(
                    "interrupted: no new trial will start; finishing the current step (interrupt again to abort)",
                ),
                1 => {}
                2 if busy() => {
                    say("aborting: stopping running trials and removing their sandboxes");
                    // The scheduler aborts and the command returns; if teardown hangs, leave
                    // with the documented code all the same.
                    std::thread::spawn(|| {
                        std::thread::sleep(ABORT_GRACE);
                        std::process::exit(exit::INTERRUPTED);
                    });
                }
                _ => std::process::exit(exit::INTERRUPTED),
            }
        }
    });
}

fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
