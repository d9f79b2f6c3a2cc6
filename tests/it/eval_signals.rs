//! Signals and kills as a user delivers them, to the binary. SIGINT and SIGTERM: the first stops
//! scheduling and says what it waits for, the second aborts; exit 130; no sandbox temp dir,
//! process or container survives; an interrupted run is listed by `status` and the resume
//! command it prints finishes it. `kill -9` at many moments of `run`, `validate` and `promote`:
//! the next command loses nothing, executes nothing twice and leaves nothing behind.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::eval::wait_for;
use crate::support::loops::{Out, Repo, hermetic};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_git-harness");
/// Four held-in tasks of the small split, two trials each, one at a time.
const TASKS: &str = "{word-count,sales-total,number-lines,reverse-lines}";
const RUN: [&str; 8] = [
    "run", "--tasks", TASKS, "--trials", "2", "-j", "1", "--split",
];
const TOTAL: usize = 8;

/// A small repository whose sandboxes go to a temp root of its own.
struct Lab {
    repo: Repo,
    tmp: PathBuf,
}

impl Lab {
    fn new() -> Lab {
        let repo = Repo::small("minimal");
        let tmp = repo.root.parent().unwrap().join("sandboxes");
        std::fs::create_dir_all(&tmp).unwrap();
        Lab { repo, tmp }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        hermetic(&mut c);
        c.args(args)
            .current_dir(&self.repo.root)
            .env("TMPDIR", &self.tmp);
        c
    }

    fn harness(&self, args: &[&str]) -> Out {
        let o = self.cmd(args).output().unwrap();
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Start a command with stderr going to a file (read while it runs).
    fn start(&self, args: &[&str]) -> Started {
        let log = self
            .tmp
            .parent()
            .unwrap()
            .join(format!("stderr-{}", rand::random::<u32>()));
        let child = self
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Started { child, log }
    }

    /// Sandbox temp dirs under the lab's temp root.
    fn sandboxes(&self) -> Vec<String> {
        std::fs::read_dir(&self.tmp)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("git-harness-"))
            .collect()
    }

    /// Live processes that run in, or name, the lab's temp root.
    fn processes(&self) -> Vec<String> {
        let root = self.tmp.to_string_lossy().into_owned();
        let mut found = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.chars().all(|c| c.is_ascii_digit()) {
                continue;
            }
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            if stat
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
            {
                continue;
            }
            let cmdline = std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .unwrap_or_default();
            let cwd = std::fs::read_link(e.path().join("cwd"))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            if cmdline.contains(&root) || cwd.starts_with(&root) {
                found.push(format!("{name}: {cmdline}"));
            }
        }
        found
    }

    fn journals(&self) -> Vec<(String, usize)> {
        let dir = self.repo.root.join(".git/harness/journal");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut v: Vec<(String, usize)> = rd
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| {
                let n = std::fs::read(e.path().join("journal.jsonl"))
                    .map(|b| b.iter().filter(|c| **c == b'\n').count())
                    .unwrap_or(0);
                (e.file_name().to_string_lossy().into_owned(), n)
            })
            .collect();
        v.sort();
        v
    }

    /// Nothing of a finished command is left: no sandbox dir, no process, no journal, no lock.
    #[track_caller]
    fn assert_clean(&self, what: &str) {
        assert_eq!(self.sandboxes(), Vec::<String>::new(), "{what}: temp dirs");
        assert_eq!(self.processes(), Vec::<String>::new(), "{what}: processes");
        // Also no journal half removed.
        let left: Vec<String> = std::fs::read_dir(self.repo.root.join(".git/harness/journal"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(left, Vec::<String>::new(), "{what}: journals");
        let git = self.repo.root.join(".git");
        for lock in ["index.lock", "refs/heads/main.lock"] {
            assert!(!git.join(lock).exists(), "{what}: {lock} left");
        }
        assert_eq!(lock_files(&git), Vec::<String>::new(), "{what}: lock files");
        let markers: Vec<String> = std::fs::read_dir(git.join("harness"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.contains("promote-") && n.contains(".pending"))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(markers, Vec::<String>::new(), "{what}: promotion markers");
        self.repo.git(&["fsck", "--no-progress", "--no-dangling"]);
    }

    /// Every trial executed at most once over all run records: no cache key appears twice
    /// among the results that a record executed (or adopted from a killed run).
    #[track_caller]
    fn assert_nothing_executed_twice(&self) {
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for id in self.repo.runs() {
            for r in self.repo.results(&id) {
                // Infrastructure errors have no cache key and are retried by design.
                let Some(key) = r["cache_key"].as_str().map(str::to_string) else {
                    continue;
                };
                if !r["cached_from"].is_null() {
                    continue;
                }
                if let Some(other) = seen.insert(key, id.clone()) {
                    panic!("{}#{} executed by {other} and {id}", r["task"], r["trial"]);
                }
            }
        }
    }
}

struct Started {
    child: Child,
    log: PathBuf,
}

impl Started {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the child this test started and has not reaped.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// Wait for the exit; returns (code, stdout, stderr). Panics after `limit`.
    fn finish(mut self, limit: Duration) -> Out {
        wait_for(limit, "the command to exit", || self.exited());
        let o = self.child.wait_with_output().unwrap();
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: std::fs::read_to_string(&self.log).unwrap_or_default(),
        }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert!(
            status.code().is_none() || status.code() == Some(0),
            "{status:?}"
        );
    }
}

const LIMIT: Duration = Duration::from_secs(120);

/// Every `*.lock` file under `dir` (git's and libgit2's locks: refs, index, packed-refs, config).
fn lock_files(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(path);
            } else if path.extension().is_some_and(|x| x == "lock") {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

fn run_args(split: &str) -> Vec<&str> {
    let mut v = RUN.to_vec();
    v.push(split);
    v
}

/// The resume command an interrupted command printed, as arguments after `git harness`.
fn resume_command(stderr: &str) -> Vec<String> {
    let start = stderr
        .find("`git harness run --resume ")
        .unwrap_or_else(|| panic!("no resume command in:\n{stderr}"));
    let rest = &stderr[start + 1..];
    let cmd = &rest[..rest.find('`').unwrap()];
    cmd.split_whitespace().skip(2).map(str::to_string).collect()
}

fn json(out: &Out) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.stdout))
}

