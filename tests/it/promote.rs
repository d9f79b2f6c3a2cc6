//! `git harness promote`: only with an accepting record for exactly this candidate, main and
//! experiment; `--force --reason` overrides and says so; a dirty worktree is refused; two
//! promotes racing on one main never lose a merge.

use std::sync::{Arc, Barrier};

use crate::support::repo::Repo;
use git_harness::lineage::{self, Verdict, keys, trailers};
use git_harness::workspace::Workspace;

fn trailers_of(r: &Repo, rev: &str) -> Vec<(String, String)> {
    let msg = r.git(&["log", "-1", "--format=%B", rev]);
    trailers::parse(&msg).expect("trailers")
}

fn get<'a>(t: &'a [(String, String)], key: &str) -> Option<&'a str> {
    trailers::get(t, key)
}

#[test]
fn promote_without_a_record_fails_with_a_hint() {
    let r = Repo::demo();
    let p = r.propose(1, "verify", "prompts/verification.md", "Check it.");
    let main_before = r.rev("main");
    let run = r.harness(&["promote", "1/verify"]);
    assert_eq!(run.code, 1);
    insta::assert_snapshot!("promote_no_record", r.snapshot(&run));
    assert_eq!(r.rev("main"), main_before, "main must not move");
    assert_eq!(r.rev("harness/proposals/1/verify"), p.commit.to_string());
}

#[test]
fn promote_with_a_rejecting_record_fails() {
    let r = Repo::demo();
    let p = r.propose(1, "verify", "prompts/verification.md", "Check it.");
    r.record(&p, Verdict::Reject);
    let main_before = r.rev("main");
    let run = r.harness(&["promote", "1/verify"]);
    assert_eq!(run.code, 1);
    insta::assert_snapshot!("promote_rejecting_record", r.snapshot(&run));
    assert_eq!(r.rev("main"), main_before);
}

#[test]
fn a_record_for_another_experiment_does_not_count() {
    let r = Repo::demo();
    let p = r.propose(1, "verify", "prompts/verification.md", "Check it.");
    let rec = r.accept(&p);
    // Re-split with another seed: the fingerprint changes, the record no longer applies.
    r.harness(&["split", "--seed", "99"]).ok();
    assert_ne!(r.fingerprint(), rec.fingerprint);
    let run = r.harness(&["promote", "1/verify"]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr.contains("validate 1/verify` again"),
        "{}",
        run.stderr
    );
}

#[test]
fn promote_with_an_accepting_record_merges_with_the_verdict() {
    let r = Repo::demo();
    let p = r.propose(1, "verify", "prompts/verification.md", "Check it.");
    r.accept(&p);
    let main_before = r.rev("main");
    let run = r.harness(&["promote", "1/verify"]);
    insta::assert_snapshot!("promote_accept", r.snapshot(&run));
    assert_eq!(run.code, 0);

    let parents = r.git(&["log", "-1", "--format=%P", "main"]);
    let parents: Vec<&str> = parents.split_whitespace().collect();
    assert_eq!(parents, [main_before.as_str(), &p.commit.to_string()]);
    let t = trailers_of(&r, "main");
    assert_eq!(get(&t, keys::VERDICT), Some("accept"));
    assert_eq!(get(&t, keys::GATE), Some("strict"));
    assert_eq!(get(&t, keys::HELD_IN), Some("7/40 -> 10/40 (+3)"));
    assert_eq!(get(&t, keys::VALIDATION), Some("11/24 -> 13/24 (+2)"));
    assert_eq!(get(&t, keys::PROPOSAL), Some("harness/proposals/1/verify"));
    assert_eq!(get(&t, keys::SURFACE), Some("prompts/verification.md"));
    assert_eq!(get(&t, keys::PARENT), Some(main_before.as_str()));
    assert_eq!(get(&t, keys::OVERRIDE), None);
    insta::assert_snapshot!(
        "promote_accept_message",
        r.normalise(&r.git(&["log", "-1", "--format=%B", "main"]))
    );

    // The branch is done, the worktree follows main, the proposal's content is on main.
    let branch = r.git_in(
        &r.root,
        &["rev-parse", "--verify", "-q", "harness/proposals/1/verify"],
    );
    assert_ne!(branch.code, 0, "the proposal branch is deleted");
    assert_eq!(r.git(&["status", "--porcelain"]), "");
    let file = std::fs::read_to_string(r.root.join("prompts/verification.md")).expect("read");
    assert!(file.ends_with("Check it.\n"));
    // And it is in log as v2.
    let log = r.harness(&["log"]).ok();
    assert!(log.stdout.contains("v2 "), "{}", log.stdout);
}

