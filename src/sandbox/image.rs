//! Images: the base image `git-harness/base:bookworm` (imported from a root-filesystem tarball,
//! which `debootstrap` can make), image names through the image map, task Dockerfiles and their
//! deterministic build contexts, the tar helpers the Docker runner uploads with, and the offline
//! verifier image (`image verifier`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt;

use super::engine::{docker_err, is_not_found};
use super::{InfraClass, Notes};
use crate::error::{Error, IoContext, Result};
use crate::task::Task;

/// The image that task Dockerfiles start `FROM` and that tasks without a Dockerfile run on.
pub const BASE_IMAGE: &str = "git-harness/base:bookworm";
/// The apt source files whose Debian archive debootstrap uses when no mirror is given.
const APT_SOURCES: [&str; 2] = ["/etc/apt/sources.list", "/etc/apt/sources.list.d"];

/// The Debian archive this machine's apt uses (the first `deb` source that is not the
/// security archive), so that debootstrap goes where apt already can: machines behind a
/// proxy or a local mirror have no route to a public host name.
pub fn machine_mirror() -> Option<String> {
    let mut texts = Vec::new();
    for p in APT_SOURCES {
        let path = Path::new(p);
        if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|f| f.extension().is_some_and(|x| x == "list" || x == "sources"))
                .collect();
            files.sort();
            texts.extend(files.iter().filter_map(|f| std::fs::read_to_string(f).ok()));
        } else if let Ok(t) = std::fs::read_to_string(path) {
            texts.push(t);
        }
    }
    mirror_from_sources(&texts)
}

/// The first Debian archive URI in one-line (`deb URI SUITE ...`) or deb822 (`URIs:`) apt
/// sources, skipping `deb-src` entries and the security archive.
pub fn mirror_from_sources(texts: &[String]) -> Option<String> {
    let usable = |uri: &str| {
        (uri.starts_with("http://") || uri.starts_with("https://") || uri.starts_with("file:"))
            && !uri.trim_end_matches('/').ends_with("-security")
    };
    for text in texts {
        // deb822: stanzas separated by blank lines.
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_string())
                })
            };
            let (Some(types), Some(uris)) = (field("Types"), field("URIs")) else {
                continue;
            };
            if field("Enabled").is_some_and(|e| e.eq_ignore_ascii_case("no")) {
                continue;
            }
            if !types.split_whitespace().any(|t| t == "deb") {
                continue;
            }
            if let Some(u) = uris.split_whitespace().find(|u| usable(u)) {
                return Some(u.trim_end_matches('/').to_string());
            }
        }
        for line in text.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("deb") {
                continue;
            }
            // `deb [arch=amd64 signed-by=...] URI SUITE ...`
            let uri = words.find(|w| !w.starts_with('[') && !w.ends_with(']') && !w.contains('='));
            if let Some(u) = uri.filter(|u| usable(u)) {
                return Some(u.trim_end_matches('/').to_string());
            }
        }
    }
    None
}

/// Where the root filesystem comes from.
#[derive(Debug, Clone)]
pub enum RootfsSource {
    /// An existing tarball of a root filesystem.
    Tarball(PathBuf),
    /// `debootstrap --variant=minbase --include <packages> <suite> DIR <mirror>`.
    Debootstrap {
        suite: String,
        include: Vec<String>,
        mirror: String,
    },
}

/// Whether `image` exists in the daemon (a 404 is "no"; any other failure is infrastructure).
pub async fn image_exists(docker: &Docker, image: &str) -> Result<bool> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(docker_err(&format!("inspect image {image}"), e)),
    }
}

/// The id of `image` in the daemon, `None` when it is absent (the same 404 rule).
pub async fn image_id(docker: &Docker, image: &str) -> Result<Option<String>> {
    match docker.inspect_image(image).await {
        Ok(info) => Ok(Some(info.id.unwrap_or_default())),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(docker_err(&format!("inspect image {image}"), e)),
    }
}

