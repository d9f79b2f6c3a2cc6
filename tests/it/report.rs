//! `git harness report`, `why` and `show` on a real lineage built once with the binary: a
//! ten-task slice of the bundled demo suite, the simulated model on loopback and the local
//! sandbox. Round 1 is validated (two proposals under the paper rule, one under strict), the
//! first accepted one promoted, another promoted by override, and main evaluated after each.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use scraper::{Html, Selector};

const TASKS: [&str; 10] = [
    "clean-emails",
    "count-errors",
    "number-lines",
    "env-to-json",
    "expense-totals",
    "reverse-lines",
    "log-time-window",
    "word-count",
    "sales-total",
    "top-ips",
];

struct Lineage {
    _tmp: tempfile::TempDir,
    repo: PathBuf,
    /// The proposal promoted through the gate (`1/<slug>`).
    promoted: String,
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_git-harness"))
}

fn hermetic(cmd: &mut Command) -> &mut Command {
    cmd.env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("TZ", "UTC")
        .env("CI", "1")
        .env("NO_COLOR", "1")
}

/// Run the binary in `dir`; returns (exit code, stdout, stderr).
fn harness(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = hermetic(&mut Command::new(bin()))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run git-harness");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let (code, out, err) = harness(dir, args);
    assert_eq!(code, 0, "git harness {args:?} failed:\n{out}\n{err}");
    out
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = hermetic(&mut Command::new("git"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
            let perm = std::fs::metadata(e.path()).unwrap().permissions();
            std::fs::set_permissions(&dest, perm).unwrap();
        }
    }
}

fn lineage() -> &'static Lineage {
    static L: OnceLock<Lineage> = OnceLock::new();
    L.get_or_init(build)
}

fn build() -> Lineage {
    let tmp = tempfile::tempdir().unwrap();
    let suite = tmp.path().join("suite");
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/suites/demo");
    for t in TASKS {
        copy_dir(&demo.join(t), &suite.join(t));
    }
    let repo = tmp.path().join("h");
    ok(tmp.path(), &["init", repo.to_str().unwrap()]);
    let exp = repo.join(".harness/experiment.yaml");
    let text = std::fs::read_to_string(&exp).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("path:") {
                format!("  path: {}", suite.display())
            } else if l.trim_start().starts_with("input_per_mtok:") {
                "  input_per_mtok: 0.5".into()
            } else if l.trim_start().starts_with("output_per_mtok:") {
                "  output_per_mtok: 1.5".into()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&exp, text + "\n").unwrap();
    git(
        &repo,
        &["commit", "-qam", "Use a ten-task slice of the demo suite"],
    );
    ok(&repo, &["split", "--ratios", "0.5,0.3,0.2"]);
    ok(&repo, &["run"]);
    ok(&repo, &["propose", "--proposer", "catalog", "-n", "3"]);
    let proposals: Vec<String> = git(
        &repo,
        &[
            "for-each-ref",
            "--format=%(refname)",
            "refs/heads/harness/proposals/",
        ],
    )
    .lines()
    .map(|l| {
        l.trim_start_matches("refs/heads/harness/proposals/")
            .to_string()
    })
    .collect();
    assert_eq!(proposals.len(), 3, "{proposals:?}");
    // Two under the paper rule (the sim improves these tasks), one under strict (too few tasks
    // for the paired test: rejected).
    let mut accepted = Vec::new();
    for (i, p) in proposals.iter().enumerate() {
        let gate = if i < 2 { "paper" } else { "strict" };
        let (code, out, err) = harness(&repo, &["validate", "--gate", gate, p]);
        assert!(code == 0 || code == 1, "validate {p}: {out}\n{err}");
        if code == 0 {
            accepted.push(p.clone());
        }
    }
    assert!(!accepted.is_empty(), "no proposal accepted");
    let promoted = accepted[0].clone();
    ok(&repo, &["promote", &promoted]);
    ok(&repo, &["run"]);
    let other = proposals.iter().find(|p| **p != promoted).unwrap();
    ok(
        &repo,
        &[
            "promote",
            other,
            "--force",
            "--reason",
            "measured by hand on a larger suite",
        ],
    );
    ok(&repo, &["run"]);
    Lineage {
        _tmp: tmp,
        repo,
        promoted,
    }
}

