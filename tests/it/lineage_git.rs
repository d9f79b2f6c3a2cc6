//! What git-harness writes is plain git: trailers that real git parses, and refs and notes that
//! travel with `git push` / `git clone` + `git fetch` of the documented refspecs.

use crate::support::repo::Repo;
use git_harness::lineage::trailers::{self, CommitMessage};
use git_harness::lineage::{self, RunSummary, keys};

const ALL_KEYS: [&str; 12] = [
    keys::SURFACE,
    keys::CLUSTER,
    keys::EVIDENCE,
    keys::PARENT,
    keys::PROPOSER,
    keys::ROUND,
    keys::VERDICT,
    keys::GATE,
    keys::HELD_IN,
    keys::VALIDATION,
    keys::OVERRIDE,
    keys::PROPOSAL,
];

/// A value for each key, with the characters evidence tends to contain.
fn value_of(key: &str, parent: &str) -> String {
    match key {
        keys::SURFACE => "middleware/runtime_control.yaml".into(),
        keys::CLUSTER => "timeout/unverified/repeated-command".into(),
        keys::EVIDENCE => "count-errors#0: exit 1, \"expected 3 got 4\"; word-count#1".into(),
        keys::PARENT => parent.into(),
        keys::PROPOSER => "catalog (rule loop-guard)".into(),
        keys::ROUND => "3".into(),
        keys::VERDICT => "accept".into(),
        keys::GATE => "strict".into(),
        keys::HELD_IN => "7/24 -> 11/24 (+4)".into(),
        keys::VALIDATION => "10/16 -> 10/16 (+0)".into(),
        keys::OVERRIDE => "agreed in review: see #12".into(),
        keys::PROPOSAL => "harness/proposals/3/loop-guard".into(),
        _ => unreachable!("unknown key {key}"),
    }
}