/// Pull `image` (`name[:tag]`, `name@digest`, with its registry) through the daemon; `notes`
/// gets each change of status (`Pulling fs layer`, `Download complete`, ...), once per layer
/// and status, not every progress tick.
pub async fn pull_image(docker: &Docker, image: &str, notes: &mut Notes<'_>) -> Result<()> {
    let opts = CreateImageOptionsBuilder::default()
        .from_image(image)
        .build();
    notes(&format!("pulling {image}"));
    let mut stream = docker.create_image(Some(opts), None, None);
    let mut last: HashMap<String, String> = HashMap::new();
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| {
            InfraClass::Sandbox.error_hint(
                format!("pull {image}: {e}"),
                "check the image name and that its registry is reachable (or set runner.pull: never and load the image)",
            )
        })?;
        if let Some(e) = info.error_detail.and_then(|d| d.message) {
            return Err(InfraClass::Sandbox.error(format!("pull {image}: {e}")));
        }
        let (Some(status), id) = (info.status, info.id.unwrap_or_default()) else {
            continue;
        };
        if last.get(&id) != Some(&status) {
            notes(&if id.is_empty() {
                format!("{image}: {status}")
            } else {
                format!("{image}: {id}: {status}")
            });
            last.insert(id, status);
        }
    }
    Ok(())
}

/// Push `image` (`registry/name:tag`) from the daemon to its registry; `notes` gets each
/// change of status.
pub async fn push_image(docker: &Docker, image: &str, notes: &mut Notes<'_>) -> Result<()> {
    let (name, tag) = match image.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, t),
        _ => (image, "latest"),
    };
    let opts = bollard::query_parameters::PushImageOptionsBuilder::default()
        .tag(tag)
        .build();
    notes(&format!("pushing {image}"));
    let mut stream = docker.push_image(name, Some(opts), None);
    let mut last = String::new();
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| InfraClass::Sandbox.error(format!("push {image}: {e}")))?;
        if let Some(status) = info.status
            && status != last
        {
            notes(&format!("{image}: {status}"));
            last = status;
        }
    }
    Ok(())
}

/// Connect from `DOCKER_HOST` or the default socket and negotiate the API version.
pub use super::engine::connect;

/// Run debootstrap into a temp dir under `work` and tar the result to `out`. Needs root.
#[allow(
    clippy::disallowed_methods,
    reason = "building the base image drives debootstrap"
)]
pub fn debootstrap_rootfs(
    suite: &str,
    include: &[String],
    mirror: &str,
    work: &Path,
    out: &Path,
) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("git-harness-rootfs-")
        .tempdir_in(work)
        .at(work)?;
    let root = dir.path().join("root");
    let mut cmd = std::process::Command::new("debootstrap");
    cmd.arg("--variant=minbase");
    if !include.is_empty() {
        cmd.arg(format!("--include={}", include.join(",")));
    }
    cmd.arg(suite).arg(&root).arg(mirror);
    let o = cmd.output().map_err(|e| {
        Error::usage_hint(
            format!("cannot run debootstrap: {e}"),
            "install the debootstrap package (and run as root)",
        )
    })?;
    if !o.status.success() {
        let log = String::from_utf8_lossy(&o.stderr);
        let out_log = String::from_utf8_lossy(&o.stdout);
        let tail: Vec<&str> = out_log.lines().chain(log.lines()).collect();
        let tail = tail[tail.len().saturating_sub(20)..].join("\n");
        return Err(InfraClass::Sandbox.error(format!(
            "debootstrap {suite} failed ({}):\n{tail}",
            o.status
        )));
    }
    tar_rootfs(&root, out)
}

/// Tar a root filesystem with numeric owners (system `tar`: device nodes, hard links, xattrs).
#[allow(
    clippy::disallowed_methods,
    reason = "system tar keeps device nodes, hard links and xattrs"
)]
pub fn tar_rootfs(root: &Path, out: &Path) -> Result<()> {
    let o = std::process::Command::new("tar")
        .arg("--numeric-owner")
        .arg("-C")
        .arg(root)
        .arg("-cf")
        .arg(out)
        .arg(".")
        .output()
        .map_err(|e| Error::io("tar", e))?;
    if !o.status.success() {
        return Err(InfraClass::Sandbox.error(format!(
            "tar the root filesystem: {}",
            String::from_utf8_lossy(&o.stderr)
        )));
    }
    Ok(())
}

