//! Safe and clear on a user's own repository: a checked-out proposal branch is never deleted
//! under its worktree, and every name the tool prints (versions, promoted proposals, also those
//! a merged candidate combined) resolves in `show` and `why`.

use crate::support::repo::Repo;
use git_harness::lineage::{self, keys, trailers::CommitMessage};

/// HEAD is a symbolic ref to an existing branch, and the worktree matches it.
fn assert_head_on(r: &Repo, branch: &str) {
    assert_eq!(r.git(&["symbolic-ref", "HEAD"]).trim(), branch);
    let head = r.git_in(&r.root, &["rev-parse", "--verify", "-q", "HEAD"]);
    assert_eq!(head.code, 0, "HEAD must not be unborn: {head:#?}");
    assert_eq!(r.git(&["status", "--porcelain"]), "", "worktree clean");
}

#[test]
fn promote_with_the_proposal_checked_out_switches_to_main() {
    let r = Repo::demo();
    let p = r.propose(1, "verify", "prompts/verification.md", "Check it.");
    r.accept(&p);
    r.git(&["checkout", "-q", "harness/proposals/1/verify"]);
    let main_before = r.rev("main");
    let run = r.harness(&["promote", "1/verify"]).ok();
    assert!(
        run.stderr.contains("updated the checked-out worktree"),
        "{run:#?}"
    );
    assert_ne!(r.rev("main"), main_before);
    assert_head_on(&r, "refs/heads/main");
    assert_eq!(r.rev("HEAD"), r.rev("main"));
    let file = std::fs::read_to_string(r.root.join("prompts/verification.md")).expect("read");
    assert!(file.ends_with("Check it.\n"));
    // No branch is lost: the proposal is kept under refs/harness/promoted/.
    assert_eq!(
        r.rev("refs/harness/promoted/1/verify"),
        p.commit.to_string()
    );
}