/// Versions (from `log --format json`), promotions, rejected refs and gated task ids.
struct Expected {
    held_in_points: usize,
    validation_points: usize,
    promotions: usize,
    rejected: usize,
    tasks: usize,
}

fn expected(l: &Lineage) -> Expected {
    let log: serde_json::Value =
        serde_json::from_str(&ok(&l.repo, &["log", "--format", "json"])).unwrap();
    let versions = log["versions"].as_array().unwrap();
    let count = |key: &str| versions.iter().filter(|v| !v[key].is_null()).count();
    let rejected = git(
        &l.repo,
        &[
            "for-each-ref",
            "--format=%(refname)",
            "refs/harness/rejected/",
        ],
    )
    .lines()
    .count();
    let splits: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(l.repo.join(".harness/splits.yaml")).unwrap(),
    )
    .unwrap();
    let n = |k: &str| splits[k].as_sequence().unwrap().len();
    Expected {
        held_in_points: count("held_in"),
        validation_points: count("validation"),
        promotions: count("proposal"),
        rejected,
        tasks: n("held_in") + n("validation"),
    }
}

fn select(doc: &Html, css: &str) -> usize {
    doc.select(&Selector::parse(css).unwrap()).count()
}

fn write_report(l: &Lineage, name: &str) -> PathBuf {
    let path = l.repo.parent().unwrap().join(name);
    ok(&l.repo, &["report", "--html", path.to_str().unwrap()]);
    path
}

#[test]
fn html_report_has_a_point_per_version_and_split_an_entry_per_promotion_and_rejection_and_a_row_per_task()
 {
    let l = lineage();
    let e = expected(l);
    assert!(e.held_in_points >= 3 && e.promotions == 2 && e.rejected >= 1);
    let page = std::fs::read_to_string(write_report(l, "report.html")).unwrap();
    let doc = Html::parse_document(&page);
    assert_eq!(
        select(&doc, "svg#pass-rate circle.point.held_in"),
        e.held_in_points
    );
    assert_eq!(
        select(&doc, "svg#pass-rate circle.point.validation"),
        e.validation_points
    );
    assert_eq!(select(&doc, ".lineage-entry.promotion"), e.promotions);
    assert_eq!(select(&doc, ".lineage-entry.rejected"), e.rejected);
    assert_eq!(select(&doc, "table#heatmap tr.task-row"), e.tasks);
    // Every task row has one cell per version, each with a title; the gate's flips are marked.
    let versions = select(&doc, "table.versions tbody tr");
    for row in doc.select(&Selector::parse("table#heatmap tr.task-row").unwrap()) {
        let cells: Vec<_> = row.select(&Selector::parse("td").unwrap()).collect();
        assert_eq!(cells.len(), versions);
        assert!(cells.iter().all(|c| c.value().attr("title").is_some()));
    }
    assert!(
        select(&doc, "table#heatmap td.fixed") >= 1,
        "no fixed task marked"
    );
    // The plain summary comes first and names both gated splits.
    let summary: String = doc
        .select(&Selector::parse("#summary").unwrap())
        .next()
        .expect("a summary")
        .text()
        .collect();
    assert!(
        summary.contains("held_in:") && summary.contains("validation:"),
        "{summary}"
    );
    assert!(
        summary.contains("2 promotions (1 by override)"),
        "{summary}"
    );
    // Self-contained: no scripts, no external resources.
    assert_eq!(select(&doc, "script"), 0);
    assert_no_remote_urls(&doc);
}

fn assert_no_remote_urls(doc: &Html) {
    for el in doc.select(&Selector::parse("[src], [href], [xlink\\:href]").unwrap()) {
        for (name, value) in el.value().attrs() {
            if matches!(name, "src" | "href" | "xlink:href") {
                let v = value.trim().to_ascii_lowercase();
                assert!(
                    !(v.starts_with("http:") || v.starts_with("https:") || v.starts_with("//")),
                    "remote url in {name}: {value}"
                );
            }
        }
    }
}