/// Import a root-filesystem tarball as `tag` (`POST /images/create?fromSrc=-`).
pub async fn import_rootfs(docker: &Docker, tarball: &Path, tag: &str) -> Result<()> {
    let (repo, t) = match tag.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
        _ => (tag.to_string(), "latest".to_string()),
    };
    let data = tokio::fs::read(tarball).await.at(tarball)?;
    let opts = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(&repo)
        .tag(&t)
        .changes(vec![
            "ENV LANG=C.UTF-8".to_string(),
            "CMD [\"bash\"]".to_string(),
        ])
        .build();
    let mut stream = docker.create_image(Some(opts), Some(bollard::body_full(data.into())), None);
    while let Some(item) = stream.next().await {
        item.map_err(|e| {
            InfraClass::Sandbox.error(format!("import {} as {tag}: {e}", tarball.display()))
        })?;
    }
    if !image_exists(docker, tag).await? {
        return Err(InfraClass::Sandbox.error(format!(
            "import {} as {tag}: the image did not appear",
            tarball.display()
        )));
    }
    Ok(())
}

/// Build the base image from `source` unless it exists (or `force`). `progress` gets short
/// notes (the CLI prints them on stderr). Returns false when the image already existed.
pub async fn build_base(
    docker: &Docker,
    source: &RootfsSource,
    tag: &str,
    force: bool,
    progress: &mut Notes<'_>,
) -> Result<bool> {
    if !force && image_exists(docker, tag).await? {
        progress(&format!("{tag} already exists"));
        return Ok(false);
    }
    match source {
        RootfsSource::Tarball(p) => {
            progress(&format!("importing {} as {tag}", p.display()));
            import_rootfs(docker, p, tag).await?;
        }
        RootfsSource::Debootstrap {
            suite,
            include,
            mirror,
        } => {
            let work = std::env::temp_dir();
            let tar_dir = tempfile::Builder::new()
                .prefix("git-harness-base-")
                .tempdir_in(&work)
                .at(&work)?;
            let tarball = tar_dir.path().join("rootfs.tar");
            progress(&format!(
                "running debootstrap {suite} from {mirror} (this takes a few minutes)"
            ));
            let (s, i, m, w, t) = (
                suite.clone(),
                include.clone(),
                mirror.clone(),
                work.clone(),
                tarball.clone(),
            );
            tokio::task::spawn_blocking(move || debootstrap_rootfs(&s, &i, &m, &w, &t))
                .await
                .map_err(|e| Error::Internal(format!("debootstrap task panicked: {e}")))??;
            progress(&format!("importing the root filesystem as {tag}"));
            import_rootfs(docker, &tarball, tag).await?;
        }
    }
    Ok(true)
}

/// The PATH an image's containers start with (Docker's default when the image sets none).
pub(crate) async fn image_path_env(docker: &Docker, image: &str) -> Result<String> {
    let info = docker
        .inspect_image(image)
        .await
        .map_err(|e| docker_err(&format!("inspect image {image}"), e))?;
    Ok(info
        .config
        .and_then(|c| c.env)
        .unwrap_or_default()
        .iter()
        .find_map(|v| v.strip_prefix("PATH=").map(str::to_string))
        .unwrap_or_else(|| DEFAULT_PATH.to_string()))
}

/// The PATH Docker gives a container whose image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `image_map` applied to one image name: exact key, then the longest prefix pattern, then `*`
/// (see `sandbox::image_map`).
pub fn map_image(map: &BTreeMap<String, String>, image: &str) -> String {
    super::image_map::apply(map, image)
}