#[test]
fn promote_with_the_proposal_checked_out_and_edited_is_refused() {
    let r = Repo::demo();
    let p = r.propose(1, "verify", "prompts/verification.md", "Check it.");
    r.accept(&p);
    r.git(&["checkout", "-q", "harness/proposals/1/verify"]);
    std::fs::write(r.root.join("prompts/system.md"), "edited by hand\n").expect("write");
    let main_before = r.rev("main");
    let run = r.harness(&["promote", "1/verify"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr
            .contains("checked out and has uncommitted changes")
            && run.stderr.contains("hint: commit or stash them"),
        "{}",
        run.stderr
    );
    assert_eq!(r.rev("main"), main_before, "main must not move");
    assert_eq!(
        r.git(&["symbolic-ref", "HEAD"]).trim(),
        "refs/heads/harness/proposals/1/verify"
    );
    assert_eq!(r.rev("harness/proposals/1/verify"), p.commit.to_string());
    assert_eq!(
        std::fs::read_to_string(r.root.join("prompts/system.md")).expect("read"),
        "edited by hand\n"
    );
}

#[test]
fn promote_refuses_a_branch_checked_out_in_another_worktree() {
    let r = Repo::demo();
    let p = r.propose(1, "verify", "prompts/verification.md", "Check it.");
    r.accept(&p);
    let other = r.tmp.path().join("other");
    r.git(&[
        "worktree",
        "add",
        "-q",
        other.to_str().expect("utf-8 path"),
        "harness/proposals/1/verify",
    ]);
    let main_before = r.rev("main");
    let run = r.harness(&["promote", "1/verify"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("is checked out at"), "{}", run.stderr);
    assert_eq!(r.rev("main"), main_before);
    assert_eq!(r.rev("harness/proposals/1/verify"), p.commit.to_string());
    let other_head = r.git_in(&other, &["rev-parse", "--verify", "-q", "HEAD"]);
    assert_eq!(other_head.code, 0, "the other worktree keeps its branch");
}

#[test]
fn every_printed_name_resolves_after_a_merged_promotion() {
    // Two accepted edits of a round combined in a merged candidate, promoted, and the parts
    // retired, as `evolve` does.
    let r = Repo::demo();
    let a = r.propose(1, "verify", "prompts/verification.md", "Check it.");
    let b = r.propose(1, "bootstrap", "prompts/bootstrap.md", "Run ls first.");
    r.accept(&a);
    r.accept(&b);
    let merged = {
        let repo = r.git2();
        let main = lineage::main_commit(&repo).expect("main");
        let msg = CommitMessage::new("Combine 2 accepted edits of round 1")
            .trailer(
                keys::SURFACE,
                "prompts/verification.md, prompts/bootstrap.md",
            )
            .trailer(keys::ROUND, "1");
        lineage::create_merged_proposal(&repo, &main, 1, &[a.clone(), b.clone()], &msg)
            .expect("merge")
            .expect("no conflict")
    };
    r.accept(&merged);
    r.harness(&["promote", "1/merged"]).ok();
    {
        let repo = r.git2();
        for p in [&a, &b] {
            lineage::retire_proposal(&repo, p).expect("retire");
        }
    }

    let log = r.harness(&["log", "--all"]).ok().stdout;
    for name in ["1/merged", "1/verify", "1/bootstrap"] {
        assert!(
            log.lines()
                .any(|l| l.starts_with("promoted") && l.contains(name)),
            "log --all lists {name} as promoted:\n{log}"
        );
    }
    let versions: Vec<String> = log
        .lines()
        .filter(|l| l.starts_with('v'))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert_eq!(versions.len(), 3, "{log}");
    let last = versions.last().expect("a version").clone();
    for name in
        versions
            .iter()
            .map(String::as_str)
            .chain(["1/merged", "1/verify", "1/bootstrap", "main"])
    {
        let show = r.harness(&["show", name]);
        assert_eq!(show.code, 0, "show {name}: {show:#?}");
    }
    let show = r.harness(&["show", "1/verify"]).ok();
    assert!(
        show.stdout
            .starts_with("proposal 1/verify (promoted, refs/harness/promoted/1/verify)"),
        "{}",
        show.stdout
    );
    // `log NAME` ends the lineage at every name: a version at itself, a proposal on the
    // version it was made on, labelled by its name.
    for (i, v) in versions.iter().enumerate() {
        let upto = r.harness(&["log", v]).ok().stdout;
        let shown: Vec<&str> = upto
            .lines()
            .filter(|l| l.starts_with('v'))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(shown.len(), i + 1, "log {v}:\n{upto}");
        assert_eq!(shown.last().copied(), Some(v.as_str()), "log {v}:\n{upto}");
    }
    for name in ["1/merged", "1/verify", "1/bootstrap"] {
        let upto = r.harness(&["log", name]).ok().stdout;
        let tip = upto.lines().last().unwrap_or_default();
        let tip = if tip.starts_with(' ') {
            upto.lines().rev().nth(1).unwrap_or_default()
        } else {
            tip
        };
        assert!(tip.starts_with(name), "log {name} ends at it:\n{upto}");
    }
    // `why` explains the same promotion whichever name is given.
    let merge = r.rev("main");
    for name in [last.as_str(), "1/merged", "1/verify", "1/bootstrap", &merge] {
        let why = r.harness(&["why", name, "--format", "json"]);
        assert_eq!(why.code, 0, "why {name}: {why:#?}");
        let v: serde_json::Value = serde_json::from_str(&why.stdout).expect("json");
        assert_eq!(v["merge"], merge.as_str(), "why {name}");
    }
    // A promoted proposal cannot be promoted again.
    let again = r.harness(&["promote", "1/verify"]);
    assert_eq!(again.code, 1, "{again:#?}");
    assert!(
        again.stderr.contains("promoted already"),
        "{}",
        again.stderr
    );
}

#[test]
fn install_man_makes_git_harness_help_work() {
    let r = Repo::empty();
    let prefix = r.tmp.path().join("prefix");
    let run = r
        .harness_in(
            r.tmp.path(),
            &["install-man", "--prefix", prefix.to_str().expect("utf-8")],
        )
        .ok();
    let man1 = prefix.join("share/man/man1");
    assert!(run.stdout.contains("manual pages in"), "{run:#?}");
    for (page, title) in [
        ("git-harness.1", ".TH git-harness 1"),
        ("git-harness-run.1", ".TH git-harness-run 1"),
        ("git-harness-install-man.1", ".TH git-harness-install-man 1"),
    ] {
        let text = std::fs::read_to_string(man1.join(page)).expect(page);
        assert!(text.contains(title), "{page}: {text}");
    }
    // git answers `git harness --help` with `man git-harness`.
    let has_man = std::process::Command::new("man")
        .arg("-w")
        .arg("man")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_man {
        eprintln!("man is not installed: checked the installed files only");
        return;
    }
    let manpath = prefix.join("share/man");
    // The hermetic environment of the fixture, with a pager that prints.
    let env = r.harness_cmd_in(r.tmp.path(), &[]);
    let out = std::process::Command::new("git")
        .args(["harness", "--help"])
        .envs(
            env.get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
        )
        .env_remove("CI")
        .env("MANPATH", &manpath)
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .env("MANWIDTH", "100")
        .current_dir(r.tmp.path())
        .output()
        .expect("run git harness --help");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("git-harness") && text.contains("SYNOPSIS"),
        "{text}"
    );
}