fn interrupt_then_resume(sig: i32) {
    let lab = Lab::new();
    let run = lab.start(&run_args("held_in"));
    wait_for(LIMIT, "a journaled trial", || {
        lab.journals().iter().any(|(_, n)| *n >= 1)
    });
    run.signal(sig);
    let out = run.finish(LIMIT);
    assert_eq!(out.code, 130, "{}", out.stderr);
    assert!(
        out.stderr.contains("interrupted: no new trial will start"),
        "{}",
        out.stderr
    );
    lab.assert_clean_but_journal("after the interrupt");
    let journals = lab.journals();
    assert_eq!(journals.len(), 1, "{journals:?}");
    let (id, done) = journals[0].clone();
    assert!((1..TOTAL).contains(&done), "{done}");
    assert!(
        lab.repo.runs().is_empty(),
        "an interrupted run is not recorded"
    );
    let status = lab.harness(&["status"]).ok();
    assert!(
        status.stdout.contains(&format!(
            "{id}  {done} trials done; resume: git harness run --resume {id}"
        )) || status.stdout.contains(&format!(
            "{id}  {done} trial done; resume: git harness run --resume {id}"
        )),
        "{}",
        status.stdout
    );

    let mut args = resume_command(&out.stderr);
    assert_eq!(args, ["run", "--resume", id.as_str()]);
    args.extend(["--format".into(), "json".into()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let resumed = lab.harness(&refs).ok();
    let v = json(&resumed);
    assert_eq!(v["run"], id.as_str());
    assert_eq!(v["results"].as_array().unwrap().len(), TOTAL);
    assert_eq!(v["executed"].as_u64().unwrap() as usize, TOTAL - done);
    lab.assert_clean("after the resume");
    lab.assert_nothing_executed_twice();
    assert!(!lab.harness(&["status"]).ok().stdout.contains("unfinished"));
}

impl Lab {
    #[track_caller]
    fn assert_clean_but_journal(&self, what: &str) {
        assert_eq!(self.sandboxes(), Vec::<String>::new(), "{what}: temp dirs");
        assert_eq!(self.processes(), Vec::<String>::new(), "{what}: processes");
    }
}

#[test]
fn sigint_stops_a_run_whose_printed_resume_command_finishes_it() {
    interrupt_then_resume(libc::SIGINT);
}

#[test]
fn sigterm_stops_a_run_whose_printed_resume_command_finishes_it() {
    interrupt_then_resume(libc::SIGTERM);
}

#[test]
fn resuming_a_no_cache_run_takes_nothing_from_the_cache() {
    let lab = Lab::new();
    // Everything is cached first.
    lab.harness(&run_args("held_in")).ok();
    let mut args = run_args("held_in");
    args.push("--no-cache");
    let run = lab.start(&args);
    wait_for(LIMIT, "a journaled trial", || {
        lab.journals().iter().any(|(_, n)| *n >= 1)
    });
    run.signal(libc::SIGINT);
    let out = run.finish(LIMIT);
    assert_eq!(out.code, 130, "{}", out.stderr);
    let mut args = resume_command(&out.stderr);
    args.extend(["--format".into(), "json".into()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let v = json(&lab.harness(&refs).ok());
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), TOTAL);
    let cached: Vec<&Value> = results
        .iter()
        .filter(|r| !r["cached_from"].is_null())
        .collect();
    assert!(cached.is_empty(), "{cached:#?}");
}

/// Every command that runs trials, aborted by a second signal while a sandbox is up: exit 130
/// and nothing left behind.
#[test]
fn a_second_signal_aborts_every_trial_running_command_and_leaves_nothing_behind() {
    let lab = Lab::new();
    let proposal = lab.repo.proposal(
        1,
        "louder",
        "main",
        &[("prompts/system.md", "Run the tests before you finish.\n")],
    );
    let main = lab.repo.rev("main");
    let demo_dir = lab.tmp.parent().unwrap().join("demo");
    let demo_dir = demo_dir.to_string_lossy().into_owned();
    let commands: Vec<Vec<&str>> = vec![
        run_args("held_in"),
        vec!["check", "--tasks", TASKS],
        vec!["validate", &proposal],
        vec!["evolve", "--rounds", "1"],
        vec!["mine"],
        vec!["propose"],
        vec!["report", "--final"],
        vec!["bisect", "--good", &main, "--bad", &main],
        vec!["tasks", "check", "-t", "word-count", "-t", "sales-total"],
        vec!["demo", &demo_dir],
    ];
    for (i, args) in commands.iter().enumerate() {
        let what = args.join(" ");
        let mut cmd = lab.start(args);
        wait_for(LIMIT, &format!("a sandbox of `{what}`"), || {
            !lab.sandboxes().is_empty()
        });
        cmd.signal(libc::SIGINT);
        wait_for(LIMIT, &format!("`{what}` to acknowledge"), || {
            cmd.stderr().contains("interrupted") || cmd.exited()
        });
        cmd.signal(if i % 2 == 0 {
            libc::SIGTERM
        } else {
            libc::SIGINT
        });
        let out = cmd.finish(LIMIT);
        assert_eq!(out.code, 130, "{what}: {}", out.stderr);
        lab.assert_clean_but_journal(&what);
        assert!(!out.stderr.contains("panicked"), "{what}: {}", out.stderr);
    }
}

/// The ids of containers of this test's runs: labelled with an owner pid among `pids`.
fn containers_of(pids: &[i32]) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            "label=git-harness.owner",
            "--format",
            "{{.ID}} {{.Label \"git-harness.owner\"}}",
        ])
        .output()
        .expect("docker ps");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|o| o.split('.').next())
                .and_then(|p| p.parse::<i32>().ok())
                .is_some_and(|p| pids.contains(&p))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn docker_runs_interrupted_or_killed_leave_no_container() {
    if !crate::support::sandbox::docker_engine_or_skip(
        "docker_runs_interrupted_or_killed_leave_no_container",
    ) {
        return;
    }
    let lab = Lab::new();
    let mut args = run_args("held_in");
    args.extend(["--runner", "docker"]);
    let mut pids = Vec::new();

    // SIGINT, then SIGTERM while trials run: both containers go.
    let run = lab.start(&args);
    pids.push(run.pid());
    wait_for(LIMIT, "a container", || !containers_of(&pids).is_empty());
    run.signal(libc::SIGINT);
    wait_for(LIMIT, "the acknowledgement", || {
        run.stderr().contains("interrupted")
    });
    run.signal(libc::SIGTERM);
    let out = run.finish(LIMIT);
    assert_eq!(out.code, 130, "{}", out.stderr);
    assert_eq!(containers_of(&pids), Vec::<String>::new());

    // kill -9 with a container up: the next command removes it, and the resume finishes.
    let run = lab.start(&args);
    pids.push(run.pid());
    wait_for(LIMIT, "a container", || !containers_of(&pids).is_empty());
    run.kill9();
    assert!(
        !containers_of(&pids).is_empty(),
        "the killed run's container"
    );
    // A recorded run drops the journals of killed runs that finished nothing: list anew.
    while let Some((id, _)) = lab.journals().first().cloned() {
        let out = lab.harness(&["run", "--resume", &id, "--runner", "docker"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    assert_eq!(containers_of(&pids), Vec::<String>::new());
    lab.assert_clean("after the docker resumes");
    lab.assert_nothing_executed_twice();
}

const HELD_IN_B: &str = "{log-time-window,repair-build-script,count-errors,sort-names-subdir}";
const VALIDATION_C: &str = "{decode-message,fizzbuzz-script,fix-slugify,top-ips}";

/// `kill -9` of `run` while its first sandbox is up, after 1, 3 and 5 journaled trials and as
/// soon as its ref exists; then the next command: every run is recorded once with every
/// trial, in the note once, and nothing ran twice.
#[test]
fn run_killed_at_many_moments_then_the_next_command_loses_nothing() {
    let lab = Lab::new();
    // (split, tasks, trials, moment): every round has trials that are not cached yet.
    let rounds: [(&str, &str, usize, Option<usize>); 5] = [
        ("held_in", TASKS, 2, Some(0)),
        ("held_in", HELD_IN_B, 2, Some(1)),
        ("validation", VALIDATION_C, 2, Some(3)),
        ("held_in", TASKS, 4, Some(5)),
        ("validation", VALIDATION_C, 4, None),
    ];
    for (split, tasks, trials, moment) in rounds {
        let total = 4 * trials;
        let trials_arg = trials.to_string();
        let args = [
            "run",
            "--split",
            split,
            "--tasks",
            tasks,
            "--trials",
            &trials_arg,
            "-j",
            "1",
        ];
        let run = lab.start(&args);
        match moment {
            Some(0) => wait_for(LIMIT, "a sandbox", || !lab.sandboxes().is_empty()),
            Some(k) => wait_for(LIMIT, "journaled trials", || {
                lab.journals().iter().any(|(_, n)| *n >= k)
            }),
            None => {
                let refs = lab.repo.root.join(".git/refs/harness/runs");
                let before = std::fs::read_dir(&refs).map(|r| r.count()).unwrap_or(0);
                wait_for(LIMIT, "the run ref", || {
                    std::fs::read_dir(&refs).map(|r| r.count()).unwrap_or(0) > before
                });
            }
        }
        run.kill9();
        let runs_before = lab.repo.runs().len();
        for (id, done) in lab.journals() {
            let out = lab.harness(&["run", "--resume", &id, "--format", "json"]);
            assert_eq!(out.code, 0, "moment {moment:?}: {}", out.stderr);
            let v = json(&out);
            let executed = v["executed"].as_u64().unwrap() as usize;
            if lab.repo.runs().len() == runs_before {
                // The ref was there: the resume finishes the record and runs nothing.
                assert_eq!(executed, 0, "moment {moment:?}");
            } else {
                assert!(executed + done <= total, "{executed} + {done} > {total}");
            }
            assert_eq!(v["results"].as_array().unwrap().len(), total);
        }
        // Also when nothing was left to resume: the next command sweeps.
        lab.harness(&["status"]).ok();
        let what = format!("moment {moment:?}");
        lab.assert_clean(&what);
        lab.assert_nothing_executed_twice();
        // Every recorded run is in the note of main exactly once per split.
        let note = lab.repo.note("main");
        let noted: Vec<&str> = note["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["run"].as_str().unwrap())
            .collect();
        for id in lab.repo.runs() {
            assert_eq!(
                noted.iter().filter(|n| **n == id).count(),
                1,
                "{what}: {id} in {noted:?}"
            );
        }
    }
}

/// `kill -9` of `validate` while its first sandbox is up, after two journaled trials and once
/// the parent's run is recorded; then `validate` again: it decides, reuses what the killed one
/// finished (nothing runs twice) and leaves no journal, temp dir or process.
#[test]
fn validate_killed_at_many_moments_then_validate_again_loses_nothing() {
    let lab = Lab::new();
    for (i, moment) in [Some(0), Some(2), None].into_iter().enumerate() {
        let p = lab.repo.proposal(
            i as u32 + 1,
            &format!("hint-{i}"),
            "main",
            &[(
                "prompts/system.md",
                &format!("Check your work before you finish ({i}).\n"),
            )],
        );
        let runs_before = lab.repo.runs().len();
        let cmd = lab.start(&["validate", &p]);
        match moment {
            Some(0) => wait_for(LIMIT, "a sandbox", || !lab.sandboxes().is_empty()),
            Some(k) => wait_for(LIMIT, "journaled trials", || {
                lab.journals().iter().any(|(_, n)| *n >= k)
            }),
            None => wait_for(LIMIT, "a recorded run", || {
                lab.repo.runs().len() > runs_before
            }),
        }
        cmd.kill9();
        let out = lab.harness(&["validate", &p, "--format", "json"]);
        assert!(
            [0, 1, 3].contains(&out.code),
            "moment {moment:?}: {}",
            out.stderr
        );
        let what = format!("validate, moment {moment:?}");
        lab.assert_clean(&what);
        lab.assert_nothing_executed_twice();
    }
}

/// `kill -9` of `promote` at many moments, then the next command: main is the old tip or the
/// merge, the index and files match it (`git status` is clean), no lock or marker is left.
#[test]
fn promote_killed_at_many_moments_never_leaves_a_stale_index_or_lock() {
    let lab = Lab::new();
    let mut promoted = 0;
    // Up to delays long enough for a promote on a loaded machine to finish: at least one kill
    // comes after the merge.
    for (i, delay_ms) in [
        0u64, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30, 50, 100, 200, 400, 800, 1600, 3200,
    ]
    .into_iter()
    .enumerate()
    {
        let p = lab.repo.proposal(
            i as u32 + 1,
            &format!("edit-{i}"),
            "main",
            &[("prompts/system.md", &format!("Edit number {i}.\n"))],
        );
        let before = lab.repo.rev("main");
        let cmd = lab.start(&["promote", &p, "--force", "--reason", "kill test"]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        cmd.kill9();
        lab.harness(&["status"]).ok();
        let after = lab.repo.rev("main");
        if after != before {
            promoted += 1;
            let parents = lab.repo.git(&["rev-list", "--parents", "-n1", "main"]);
            assert_eq!(parents.split_whitespace().nth(1), Some(before.as_str()));
        }
        let what = format!("promote killed after {delay_ms} ms");
        assert_eq!(lab.repo.git(&["status", "--porcelain"]), "", "{what}");
        assert_eq!(
            lab.repo.git(&["diff", "--cached", "--name-only", "HEAD"]),
            "",
            "{what}"
        );
        lab.assert_clean(&what);
    }
    assert!(promoted > 0, "no kill came late enough to promote anything");
}

/// Every state a `kill -9` inside the checkout after main moved can leave, made on disk: each
/// file of the promotion still old, already new, or truncated (the checkout opens files with
/// `O_TRUNC`, then writes), the index still the old main's, with or without the `index.lock`
/// the dead process was writing. The next command brings index and files to the merge; a file
/// that was already new must not keep its old index entry (`MM` in `git status`).
#[test]
fn a_promotion_killed_inside_its_checkout_is_finished_from_what_is_on_disk() {
    let lab = Lab::new();
    let repo = &lab.repo;
    let edited = "prompts/system.md";
    let added = "prompts/extra.md";
    let p = repo.proposal(
        1,
        "edit",
        "main",
        &[
            (edited, "An edited prompt.\n"),
            (added, "An added prompt.\n"),
        ],
    );
    let before = repo.rev("main");
    let old = repo.read(edited);
    let candidate = repo.rev(&format!("harness/proposals/{p}"));
    let merge = promotion_merge(repo, &before, &candidate);
    // (edited file, added file): `None` is absent.
    let files: [(&str, Option<&str>); 5] = [
        (&old, None),
        ("An edited prompt.\n", Some("An added prompt.\n")),
        ("An edited prompt.\n", None),
        (&old, Some("An added prompt.\n")),
        ("", Some("")),
    ];
    for (edited_text, added_text) in files {
        for lock in [None, Some(""), Some("DIRC")] {
            let what =
                format!("{edited}={edited_text:?} {added}={added_text:?} index.lock={lock:?}");
            repo.git(&["reset", "-q", "--hard", &before]);
            // The dead promotion: its marker, main moved, the checkout halfway.
            let marker = repo
                .root
                .join(".git/harness/promote-4194305.1-0000abcd.pending");
            std::fs::create_dir_all(marker.parent().unwrap()).unwrap();
            std::fs::write(
                &marker,
                format!(
                    "owner: 4194305.1\nrefname: refs/heads/main\nfrom: {before}\nto: {merge}\n"
                ),
            )
            .unwrap();
            repo.git(&["update-ref", "refs/heads/main", &merge, &before]);
            repo.write(edited, edited_text);
            if let Some(text) = added_text {
                repo.write(added, text);
            }
            if let Some(text) = lock {
                std::fs::write(repo.root.join(".git/index.lock"), text).unwrap();
            }

            lab.harness(&["status"]).ok();
            assert_eq!(repo.rev("main"), merge, "{what}");
            assert_eq!(repo.git(&["status", "--porcelain"]), "", "{what}");
            assert_eq!(
                repo.git(&["diff", "--cached", "--name-only", "HEAD"]),
                "",
                "{what}"
            );
            assert_eq!(repo.read(edited), "An edited prompt.\n", "{what}");
            assert_eq!(repo.read(added), "An added prompt.\n", "{what}");
            lab.assert_clean(&what);
        }
    }
}

/// Every state a `kill -9` inside the retirement of the promoted branch can leave (main has
/// moved, the checkout followed): the ref transaction's locks (the branch's empty, the promoted
/// ref's empty or holding the commit), the branch deleted or not, the promoted ref written or
/// not. The next command finishes the retirement and leaves no lock.
#[test]
fn a_promotion_killed_while_retiring_its_branch_is_finished_from_what_is_on_disk() {
    let lab = Lab::new();
    let repo = &lab.repo;
    let p = repo.proposal(1, "edit", "main", &[("prompts/system.md", "An edit.\n")]);
    let branch = format!("refs/heads/harness/proposals/{p}");
    let target = format!("refs/harness/promoted/{p}");
    let before = repo.rev("main");
    let commit = repo.rev(&branch);
    let merge = promotion_merge(repo, &before, &commit);
    repo.git(&["reset", "-q", "--hard", &merge]);
    let git = repo.root.join(".git");
    // The marker of a dead owner's promotion that was retiring the branch.
    let write_marker = || {
        std::fs::create_dir_all(git.join("harness")).unwrap();
        std::fs::write(
            git.join("harness/promote-4194305.1-0000abcd.pending"),
            format!(
                "owner: 4194305.1\nrefname: refs/heads/main\nfrom: {before}\nto: {merge}\n\
                 retire:\n  branch: {branch}\n  commit: {commit}\n  target: {target}\n"
            ),
        )
        .unwrap();
    };
    for branch_left in [true, false] {
        for target_written in [false, true] {
            for (branch_lock, target_lock) in [
                (None, None),
                (Some(""), None),
                (Some(""), Some("")),
                (None, Some(&commit[..7])),
                (Some(""), Some(&format!("{commit}\n")[..])),
            ] {
                let what = format!(
                    "branch left {branch_left}, promoted ref written {target_written}, locks {branch_lock:?} {target_lock:?}"
                );
                let set = |name: &str, on: bool| {
                    if on {
                        repo.git(&["update-ref", name, &commit]);
                    } else if repo
                        .git_in(&repo.root, &["rev-parse", "-q", "--verify", name])
                        .code
                        == 0
                    {
                        repo.git(&["update-ref", "-d", name]);
                    }
                };
                set(&branch, branch_left);
                set(&target, target_written);
                for (name, lock) in [(&branch, branch_lock), (&target, target_lock)] {
                    if let Some(text) = lock {
                        let path = git.join(format!("{name}.lock"));
                        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                        std::fs::write(path, text).unwrap();
                    }
                }
                write_marker();

                lab.harness(&["status"]).ok();
                assert_eq!(repo.rev(&target), commit, "{what}");
                assert_ne!(
                    repo.git_in(&repo.root, &["rev-parse", "-q", "--verify", &branch])
                        .code,
                    0,
                    "{what}: the branch is left"
                );
                assert_eq!(repo.rev("main"), merge, "{what}");
                assert_eq!(repo.git(&["status", "--porcelain"]), "", "{what}");
                lab.assert_clean(&what);
            }
        }
    }
    // The branch checked out in another worktree stays an open branch (as `promote` keeps
    // it), with no promoted ref beside it; checked out here and clean, the worktree goes to
    // main and the branch is retired.
    let elsewhere = repo.root.parent().unwrap().join("elsewhere");
    for (here, retired) in [(false, false), (true, true)] {
        let what = if here {
            "checked out here"
        } else {
            "checked out elsewhere"
        };
        repo.git(&["update-ref", &branch, &commit]);
        if repo
            .git_in(&repo.root, &["rev-parse", "-q", "--verify", &target])
            .code
            == 0
        {
            repo.git(&["update-ref", "-d", &target]);
        }
        if here {
            repo.git(&["worktree", "remove", "--force", elsewhere.to_str().unwrap()]);
            repo.git(&["switch", "-q", &format!("harness/proposals/{p}")]);
        } else {
            repo.git(&[
                "worktree",
                "add",
                "-q",
                elsewhere.to_str().unwrap(),
                // The short name: a full ref name would check out a detached HEAD.
                &format!("harness/proposals/{p}"),
            ]);
        }
        std::fs::write(git.join(format!("{branch}.lock")), "").unwrap();
        write_marker();
        lab.harness(&["status"]).ok();
        let target_at = repo.git_in(&repo.root, &["rev-parse", "-q", "--verify", &target]);
        assert_eq!(target_at.code == 0, retired, "{what}");
        let branch_at = repo.git_in(&repo.root, &["rev-parse", "-q", "--verify", &branch]);
        assert_eq!(branch_at.code != 0, retired, "{what}");
        assert_eq!(
            repo.git(&["symbolic-ref", "HEAD"]).trim(),
            "refs/heads/main",
            "{what}"
        );
        assert_eq!(repo.git(&["status", "--porcelain"]), "", "{what}");
        lab.assert_clean(what);
    }
}

/// `kill -9` of `evolve` at moments of its round (a sandbox of the mining run up, once a
/// proposal branch exists, once a validation run is recorded, while it promotes), then the same
/// `evolve` again: it finishes the round, executes nothing twice and leaves no journal, lock,
/// marker, temp dir or process; main is clean and checked out.
#[test]
fn evolve_killed_during_a_round_then_evolve_again_leaves_nothing_stale() {
    let lab = Lab::new();
    lab.repo
        .edit_experiment(|t| t.replace("trials: 2", "trials: 1"));
    let args = [
        "evolve",
        "--rounds",
        "1",
        "-k",
        "1",
        "--proposer",
        "catalog",
    ];
    let proposals = |lab: &Lab| {
        lab.repo
            .git(&[
                "for-each-ref",
                "--format=%(refname)",
                "refs/heads/harness/proposals/",
            ])
            .lines()
            .count()
    };
    #[derive(Debug, Clone, Copy)]
    enum Moment {
        Sandbox,
        Proposal,
        RecordedRuns(usize),
        Promoting,
    }
    for moment in [
        Moment::Sandbox,
        Moment::Proposal,
        Moment::RecordedRuns(2),
        Moment::Promoting,
    ] {
        let main = lab.repo.rev("main");
        let runs_before = lab.repo.runs().len();
        let mut cmd = lab.start(&args);
        let markers = lab.repo.root.join(".git/harness");
        match moment {
            Moment::Sandbox => wait_for(LIMIT, "a sandbox", || !lab.sandboxes().is_empty()),
            Moment::Proposal => wait_for(LIMIT, "a proposal branch", || proposals(&lab) > 0),
            Moment::RecordedRuns(n) => wait_for(LIMIT, "recorded runs", || {
                lab.repo.runs().len() >= runs_before + n
            }),
            // The round may accept nothing: then the kill comes after the end.
            Moment::Promoting => wait_for(LIMIT, "a promotion or the end", || {
                lab.repo.rev("main") != main
                    || std::fs::read_dir(&markers).is_ok_and(|rd| {
                        rd.flatten()
                            .any(|e| e.file_name().to_string_lossy().ends_with(".pending"))
                    })
                    || cmd.exited()
            }),
        }
        cmd.kill9();
        let what = format!("evolve killed at {moment:?}");
        let out = lab.harness(&args);
        assert_eq!(out.code, 0, "{what}: {}", out.stderr);
        lab.harness(&["status"]).ok();
        assert_eq!(lab.repo.git(&["status", "--porcelain"]), "", "{what}");
        assert_eq!(
            lab.repo.git(&["symbolic-ref", "HEAD"]).trim(),
            "refs/heads/main",
            "{what}"
        );
        lab.assert_clean(&what);
        lab.assert_nothing_executed_twice();
    }
}

#[test]
fn a_stale_main_lock_is_named_as_such_with_the_fix() {
    let lab = Lab::new();
    let p = lab
        .repo
        .proposal(1, "edit", "main", &[("prompts/system.md", "An edit.\n")]);
    let lock = lab.repo.root.join(".git/refs/heads/main.lock");
    let f = std::fs::File::create(&lock).unwrap();
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    drop(f);
    let out = lab
        .harness(&["promote", &p, "--force", "--reason", "lock test"])
        .code(2);
    assert!(
        out.stderr.contains("stale lock file") && out.stderr.contains("main.lock"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("rm {}", lock.display())),
        "{}",
        out.stderr
    );
    std::fs::remove_file(&lock).unwrap();
    lab.harness(&["promote", &p, "--force", "--reason", "lock test"])
        .ok();
}

/// A panic inside `check` is "cannot test" (125) for `git bisect run`, never Rust's 101.
#[test]
fn a_panic_inside_check_exits_125() {
    let lab = Lab::new();
    let out = lab.harness_env(
        &["check", "--tasks", TASKS],
        ("GIT_HARNESS_DEBUG_PANIC", "1"),
    );
    assert_eq!(out.code, 125, "{}", out.stderr);
    assert!(out.stderr.contains("panicked"), "{}", out.stderr);
    lab.assert_clean("after the panic");
}

impl Lab {
    fn harness_env(&self, args: &[&str], (k, v): (&str, &str)) -> Out {
        let o = self.cmd(args).env(k, v).output().unwrap();
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// A run killed while it held the lock of its own ref (between taking and releasing it): the
/// resume takes the journal over from the dead owner, drops that lock and records the run.
#[test]
fn a_run_ref_lock_left_by_a_killed_run_does_not_block_its_resume() {
    let lab = Lab::new();
    let args = [
        "run", "--split", "held_in", "--tasks", TASKS, "--trials", "1", "-j", "1",
    ];
    let run = lab.start(&args);
    wait_for(LIMIT, "journaled trials", || {
        lab.journals().iter().any(|(_, n)| *n >= 1)
    });
    run.kill9();
    let journals = lab.journals();
    assert_eq!(journals.len(), 1, "{journals:?}");
    let id = journals[0].0.clone();
    // The moment of the kill that a test cannot hit on purpose: the ref's lock is there.
    let lock = lab
        .repo
        .root
        .join(format!(".git/refs/harness/runs/{id}.lock"));
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    std::fs::write(&lock, b"").unwrap();
    let out = lab.harness(&["run", "--resume", &id, "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!lock.exists());
    assert!(lab.repo.runs().contains(&id), "{:?}", lab.repo.runs());
    assert_eq!(json(&out)["results"].as_array().unwrap().len(), 4);
}

/// The start time of a live process (`/proc/<pid>/stat` field 22), as sandbox dir names carry it.
fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(19).unwrap().parse().unwrap()
}

/// A process left in a dead owner's sandbox dir (bubblewrap's sandbox child can outlive a
/// kill -9: it names the dir in its command line) or working in one is killed by the next run,
/// and the dir removed; a live owner's process and dir are left alone.
#[test]
fn the_next_run_kills_what_a_dead_owners_sandbox_left() {
    let lab = Lab::new();
    let mut dead_owner = Command::new("sleep").arg("30").spawn().unwrap();
    let owner = format!("{}.{}", dead_owner.id(), start_time(dead_owner.id()));
    dead_owner.kill().unwrap();
    dead_owner.wait().unwrap();
    let me = std::process::id();
    let live_owner = format!("{me}.{}", start_time(me));
    let dead_dir = lab.tmp.join(format!("git-harness-t0.{owner}.a1"));
    let live_dir = lab.tmp.join(format!("git-harness-t0.{live_owner}.b2"));
    for d in [&dead_dir, &live_dir] {
        std::fs::create_dir_all(d.join("tmp")).unwrap();
    }
    let naming = |dir: &std::path::Path| {
        Command::new("python3")
            .args(["-c", "import time; time.sleep(600)", "--bind"])
            .arg(dir.join("tmp"))
            .arg("/tmp")
            .spawn()
            .unwrap()
    };
    let mut named = naming(&dead_dir);
    let mut inside = Command::new("sleep")
        .arg("600")
        .current_dir(&dead_dir)
        .spawn()
        .unwrap();
    let mut live = naming(&live_dir);
    // python3 has replaced the fork's image once its command line is its own.
    wait_for(LIMIT, "the stand-ins", || {
        [named.id(), live.id()].iter().all(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.windows(6).any(|w| w == b"--bind"))
        })
    });
    let out = lab.harness(&[
        "run",
        "--tasks",
        "word-count",
        "--trials",
        "1",
        "--split",
        "held_in",
    ]);
    assert!([0, 1].contains(&out.code), "{}", out.stderr);
    // The run killed them before it started: they end at once (a while for a loaded machine).
    let start = std::time::Instant::now();
    let mut ended = || named.try_wait().unwrap().is_some() && inside.try_wait().unwrap().is_some();
    while !ended() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let dead_ended = ended();
    let live_runs = live.try_wait().unwrap().is_none();
    for c in [&mut named, &mut inside, &mut live] {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert!(dead_ended, "the dead owner's processes are killed");
    assert!(!dead_dir.exists(), "the dead owner's dir is removed");
    assert!(live_runs, "a live owner's process runs on");
    assert!(live_dir.exists(), "a live owner's dir stays");
    std::fs::remove_dir_all(&live_dir).unwrap();
}

/// The merge `promote` makes of proposal `commit` into `main` at `before`: the proposal's tree,
/// both as parents.
fn promotion_merge(repo: &Repo, before: &str, commit: &str) -> String {
    let tree = repo.rev(&format!("{commit}^{{tree}}"));
    repo.git(&[
        "commit-tree",
        &tree,
        "-p",
        before,
        "-p",
        commit,
        "-m",
        "Promote 1/edit",
    ])
    .trim()
    .to_string()
}