/// A Dockerfile with the images of its `FROM` lines replaced through `map`.
pub fn rewrite_from(dockerfile: &str, map: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(dockerfile.len());
    for line in dockerfile.split_inclusive('\n') {
        let t = line.trim_start();
        if t.len() > 5 && t[..5].eq_ignore_ascii_case("FROM ") {
            let words: Vec<&str> = t[5..].split_whitespace().collect();
            if let Some(i) = words.iter().position(|w| !w.starts_with("--")) {
                let mapped = map_image(map, words[i]);
                if mapped != words[i] {
                    let mut w: Vec<String> = words.iter().map(|s| s.to_string()).collect();
                    w[i] = mapped;
                    out.push_str(&format!("FROM {}\n", w.join(" ")));
                    continue;
                }
            }
        }
        out.push_str(line);
    }
    out
}

/// The external images a Dockerfile starts from: `FROM` images that are not earlier stages,
/// `scratch`, or build-arg expressions.
pub fn from_images(dockerfile: &str) -> Vec<String> {
    let mut stages: Vec<String> = Vec::new();
    let mut images = Vec::new();
    for line in dockerfile.lines() {
        let t = line.trim_start();
        if t.len() <= 5 || !t[..5].eq_ignore_ascii_case("FROM ") {
            continue;
        }
        let words: Vec<&str> = t[5..]
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        let Some(image) = words.first() else { continue };
        let lower = image.to_ascii_lowercase();
        if lower != "scratch"
            && !image.contains('$')
            && !stages.contains(&lower)
            && !images.contains(&image.to_string())
        {
            images.push(image.to_string());
        }
        if words.len() >= 3 && words[1].eq_ignore_ascii_case("as") {
            stages.push(words[2].to_ascii_lowercase());
        }
    }
    images
}

/// The task's verifier and reference solution on the host: never part of an image, since the
/// agent runs in it (a TB1 task's build context is the whole task directory). They are copied
/// in for their own phase only.
pub fn verifier_and_solution_files(task: &Task) -> Vec<std::path::PathBuf> {
    let mut v = vec![task.test_script.clone(), task.dir.join("solution.yaml")];
    v.extend(task.tests_dir.clone());
    match (task.format, &task.solution_script) {
        (crate::task::TaskFormat::Harbor, Some(s)) => v.extend(s.parent().map(Path::to_path_buf)),
        (_, Some(s)) => v.push(s.clone()),
        (_, None) => {}
    }
    v
}

/// The build context of `dir` as a deterministic tar (sorted, mtime 0, uid 0), with the
/// Dockerfile's FROM lines rewritten through the image map and the `excluded` paths left out.
pub fn build_context(
    dir: &Path,
    dockerfile: Option<&Path>,
    map: &BTreeMap<String, String>,
    excluded: &[std::path::PathBuf],
) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    append_tree(&mut b, dir, "", dockerfile, map, excluded)?;
    b.into_inner().at(dir)
}

pub(crate) fn tar_dir(dir: &Path, prefix: &str) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    append_tree(&mut b, dir, prefix, None, &BTreeMap::new(), &[])?;
    b.into_inner().at(dir)
}

fn append_tree(
    b: &mut tar::Builder<Vec<u8>>,
    dir: &Path,
    prefix: &str,
    dockerfile: Option<&Path>,
    map: &BTreeMap<String, String>,
    excluded: &[std::path::PathBuf],
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .at(dir)?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        if excluded.contains(&p) {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let meta = std::fs::symlink_metadata(&p).at(&p)?;
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&p).at(&p)?;
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            b.append_link(&mut h, &rel, &target).at(&p)?;
        } else if meta.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            h.set_mode(meta.permissions().mode() & 0o7777);
            b.append_data(&mut h, format!("{rel}/"), std::io::empty())
                .at(&p)?;
            append_tree(b, &p, &rel, dockerfile, map, excluded)?;
        } else if meta.is_file() {
            let mut data = std::fs::read(&p).at(&p)?;
            if dockerfile == Some(p.as_path()) && !map.is_empty() {
                data = rewrite_from(&String::from_utf8_lossy(&data), map).into_bytes();
            }
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(data.len() as u64);
            h.set_mode(meta.permissions().mode() & 0o7777);
            b.append_data(&mut h, &rel, &data[..]).at(&p)?;
        }
    }
    Ok(())
}

/// Every task image's name starts so.
pub const TASK_IMAGE_PREFIX: &str = "git-harness/task-";