#[test]
fn promote_of_a_stale_proposal_merges_in_memory() {
    // Two proposals on the same main touching different files: after the first is promoted,
    // the second is re-validated against the new main and promoted as a real merge.
    let r = Repo::demo();
    let a = r.propose(1, "a", "prompts/verification.md", "Check it.");
    let b = r.propose(1, "b", "prompts/bootstrap.md", "Run ls first.");
    r.accept(&a);
    r.accept(&b);
    r.harness(&["promote", "1/a"]).ok();
    let run = r.harness(&["promote", "1/b"]);
    assert_eq!(run.code, 1, "{run:#?}");
    insta::assert_snapshot!("promote_main_moved", r.snapshot(&run));
    r.accept(&b);
    r.harness(&["promote", "1/b"]).ok();
    let tree = r.git(&["ls-tree", "-r", "main", "prompts/"]);
    let v = r.git(&["show", "main:prompts/verification.md"]);
    let bs = r.git(&["show", "main:prompts/bootstrap.md"]);
    assert!(v.ends_with("Check it.\n"), "{tree}");
    assert!(bs.ends_with("Run ls first.\n"));
    assert_eq!(r.git(&["status", "--porcelain"]), "");
}

#[test]
fn a_conflicting_proposal_is_refused() {
    let r = Repo::demo();
    let a = r.propose(1, "a", "prompts/verification.md", "Check it.");
    let b = r.propose(1, "b", "prompts/verification.md", "Check it twice.");
    r.accept(&a);
    r.harness(&["promote", "1/a"]).ok();
    r.accept(&b);
    let main_before = r.rev("main");
    let run = r.harness(&["promote", "1/b"]);
    insta::assert_snapshot!("promote_conflict", r.snapshot(&run));
    assert_eq!(run.code, 1);
    assert_eq!(r.rev("main"), main_before);
    assert_eq!(r.rev("harness/proposals/1/b"), b.commit.to_string());
    assert_eq!(r.git(&["status", "--porcelain"]), "");
}

#[test]
fn force_with_reason_promotes_and_records_the_override() {
    let r = Repo::demo();
    let p = r.propose(1, "verify", "prompts/verification.md", "Check it.");
    let main_before = r.rev("main");
    let run = r.harness(&[
        "promote",
        "1/verify",
        "--force",
        "--reason",
        "hotfix agreed in review",
    ]);
    insta::assert_snapshot!("promote_force", r.snapshot(&run));
    assert_eq!(run.code, 0);
    let parents = r.git(&["log", "-1", "--format=%P", "main"]);
    assert_eq!(
        parents.split_whitespace().collect::<Vec<_>>(),
        [main_before.as_str(), &p.commit.to_string()]
    );
    let t = trailers_of(&r, "main");
    assert_eq!(get(&t, keys::OVERRIDE), Some("hotfix agreed in review"));
    assert_eq!(get(&t, keys::VERDICT), Some("none"));
    // `log` shows the override.
    let log = r.harness(&["log"]).ok();
    assert!(
        log.stdout.contains("OVERRIDE: hotfix agreed in review"),
        "{}",
        log.stdout
    );
}

