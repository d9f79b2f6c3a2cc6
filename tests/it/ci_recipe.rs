//! The code-review recipe end to end: `git harness ci github|gitlab` writes the CI files; their
//! script, run in a fresh clone of a bare remote as a hosted CI would, validates a pull request's
//! head as a proposal against its base, exits with the gate's code, and keeps one comment on the
//! pull request, created on the first push and updated on the next, through a stand-in of the
//! GitHub and GitLab comment APIs on loopback.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use crate::support::loops::*;
use crate::support::serve::{self, Server};
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::routing::{get, patch, put};
use serde_json::{Value, json};

const MARKER: &str = "<!-- git-harness-validate -->";

/// A comment as the stand-in stores it, with the API (`github`/`gitlab`) and thread it is on.
#[derive(Debug, Clone)]
struct Comment {
    id: u64,
    api: &'static str,
    thread: u64,
    body: String,
}

#[derive(Default)]
struct Forge {
    comments: Vec<Comment>,
    /// Every request: (method, path, authorisation header).
    requests: Vec<(String, String, String)>,
}

type Shared = Arc<Mutex<Forge>>;

fn auth(h: &HeaderMap) -> String {
    h.get("authorization")
        .or(h.get("private-token"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn listed(f: &Forge, api: &str, thread: u64) -> Value {
    Value::Array(
        f.comments
            .iter()
            .filter(|c| c.api == api && c.thread == thread)
            .map(|c| json!({"id": c.id, "body": c.body}))
            .collect(),
    )
}

fn create(f: &mut Forge, api: &'static str, thread: u64, body: &Value) -> Value {
    let id = 100 + f.comments.len() as u64;
    let body = body["body"].as_str().expect("a body").to_string();
    f.comments.push(Comment {
        id,
        api,
        thread,
        body,
    });
    json!({"id": id})
}

fn update(f: &mut Forge, id: u64, body: &Value) -> Value {
    let c = f
        .comments
        .iter_mut()
        .find(|c| c.id == id)
        .expect("a known comment");
    c.body = body["body"].as_str().expect("a body").to_string();
    json!({"id": id})
}

/// GitHub's issue-comment routes and GitLab's merge-request-note routes, as the script uses them.
fn forge() -> (Server, Shared) {
    let shared: Shared = Arc::default();
    let app =
        Router::new()
            .route(
                "/repos/{owner}/{repo}/issues/{n}/comments",
                get(
                    |State(s): State<Shared>,
                     h: HeaderMap,
                     UrlPath((_, _, n)): UrlPath<(String, String, u64)>| async move {
                        let mut f = s.lock().unwrap();
                        f.requests.push(("GET".into(), format!("gh/{n}"), auth(&h)));
                        axum::Json(listed(&f, "github", n))
                    },
                )
                .post(
                    |State(s): State<Shared>,
                     h: HeaderMap,
                     UrlPath((_, _, n)): UrlPath<(String, String, u64)>,
                     axum::Json(b): axum::Json<Value>| async move {
                        let mut f = s.lock().unwrap();
                        f.requests
                            .push(("POST".into(), format!("gh/{n}"), auth(&h)));
                        axum::Json(create(&mut f, "github", n, &b))
                    },
                ),
            )
            .route(
                "/repos/{owner}/{repo}/issues/comments/{id}",
                patch(
                    |State(s): State<Shared>,
                     h: HeaderMap,
                     UrlPath((_, _, id)): UrlPath<(String, String, u64)>,
                     axum::Json(b): axum::Json<Value>| async move {
                        let mut f = s.lock().unwrap();
                        f.requests
                            .push(("PATCH".into(), format!("gh/c/{id}"), auth(&h)));
                        axum::Json(update(&mut f, id, &b))
                    },
                ),
            )
            .route(
                "/api/v4/projects/{p}/merge_requests/{n}/notes",
                get(
                    |State(s): State<Shared>,
                     h: HeaderMap,
                     UrlPath((_, n)): UrlPath<(u64, u64)>| async move {
                        let mut f = s.lock().unwrap();
                        f.requests.push(("GET".into(), format!("gl/{n}"), auth(&h)));
                        axum::Json(listed(&f, "gitlab", n))
                    },
                )
                .post(
                    |State(s): State<Shared>,
                     h: HeaderMap,
                     UrlPath((_, n)): UrlPath<(u64, u64)>,
                     axum::Json(b): axum::Json<Value>| async move {
                        let mut f = s.lock().unwrap();
                        f.requests
                            .push(("POST".into(), format!("gl/{n}"), auth(&h)));
                        axum::Json(create(&mut f, "gitlab", n, &b))
                    },
                ),
            )
            .route(
                "/api/v4/projects/{p}/merge_requests/{n}/notes/{id}",
                put(
                    |State(s): State<Shared>,
                     h: HeaderMap,
                     UrlPath((_, _, id)): UrlPath<(u64, u64, u64)>,
                     axum::Json(b): axum::Json<Value>| async move {
                        let mut f = s.lock().unwrap();
                        f.requests
                            .push(("PUT".into(), format!("gl/n/{id}"), auth(&h)));
                        axum::Json(update(&mut f, id, &b))
                    },
                ),
            )
            .with_state(shared.clone());
    (serve::start(app), shared)
}

fn git_in(dir: &Path, args: &[&str]) -> String {
    output(Command::new("git").args(args).current_dir(dir))
        .ok()
        .stdout
}

/// A fresh clone of the remote, detached at the pull request's head, as hosted CI checks out.
fn ci_clone(remote: &Path, into: &Path, branch: &str) -> PathBuf {
    let _ = std::fs::remove_dir_all(into);
    output(
        Command::new("git")
            .arg("clone")
            .arg("-q")
            .arg(remote)
            .arg(into),
    )
    .ok();
    git_in(
        into,
        &["checkout", "-q", "--detach", &format!("origin/{branch}")],
    );
    into.to_path_buf()
}

/// Run the recipe's script in `dir` with `env`, as the CI job does.
fn script(dir: &Path, script: &str, env: &[(&str, String)]) -> Out {
    let bin = Path::new(env!("CARGO_BIN_EXE_git-harness"));
    let mut cmd = Command::new("bash");
    cmd.arg(script)
        .current_dir(dir)
        .env("HARNESS_BIN", bin)
        .env("PATH", path_with(bin.parent().unwrap()));
    for (k, v) in env {
        cmd.env(k, v);
    }
    output(&mut cmd)
}

fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn comment_of<'a>(f: &'a Forge, api: &str, thread: u64) -> Vec<&'a Comment> {
    f.comments
        .iter()
        .filter(|c| c.api == api && c.thread == thread)
        .collect()
}

#[test]
fn a_pull_request_is_validated_and_commented_once_per_head() {
    let (forge, shared) = forge();
    let addr = forge.addr;
    let repo = Repo::small("minimal");
    repo.set_experiment("trials", "1");

    // The recipe goes into the repository like any other change on main.
    let wrote = repo.harness(&["ci", "github"]).ok();
    assert!(
        wrote.stdout.contains(".github/workflows/git-harness.yml"),
        "{}",
        wrote.stdout
    );
    let again = repo.harness(&["ci", "github"]).ok();
    assert!(again.stdout.contains("up to date"), "{}", again.stdout);
    repo.harness(&["ci", "gitlab"]).ok();
    repo.commit_all("Validate pull requests with git harness");
    // main's evidence is on the remote: the CI clone fetches it and evaluates nothing of main.
    repo.harness(&["run"]).ok();

    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("remote.git");
    output(
        Command::new("git")
            .args(["init", "-q", "--bare", "--initial-branch=main"])
            .arg(&remote),
    )
    .ok();
    repo.git(&["remote", "add", "origin", remote.to_str().unwrap()]);
    repo.git(&[
        "push",
        "-q",
        "origin",
        "main",
        "refs/harness/*:refs/harness/*",
        "refs/notes/harness:refs/notes/harness",
    ]);

    // A contributor's pull request: an edit known to help the simulated model.
    let dev = tmp.path().join("dev");
    output(
        Command::new("git")
            .arg("clone")
            .arg("-q")
            .arg(&remote)
            .arg(&dev),
    )
    .ok();
    git_in(&dev, &["checkout", "-q", "-b", "artifact-early"]);
    let bootstrap = dev.join("prompts/bootstrap.md");
    let text = std::fs::read_to_string(&bootstrap).unwrap();
    std::fs::write(
        &bootstrap,
        format!(
            "{text}Identify the required output artifact and create a first version of it early.\n"
        ),
    )
    .unwrap();
    git_in(
        &dev,
        &["commit", "-q", "-am", "Create the output artifact early"],
    );
    git_in(&dev, &["push", "-q", "origin", "artifact-early"]);

    let github = |dir: &Path| {
        script(
            dir,
            ".github/git-harness/validate-pr.sh",
            &[
                ("HARNESS_BASE", "origin/main".into()),
                ("HARNESS_PR", "7".into()),
                ("HARNESS_GATE", "paper".into()),
                ("HARNESS_POST", "github".into()),
                ("GITHUB_TOKEN", "gh-token".into()),
                ("GITHUB_REPOSITORY", "owner/harness".into()),
                ("GITHUB_API_URL", format!("http://{addr}")),
            ],
        )
    };

    // First push: accepted, one comment created.
    let ci = ci_clone(&remote, &tmp.path().join("ci"), "artifact-early");
    let first = github(&ci).code(0);
    assert!(
        !first.stderr.contains("evaluated from scratch"),
        "{}",
        first.stderr
    );
    {
        let f = shared.lock().unwrap();
        let ours = comment_of(&f, "github", 7);
        assert_eq!(ours.len(), 1, "{:?}", f.comments);
        assert!(ours[0].body.starts_with(MARKER), "{}", ours[0].body);
        assert!(ours[0].body.contains("accept"), "{}", ours[0].body);
        assert!(ours[0].body.contains("| held_in |"), "{}", ours[0].body);
        assert!(ours[0].body.contains("exit 0 (accept)"), "{}", ours[0].body);
        assert!(
            f.requests.iter().all(|(_, _, a)| a == "Bearer gh-token"),
            "{:?}",
            f.requests
        );
    }
    // The comment is the script's file, and the gate's record is in the clone's note.
    let file = std::fs::read_to_string(ci.join("harness-comment.md")).unwrap();
    assert!(file.starts_with(MARKER));
    let json = output(
        Command::new(env!("CARGO_BIN_EXE_git-harness"))
            .args(["validate", "0/pr-7", "--gate", "paper", "--format", "json"])
            .current_dir(&ci),
    )
    .ok();
    let record: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(record["verdict"], "accept", "{}", json.stdout);

    // Second push: a change that helps nothing; the same comment now says reject, exit 1.
    git_in(&dev, &["reset", "-q", "--hard", "origin/main"]);
    let execution = dev.join("prompts/execution.md");
    let text = std::fs::read_to_string(&execution).unwrap();
    std::fs::write(&execution, format!("{text}\n")).unwrap();
    git_in(&dev, &["commit", "-q", "-am", "Add a blank line"]);
    git_in(&dev, &["push", "-q", "-f", "origin", "artifact-early"]);
    let ci = ci_clone(&remote, &tmp.path().join("ci"), "artifact-early");
    github(&ci).code(1);
    {
        let f = shared.lock().unwrap();
        let ours = comment_of(&f, "github", 7);
        assert_eq!(ours.len(), 1, "one comment, updated: {:?}", f.comments);
        assert!(ours[0].body.contains("reject"), "{}", ours[0].body);
        assert!(ours[0].body.contains("exit 1 (reject)"), "{}", ours[0].body);
        let methods: Vec<&str> = f.requests.iter().map(|(m, _, _)| m.as_str()).collect();
        assert_eq!(methods, ["GET", "POST", "GET", "PATCH"], "{:?}", f.requests);
    }

    // GitLab: the same script posts a merge-request note.
    let gitlab = script(
        &ci,
        ".gitlab/git-harness/validate-pr.sh",
        &[
            ("HARNESS_BASE", "origin/main".into()),
            ("HARNESS_PR", "3".into()),
            ("HARNESS_GATE", "paper".into()),
            ("HARNESS_POST", "gitlab".into()),
            ("GITLAB_TOKEN", "gl-token".into()),
            ("CI_API_V4_URL", format!("http://{addr}/api/v4")),
            ("CI_PROJECT_ID", "42".into()),
        ],
    );
    assert_eq!(gitlab.code, 1, "{}", gitlab.stderr);
    let f = shared.lock().unwrap();
    let notes = comment_of(&f, "gitlab", 3);
    assert_eq!(notes.len(), 1, "{:?}", f.comments);
    assert!(notes[0].body.starts_with(MARKER));
    assert!(
        f.requests
            .iter()
            .filter(|(_, p, _)| p.starts_with("gl/"))
            .all(|(_, _, a)| a == "gl-token"),
        "{:?}",
        f.requests
    );
}

#[test]
fn bad_inputs_exit_2_and_name_the_setting() {
    let repo = Repo::small("minimal");
    repo.harness(&["ci", "github"]).ok();
    let s = ".github/git-harness/validate-pr.sh";
    let no_base = script(&repo.root, s, &[("HARNESS_PR", "1".into())]);
    assert_eq!(no_base.code, 1, "bash's :? exits 1: {}", no_base.stderr);
    assert!(
        no_base.stderr.contains("HARNESS_BASE"),
        "{}",
        no_base.stderr
    );
    let bad_pr = script(
        &repo.root,
        s,
        &[
            ("HARNESS_BASE", "main".into()),
            ("HARNESS_PR", "x;y".into()),
        ],
    )
    .code(2);
    assert!(bad_pr.stderr.contains("HARNESS_PR"), "{}", bad_pr.stderr);
    // The head is main itself: nothing to validate.
    repo.git(&["checkout", "-q", "--detach", "main"]);
    let nothing = script(
        &repo.root,
        s,
        &[("HARNESS_BASE", "main".into()), ("HARNESS_PR", "1".into())],
    )
    .code(2);
    assert!(
        nothing.stderr.contains("changes nothing"),
        "{}",
        nothing.stderr
    );
    // An edited file on main is not overwritten without --force.
    repo.write(".github/workflows/git-harness.yml", "name: mine\n");
    let refused = repo.harness(&["ci", "github"]).code(2);
    assert!(refused.stderr.contains("--force"), "{}", refused.stderr);
    repo.harness(&["ci", "github", "--force"]).ok();
    assert!(
        repo.read(".github/workflows/git-harness.yml")
            .contains("HARNESS_POST")
    );
}