/// A task image's tag: its build context and the ids of its FROM images, so a rebuilt FROM
/// image makes another task image.
pub(crate) fn task_image_tag(task_id: &str, context: &[u8], base_ids: &[String]) -> String {
    let mut h = crate::support::digest::Hasher::new();
    h.update(context);
    for id in base_ids {
        h.update([0]);
        h.update(id.as_bytes());
    }
    let hash = h.hex();
    format!("{TASK_IMAGE_PREFIX}{}:{}", tag_safe(task_id), &hash[..12])
}

/// A Docker-tag-safe form of a task id.
pub(crate) fn tag_safe(s: &str) -> String {
    let t: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    let t = t.trim_start_matches(['-', '.', '_']).to_string();
    if t.is_empty() { "task".into() } else { t }
}

/// The label of everything the Docker runner makes (`docker::LABEL`, which names this module).
const OUR_LABEL: &str = "git-harness";

/// The image `git harness image verifier` makes by default.
pub const VERIFIER_IMAGE: &str = "git-harness/verifier:bookworm";
/// What TB2 verifiers fetch at run time (`uvx -w pytest==8.4.1 -w pytest-json-ctrf==0.3.5`).
pub const VERIFIER_PACKAGES: &[&str] = &["pytest==8.4.1", "pytest-json-ctrf==0.3.5"];

/// The files of the verifier image's build context besides the wheels.
const VERIFIER_FILES: &[(&str, &str)] = &[
    (
        "install.sh",
        include_str!("../../templates/verifier-image/install.sh"),
    ),
    (
        "run.py",
        include_str!("../../templates/verifier-image/run.py"),
    ),
    ("uv", include_str!("../../templates/verifier-image/uv")),
    ("uvx", include_str!("../../templates/verifier-image/uvx")),
    ("curl", include_str!("../../templates/verifier-image/curl")),
    ("env", include_str!("../../templates/verifier-image/env")),
];

/// What to build the verifier image from.
#[derive(Debug, Clone)]
pub struct VerifierImage {
    pub base: String,
    pub tag: String,
    /// Requirements (`pytest==8.4.1`), downloaded as wheels on the host.
    pub packages: Vec<String>,
    pub force: bool,
}