fn chromium() -> Option<PathBuf> {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

#[test]
fn html_report_renders_its_svg_in_headless_chromium_without_network() {
    let Some(chrome) = chromium() else {
        if std::env::var_os("CI").is_some() {
            panic!("chromium is required in CI (apt-get install -y chromium)");
        }
        eprintln!(
            "\n\n!!! SKIPPED: chromium is not installed and CI is unset; the report was NOT rendered in a browser !!!\n\n"
        );
        return;
    };
    let l = lineage();
    let path = write_report(l, "render.html");
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
            // Any request leaving the machine would fail: the page must not need one.
            "--proxy-server=127.0.0.1:9",
            "--proxy-bypass-list=<-loopback>",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", path.display()))
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = Html::parse_document(&dom);
    let e = expected(l);
    assert_eq!(
        select(&doc, "svg#pass-rate circle.point.held_in"),
        e.held_in_points
    );
    assert!(
        select(&doc, "svg#pass-rate text") > 0,
        "no axis labels rendered"
    );
    assert!(
        select(&doc, "svg#spend rect.point") > 0,
        "no token bars rendered"
    );
    assert_eq!(select(&doc, "table#heatmap tr.task-row"), e.tasks);
    assert_no_remote_urls(&doc);
}

#[test]
fn markdown_report_summarises_the_lineage_for_a_pull_request() {
    let l = lineage();
    let md = ok(&l.repo, &["report", "--markdown"]);
    assert!(md.starts_with("### Harness lineage: `main` at v"), "{md}");
    assert!(
        md.contains("| version | commit | change | held_in | validation | test |"),
        "{md}"
    );
    assert!(md.contains("#### Promotions"), "{md}");
    assert!(
        md.contains(&format!("`harness/proposals/{}`", l.promoted)),
        "{md}"
    );
    assert!(md.contains("(override)"), "{md}");
    assert!(md.contains("rejected proposal(s)"), "{md}");
    // --since keeps the named version as the first row.
    let split = git(
        &l.repo,
        &["log", "--format=%H", "--grep=^Split", "-1", "main"],
    );
    let md = ok(&l.repo, &["report", "--markdown", "--since", split.trim()]);
    assert!(md.contains("| v2 |") && !md.contains("| v1 |"), "{md}");
}

#[test]
fn why_lists_the_fixed_tasks_the_gate_saw() {
    let l = lineage();
    // The gate's decision as recorded on the promoted proposal (the merge's second parent).
    let merge = git(
        &l.repo,
        &[
            "log",
            "--format=%H",
            "--grep=^Promote",
            "--first-parent",
            "main",
        ],
    )
    .lines()
    .last()
    .unwrap()
    .to_string();
    let note = git(
        &l.repo,
        &["notes", "--ref", "harness", "show", &format!("{merge}^2")],
    );
    let note: serde_yaml::Value = serde_yaml::from_str(&note).unwrap();
    let record = &note["validations"]
        .as_sequence()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let fixed: BTreeSet<String> = ["held_in", "validation"]
        .iter()
        .flat_map(|s| {
            record["decision"][*s]["fixed"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(!fixed.is_empty(), "the accepted proposal fixed nothing?");
    for name in [merge.as_str(), l.promoted.as_str()] {
        let out = ok(&l.repo, &["why", name]);
        assert!(out.contains("Expected (proposer)"), "{out}");
        assert!(
            out.contains("Measured (gate)") && out.contains("ACCEPT"),
            "{out}"
        );
        for t in &fixed {
            assert!(
                out.contains(t.as_str()),
                "`why {name}` does not list fixed task {t}:\n{out}"
            );
        }
        assert!(out.contains("rule        paper"), "{out}");
        assert!(out.contains("refs/harness/runs/"), "{out}");
    }
    // The override is explained as one.
    let out = ok(&l.repo, &["why", "main"]);
    assert!(out.contains("promoted by override"), "{out}");
    // A commit that is not a promotion is refused with a hint.
    let (code, _, err) = harness(&l.repo, &["why", "v0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not a promotion"), "{err}");
}

#[test]
fn show_prints_the_same_validation_block() {
    let l = lineage();
    let rejected = git(
        &l.repo,
        &[
            "for-each-ref",
            "--format=%(refname)",
            "refs/harness/rejected/",
        ],
    );
    let name = rejected
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("refs/harness/rejected/");
    let out = ok(&l.repo, &["show", name]);
    assert!(out.contains("Validation"), "{out}");
    assert!(out.contains("REJECT"), "{out}");
    assert!(out.contains("split          parent   candidate"), "{out}");
    assert!(out.contains("rule        strict"), "{out}");
    assert!(out.contains("evidence    refs/harness/runs/"), "{out}");
}