#[test]
fn trailers_round_trip_through_real_git() {
    let r = Repo::demo();
    let repo = r.git2();
    let main = lineage::main_commit(&repo).expect("main");
    let parent = main.id().to_string();
    let mut msg = CommitMessage::new("Stop repeating the same failing command").body(
        "Why: in 5 held-in trials the agent re-ran a failing command.\n\n\
         Evidence:\n  count-errors#0: ran `wc -l` 9 times\n\n\
         Regression risk: low.",
    );
    for key in ALL_KEYS {
        msg = msg.trailer(key, value_of(key, &parent));
    }
    // A multi-line value is folded onto one line rather than breaking the block.
    msg = msg.trailer(keys::EVIDENCE, "first line\nsecond line");
    let p = lineage::create_proposal(
        &repo,
        &main,
        3,
        "loop-guard",
        &[(
            "prompts/execution.md".into(),
            Some("Never repeat a failing command unchanged.\n".into()),
        )],
        &msg,
    )
    .expect("create proposal");
    let rev = p.commit.to_string();

    let mut expected: Vec<(String, String)> = ALL_KEYS
        .iter()
        .map(|k| (k.to_string(), value_of(k, &parent)))
        .collect();
    expected.push((keys::EVIDENCE.into(), "first line second line".into()));

    // git interpret-trailers --parse on the raw message.
    let raw = r.git(&["cat-file", "commit", &rev]);
    let message = raw.split_once("\n\n").expect("headers").1;
    let mut cmd = std::process::Command::new("git");
    cmd.args(["interpret-trailers", "--parse"])
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn git interpret-trailers");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(message.as_bytes())
            .expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let parsed = parse_lines(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(parsed, expected, "git interpret-trailers --parse");

    // git log --format=%(trailers).
    let shown = r.git(&["log", "-1", "--format=%(trailers)", &rev]);
    assert_eq!(parse_lines(&shown), expected, "git log %(trailers)");
    let one = r.git(&[
        "log",
        "-1",
        "--format=%(trailers:key=Harness-Round,valueonly)",
        &rev,
    ]);
    assert_eq!(one.trim(), "3");

    // Our own parser agrees with git, and the body survives without the trailer block.
    let back = CommitMessage::parse(message).expect("parse");
    assert_eq!(back.trailers, expected);
    assert_eq!(back.subject, "Stop repeating the same failing command");
    assert!(
        back.body.ends_with("Regression risk: low."),
        "{}",
        back.body
    );
    assert_eq!(
        trailers::get(&back.trailers, keys::EVIDENCE),
        Some("first line second line")
    );

    // The proposal read back through the library carries the same message.
    let listed = lineage::resolve_proposal(&repo, "3/loop-guard").expect("resolve");
    assert_eq!(listed.message.trailers, expected);
    assert_eq!(listed.parent, Some(main.id()));
}

/// `Key: value` lines of git's trailer output.
fn parse_lines(s: &str) -> Vec<(String, String)> {
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap_or((l, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn trailers_survive_a_body_that_ends_in_colon_lines() {
    // A body whose last paragraph looks like `Key: value` must not swallow or hide our block.
    let r = Repo::demo();
    let repo = r.git2();
    let main = lineage::main_commit(&repo).expect("main");
    let msg = CommitMessage::new("Tighten the bootstrap prompt")
        .body("Why: because.\nRisk: low.")
        .trailer(keys::SURFACE, "prompts/bootstrap.md")
        .trailer(keys::ROUND, "1");
    let p = lineage::create_proposal(
        &repo,
        &main,
        1,
        "bootstrap",
        &[("prompts/bootstrap.md".into(), Some("Look first.\n".into()))],
        &msg,
    )
    .expect("proposal");
    let shown = r.git(&["log", "-1", "--format=%(trailers)", &p.commit.to_string()]);
    assert_eq!(
        parse_lines(&shown),
        [
            (
                keys::SURFACE.to_string(),
                "prompts/bootstrap.md".to_string()
            ),
            (keys::ROUND.to_string(), "1".to_string())
        ]
    );
    let back = lineage::resolve_proposal(&repo, "1/bootstrap").expect("resolve");
    assert_eq!(back.message.body, "Why: because.\nRisk: low.");
}

/// Every ref and note of the source, as `(refname, oid)` lines.
fn harness_refs(r: &Repo, dir: &std::path::Path) -> String {
    r.git_in(
        dir,
        &[
            "for-each-ref",
            "--format=%(refname) %(objectname)",
            "refs/harness/",
            "refs/notes/",
            "refs/heads/",
        ],
    )
    .ok()
    .stdout
}

#[test]
fn clone_and_fetch_bring_every_harness_ref_and_note() {
    let r = Repo::demo();
    let fp = r.fingerprint();
    // Proposals: one promoted, one open, one rejected; a run; notes on main and a proposal.
    let a = r.propose(1, "a", "prompts/verification.md", "Check it.");
    r.accept(&a);
    r.harness(&["promote", "1/a"]).ok();
    let open = r.propose(2, "open-one", "prompts/bootstrap.md", "Run ls first.");
    let rejected = r.propose(2, "rejected-one", "prompts/on_tool_error.md", "Read it.");
    {
        let repo = r.git2();
        lineage::reject_proposal(&repo, &rejected, "gate rejected").expect("reject");
        let main = lineage::main_commit(&repo).expect("main").id();
        lineage::write_run(
            &repo,
            "r-1",
            Some(main),
            &[
                ("run.yaml".into(), b"id: r-1\n".to_vec()),
                (
                    "trials/count-errors-0/result.yaml".into(),
                    b"pass: true\n".to_vec(),
                ),
            ],
            "Run r-1\n",
        )
        .expect("run");
        lineage::update_note(&repo, main, |n| {
            n.runs.push(RunSummary {
                run: "r-1".into(),
                split: "held_in".into(),
                fingerprint: fp.clone(),
                passes: 9,
                trials: 40,
                infra_errors: 1,
                tokens: 1234,
                cost_usd: 0.0,
                partial: false,
            })
        })
        .expect("note");
        r.record(&open, lineage::Verdict::Reject);
    }
    let source = harness_refs(&r, &r.root);
    for expected in [
        "refs/heads/main ",
        "refs/heads/harness/proposals/2/open-one ",
        "refs/harness/rejected/2/rejected-one ",
        "refs/harness/runs/r-1 ",
        "refs/notes/harness ",
    ] {
        assert!(source.contains(expected), "{expected} missing in\n{source}");
    }

    // Push everything to a bare remote with the documented refspecs.
    let remote = r.tmp.path().join("remote.git");
    r.git_in(
        r.tmp.path(),
        &["init", "-q", "--bare", "-b", "main", "remote.git"],
    )
    .ok();
    r.git(&["remote", "add", "origin", &remote.to_string_lossy()]);
    r.git(&[
        "push",
        "-q",
        "origin",
        "refs/harness/*:refs/harness/*",
        "refs/notes/harness:refs/notes/harness",
        "refs/heads/*:refs/heads/*",
    ]);

    // Clone, then fetch the harness refs and notes.
    let clone = r.tmp.path().join("clone");
    r.git_in(
        r.tmp.path(),
        &["clone", "-q", &remote.to_string_lossy(), "clone"],
    )
    .ok();
    r.git_in(
        &clone,
        &[
            "fetch",
            "-q",
            "origin",
            "refs/harness/*:refs/harness/*",
            "refs/notes/harness:refs/notes/harness",
        ],
    )
    .ok();
    // Branches arrive as remote-tracking branches; make the proposal branch local as a user
    // would, then every ref matches the source.
    r.git_in(
        &clone,
        &[
            "branch",
            "-q",
            "harness/proposals/2/open-one",
            "origin/harness/proposals/2/open-one",
        ],
    )
    .ok();
    assert_eq!(harness_refs(&r, &clone), source);

    // Notes are readable by git and by the clone's git-harness.
    let main = r.rev("main");
    let note = r
        .git_in(&clone, &["notes", "--ref=harness", "show", &main])
        .ok()
        .stdout;
    assert!(note.contains("run: r-1"), "{note}");
    let run_file = r
        .git_in(
            &clone,
            &[
                "show",
                "refs/harness/runs/r-1:trials/count-errors-0/result.yaml",
            ],
        )
        .ok()
        .stdout;
    assert_eq!(run_file, "pass: true\n");
    // The run ref brings the evaluated harness commit along.
    let run_parent = r
        .git_in(&clone, &["rev-parse", "refs/harness/runs/r-1^"])
        .ok()
        .stdout;
    assert_eq!(run_parent.trim(), main);

    let in_clone = |args: &[&str]| r.harness_in(&clone, args).ok().stdout;
    let normalise = |s: &str| s.to_string();
    assert_eq!(
        normalise(&in_clone(&["log", "--all"])),
        normalise(&r.harness(&["log", "--all"]).ok().stdout)
    );
    assert_eq!(
        in_clone(&["status"]),
        r.harness(&["status"]).ok().stdout,
        "status of the clone equals the source's"
    );
    let show = in_clone(&["show", "2/open-one"]);
    assert!(show.contains("REJECT (strict gate)"), "{show}");
    let show = in_clone(&["show", "2/rejected-one"]);
    assert!(
        show.contains("(rejected, refs/harness/rejected/2/rejected-one)"),
        "{show}"
    );
}

#[test]
fn concurrent_note_writers_lose_nothing() {
    // The first writers race to create refs/notes/harness; later ones to move it.
    for _ in 0..5 {
        let r = Repo::demo();
        let main = lineage::main_commit(&r.git2()).expect("main").id();
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let root = r.root.clone();
                std::thread::spawn(move || {
                    let repo = git2::Repository::open(root).expect("open");
                    for i in 0..5 {
                        lineage::update_note(&repo, main, |n| {
                            n.runs.push(RunSummary {
                                run: format!("t{t}-{i}"),
                                split: "held_in".into(),
                                fingerprint: "f".into(),
                                passes: 0,
                                trials: 1,
                                infra_errors: 0,
                                tokens: 0,
                                cost_usd: 0.0,
                                partial: false,
                            })
                        })
                        .expect("update note");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        let note = lineage::read_note(&r.git2(), main).expect("note");
        assert_eq!(note.runs.len(), 20, "a note update was lost");
    }
}

#[test]
fn concurrent_creates_of_one_ref_have_one_winner() {
    // Two proposers creating the same proposal branch, or two runs with the same id: one wins,
    // the other is told the ref exists; neither overwrites the other.
    for _ in 0..10 {
        let r = Repo::demo();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let root = r.root.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let repo = git2::Repository::open(root).expect("open");
                    let main = lineage::main_commit(&repo).expect("main");
                    let msg = CommitMessage::new(format!("Proposal of writer {t}"));
                    let change = ("prompts/bootstrap.md".to_string(), Some(format!("{t}\n")));
                    barrier.wait();
                    let p = lineage::create_proposal(&repo, &main, 1, "same", &[change], &msg)
                        .map(|p| p.commit);
                    let run = lineage::write_run(
                        &repo,
                        "same-run",
                        None,
                        &[("run.yaml".into(), format!("writer: {t}\n").into_bytes())],
                        &format!("Run of writer {t}\n"),
                    );
                    (p, run)
                })
            })
            .collect();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        let proposals: Vec<_> = results
            .iter()
            .filter_map(|(p, _)| p.as_ref().ok())
            .collect();
        assert_eq!(proposals.len(), 1, "exactly one proposal branch created");
        assert_eq!(r.rev("harness/proposals/1/same"), proposals[0].to_string());
        for (p, _) in &results {
            if let Err(e) = p {
                assert!(e.to_string().contains("already exists"), "{e}");
                assert_eq!(e.exit_code(), 2);
            }
        }
        let runs: Vec<_> = results
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .collect();
        assert_eq!(runs.len(), 1, "exactly one run ref created");
        assert_eq!(r.rev("refs/harness/runs/same-run"), runs[0].to_string());
    }
}