/// Build the offline verifier image: on `base`, the wheels of `packages` (downloaded on the
/// host with `pip download`, for the base image's Python), unpacked into a private site dir,
/// and `uv`/`uvx`/`curl` stand-ins plus uv's `env` file, so that a TB2 `test.sh` (`curl
/// astral.sh/uv/.../install.sh | sh; source $HOME/.local/bin/env; uvx -p 3.13 -w ... pytest`)
/// runs unchanged with no network. Returns false when the image already existed.
pub async fn build_verifier(
    docker: &Docker,
    spec: &VerifierImage,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<bool> {
    if !spec.force && image_exists(docker, &spec.tag).await? {
        progress(&format!("{} already exists", spec.tag));
        return Ok(false);
    }
    if !image_exists(docker, &spec.base).await? {
        return Err(InfraClass::Sandbox.error_hint(
            format!("the base image {} is missing", spec.base),
            "build it with `git harness image base --debootstrap bookworm --include python3`",
        ));
    }
    let python = run_once(
        docker,
        &spec.base,
        "python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'",
    )
    .await?;
    let python = python.trim().to_string();
    if !python.chars().all(|c| c.is_ascii_digit() || c == '.') || python.is_empty() {
        return Err(InfraClass::Sandbox.error_hint(
            format!(
                "the base image {} has no working python3: {python}",
                spec.base
            ),
            "build the base with `git harness image base --debootstrap bookworm --include python3`",
        ));
    }
    let ctx = tempfile::Builder::new()
        .prefix("git-harness-verifier-")
        .tempdir()
        .at(std::env::temp_dir())?;
    let wheels = ctx.path().join("wheels");
    progress(&format!(
        "downloading wheels for Python {python} on this host: {}",
        spec.packages.join(" ")
    ));
    let (py, pk, w) = (python.clone(), spec.packages.clone(), wheels.clone());
    tokio::task::spawn_blocking(move || download_wheels(&py, &pk, &w))
        .await
        .map_err(|e| Error::Internal(format!("pip download task panicked: {e}")))??;
    for (name, text) in VERIFIER_FILES {
        let p = ctx.path().join(name);
        std::fs::write(&p, text).at(&p)?;
    }
    let dockerfile = format!(
        "FROM {}\nCOPY . /opt/git-harness/verifier/\nRUN sh /opt/git-harness/verifier/install.sh\n",
        spec.base
    );
    let p = ctx.path().join("Dockerfile");
    std::fs::write(&p, dockerfile).at(&p)?;
    progress(&format!("building {} on {}", spec.tag, spec.base));
    build_dir_image(docker, ctx.path(), &spec.tag).await?;
    Ok(true)
}

/// `pip download` of pure-Python or manylinux wheels for `python` (`3.11`) into `out`.
#[allow(
    clippy::disallowed_methods,
    reason = "the verifier image's wheels come from the package index through the host's pip"
)]
fn download_wheels(python: &str, packages: &[String], out: &Path) -> Result<()> {
    let arch = std::env::consts::ARCH;
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-m", "pip", "download", "--quiet", "--only-binary=:all:"]);
    cmd.args(["--python-version", python, "--implementation", "cp"]);
    for plat in [
        format!("manylinux2014_{arch}"),
        format!("manylinux_2_28_{arch}"),
        format!("linux_{arch}"),
    ] {
        cmd.args(["--platform", &plat]);
    }
    cmd.arg("-d").arg(out).args(packages);
    let o = cmd.output().map_err(|e| {
        Error::usage_hint(
            format!("cannot run `python3 -m pip`: {e}"),
            "install Python's pip on this host (the wheels are downloaded here, not in the image)",
        )
    })?;
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        let lines: Vec<&str> = err.lines().collect();
        return Err(InfraClass::Sandbox.error_hint(
            format!(
                "pip download {} failed:\n{}",
                packages.join(" "),
                lines[lines.len().saturating_sub(10)..].join("\n")
            ),
            "the host needs the package index (PyPI or a mirror pip is configured for)",
        ));
    }
    Ok(())
}

/// Run `sh -c command` once in a fresh container of `image` (no network) and return its output.
async fn run_once(docker: &Docker, image: &str, command: &str) -> Result<String> {
    use bollard::models::{ContainerCreateBody, HostConfig};
    use bollard::query_parameters::{
        LogsOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
    };
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(vec!["sh".into(), "-c".into(), command.to_string()]),
        entrypoint: Some(vec![]),
        labels: Some(std::collections::HashMap::from([(
            OUR_LABEL.to_string(),
            "1".to_string(),
        )])),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await
        .map_err(|e| InfraClass::Sandbox.error(format!("create a container from {image}: {e}")))?;
    let id = created.id;
    let result = async {
        docker.start_container(&id, None).await.map_err(|e| {
            InfraClass::Sandbox.error(format!("start a container from {image}: {e}"))
        })?;
        let mut wait =
            docker.wait_container(&id, Some(WaitContainerOptionsBuilder::default().build()));
        while let Some(w) = wait.next().await {
            // A non-zero exit arrives as an error here; the output says what happened.
            if w.is_err() {
                break;
            }
        }
        let mut logs = docker.logs(
            &id,
            Some(
                LogsOptionsBuilder::default()
                    .stdout(true)
                    .stderr(true)
                    .build(),
            ),
        );
        let mut out = String::new();
        while let Some(chunk) = logs.next().await {
            match chunk {
                Ok(c) => out.push_str(&c.to_string()),
                Err(e) => return Err(InfraClass::Sandbox.error(format!("read the output: {e}"))),
            }
        }
        Ok(out)
    }
    .await;
    let opts = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    let _ = docker.remove_container(&id, Some(opts)).await;
    result
}

/// `docker build` of a directory as `tag`, labelled as ours; the build log's tail on failure.
async fn build_dir_image(docker: &Docker, dir: &Path, tag: &str) -> Result<()> {
    let mut tar = tar::Builder::new(Vec::new());
    tar.mode(tar::HeaderMode::Deterministic);
    tar.append_dir_all(".", dir).at(dir)?;
    let body = tar.into_inner().at(dir)?;
    build_tar(docker, body, tag, None)
        .await
        .map_err(|f| InfraClass::Sandbox.error(format!("build {tag}: {f}")))
}