#[test]
fn force_needs_a_reason_and_reason_needs_force() {
    let r = Repo::demo();
    r.propose(1, "verify", "prompts/verification.md", "Check it.");
    let main_before = r.rev("main");
    let run = r.harness(&["promote", "1/verify", "--force"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("--reason"), "{}", run.stderr);
    let run = r.harness(&["promote", "1/verify", "--reason", "x"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("--force"), "{}", run.stderr);
    assert_eq!(r.rev("main"), main_before);
}

#[test]
fn a_dirty_worktree_is_refused() {
    let r = Repo::demo();
    let p = r.propose(1, "verify", "prompts/verification.md", "Check it.");
    r.accept(&p);
    let main_before = r.rev("main");
    std::fs::write(r.root.join("prompts/system.md"), "edited by hand\n").expect("write");
    let run = r.harness(&["promote", "1/verify"]);
    insta::assert_snapshot!("promote_dirty", r.snapshot(&run));
    assert_eq!(run.code, 2);
    assert_eq!(r.rev("main"), main_before);
    // The user's edit is untouched; staged changes count as dirty too.
    assert_eq!(
        std::fs::read_to_string(r.root.join("prompts/system.md")).expect("read"),
        "edited by hand\n"
    );
    r.git(&["add", "prompts/system.md"]);
    let run = r.harness(&["promote", "1/verify"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert_eq!(r.rev("main"), main_before);
    // Untracked files do not block.
    r.git(&["reset", "-q", "--hard"]);
    std::fs::write(r.root.join("notes.txt"), "scratch\n").expect("write");
    r.harness(&["promote", "1/verify"]).ok();
}

#[test]
fn unknown_proposal_is_a_usage_error() {
    let r = Repo::demo();
    let run = r.harness(&["promote", "9/nope"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr
            .contains("hint: list proposals with `git harness log --all`")
    );
}

/// Both racers must end in exactly one merge on main, the loser failing cleanly.
fn check_race(r: &Repo, main_before: &str, racers: &[(String, String)], results: &[(i32, String)]) {
    let winners: Vec<usize> = (0..results.len()).filter(|i| results[*i].0 == 0).collect();
    assert_eq!(winners.len(), 1, "exactly one promote wins: {results:#?}");
    let w = winners[0];
    for (i, (code, stderr)) in results.iter().enumerate() {
        if i == w {
            continue;
        }
        assert_eq!(*code, 1, "the loser exits 1: {stderr}");
        assert!(stderr.contains("main"), "{stderr}");
        assert!(
            stderr.contains("moved"),
            "the loser says main moved: {stderr}"
        );
        assert!(!stderr.contains("uncommitted"), "{stderr}");
        // The loser's proposal is still there.
        assert_eq!(
            r.rev(&format!("harness/proposals/{}", racers[i].0)),
            racers[i].1
        );
    }
    let parents = r.git(&["log", "-1", "--format=%P", "main"]);
    assert_eq!(
        parents.split_whitespace().collect::<Vec<_>>(),
        [main_before, racers[w].1.as_str()],
        "main is a two-parent merge of the old main and the winner"
    );
    let t = trailers_of(r, "main");
    assert_eq!(get(&t, keys::VERDICT), Some("accept"));
    r.git(&["fsck", "--no-progress", "--no-dangling"]);
    assert_eq!(r.git(&["status", "--porcelain"]), "");
}

#[test]
fn racing_promote_processes_never_lose_a_merge() {
    for round in 0..5 {
        let r = Repo::demo();
        let a = r.propose(1, "a", "prompts/verification.md", "Check it.");
        let b = r.propose(1, "b", "prompts/bootstrap.md", "Run ls first.");
        r.accept(&a);
        r.accept(&b);
        let main_before = r.rev("main");
        let racers = [
            ("1/a".to_string(), a.commit.to_string()),
            ("1/b".to_string(), b.commit.to_string()),
        ];
        let children: Vec<_> = racers
            .iter()
            .map(|(name, _)| {
                r.harness_cmd(&["promote", name])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("spawn promote")
            })
            .collect();
        let results: Vec<(i32, String)> = children
            .into_iter()
            .map(|c| {
                let o = c.wait_with_output().expect("wait");
                (
                    o.status.code().unwrap_or(-1),
                    String::from_utf8_lossy(&o.stderr).into_owned(),
                )
            })
            .collect();
        eprintln!("round {round}: {results:?}");
        check_race(&r, &main_before, &racers, &results);
    }
}

#[test]
fn racing_promote_threads_never_lose_a_merge() {
    for _ in 0..10 {
        let r = Repo::demo();
        let a = r.propose(1, "a", "prompts/verification.md", "Check it.");
        let b = r.propose(1, "b", "prompts/bootstrap.md", "Run ls first.");
        r.accept(&a);
        r.accept(&b);
        let fingerprint = r.fingerprint();
        let main_before = r.rev("main");
        let racers = [
            ("1/a".to_string(), a.commit.to_string()),
            ("1/b".to_string(), b.commit.to_string()),
        ];
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = racers
            .iter()
            .map(|(name, _)| {
                let (root, name, fp, barrier) = (
                    r.root.clone(),
                    name.clone(),
                    fingerprint.clone(),
                    barrier.clone(),
                );
                std::thread::spawn(move || {
                    let ws = Workspace::from_repo(git2::Repository::open(root).expect("open"));
                    let p = lineage::resolve_proposal(&ws.repo, &name).expect("proposal");
                    barrier.wait();
                    match lineage::promote(&ws.repo, &p, &fp, "Gate report.", None) {
                        Ok(_) => (0, String::new()),
                        Err(e) => (e.exit_code(), e.to_string()),
                    }
                })
            })
            .collect();
        let results: Vec<(i32, String)> = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        check_race(&r, &main_before, &racers, &results);
    }
}