/// Why an image build failed, with the last lines of its output.
#[derive(Debug)]
pub struct BuildFailure {
    pub reason: String,
    pub tail: String,
}

impl std::fmt::Display for BuildFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n{}", self.reason, self.tail)
    }
}

/// Lines of build output a failure shows.
const BUILD_TAIL_LINES: usize = 15;

/// Build the tar build context `context` (its `Dockerfile`) as `tag`, labelled as ours,
/// within `timeout` when one is given. The engine reports a failed step in the stream, not as
/// an error of the request: both, and the time-out, are a failure.
pub async fn build_tar(
    docker: &Docker,
    context: Vec<u8>,
    tag: &str,
    timeout: Option<std::time::Duration>,
) -> std::result::Result<(), BuildFailure> {
    use bollard::query_parameters::BuildImageOptionsBuilder;
    let opts = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        .labels(&HashMap::from([(OUR_LABEL.to_string(), "1".to_string())]))
        .build();
    let mut log = String::new();
    let mut failure = None;
    let build = async {
        let mut stream = docker.build_image(opts, None, Some(bollard::body_full(context.into())));
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(s) = info.stream {
                        log.push_str(&s);
                    }
                    if let Some(e) = info.error_detail.and_then(|d| d.message) {
                        failure = Some(e);
                    }
                }
                Err(e) => failure = Some(e.to_string()),
            }
        }
    };
    match timeout {
        Some(t) => {
            if tokio::time::timeout(t, build).await.is_err() {
                failure = Some(format!("timed out after {}s", t.as_secs()));
            }
        }
        None => build.await,
    }
    match failure {
        None => Ok(()),
        Some(reason) => {
            let lines: Vec<&str> = log.lines().collect();
            Err(BuildFailure {
                reason,
                tail: lines[lines.len().saturating_sub(BUILD_TAIL_LINES)..].join("\n"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mirror_comes_from_the_machines_apt_sources() {
        let deb822 = "Types: deb\n# a snapshot comment\nURIs: http://mirror.example/debian/\nSuites: bookworm\n\nTypes: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            mirror_from_sources(&[deb822.to_string()]).as_deref(),
            Some("http://mirror.example/debian")
        );
        // Security first, a disabled stanza, deb-src: none of them is the archive.
        let mixed = "Types: deb\nURIs: http://m/debian-security\n\nTypes: deb\nEnabled: no\nURIs: http://off/debian\n\nTypes: deb-src\nURIs: http://src/debian\n";
        assert_eq!(mirror_from_sources(&[mixed.to_string()]), None);
        let one_line = "# comment\ndeb-src http://src/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] https://local.mirror/debian bookworm main\n";
        assert_eq!(
            mirror_from_sources(&[mixed.to_string(), one_line.to_string()]).as_deref(),
            Some("https://local.mirror/debian")
        );
    }

    #[test]
    fn from_lines_are_mapped() {
        let map = BTreeMap::from([(
            "ubuntu:24.04".to_string(),
            "git-harness/base:bookworm".to_string(),
        )]);
        let d = "FROM --platform=linux/amd64 ubuntu:24.04 AS build\nRUN true\nfrom python:3\n";
        let r = rewrite_from(d, &map);
        assert!(r.starts_with("FROM --platform=linux/amd64 git-harness/base:bookworm AS build\n"));
        assert!(r.ends_with("from python:3\n"));
    }

    #[test]
    fn from_images_skip_stages_and_scratch() {
        let d = "FROM base:1 AS build\nRUN x\nFROM build\nFROM scratch\nFROM --platform=x other:2\nFROM ${IMG}\n";
        assert_eq!(
            from_images(d),
            vec!["base:1".to_string(), "other:2".to_string()]
        );
    }

    #[test]
    fn tags_are_safe() {
        assert_eq!(tag_safe("My Task!"), "my-task-");
    }
}
