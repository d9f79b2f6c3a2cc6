//! `git harness image`: build the images the Docker runner needs, without a registry.

use std::path::PathBuf;

use git_harness::method;
use git_harness::sandbox::image::{self, BASE_IMAGE, RootfsSource};
use git_harness::{Error, Result, exit};

use super::Ui;

/// Build images for the Docker runner.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(clap::Subcommand, Debug)]
pub enum Sub {
    /// Build the base image from a root-filesystem tarball or with debootstrap.
    Base(BaseArgs),
    /// Build the offline verifier image: uv/uvx, a Python, pytest and pytest-json-ctrf (what
    /// TB2 verifiers fetch when they run), from wheels downloaded on this host, so their
    /// test.sh runs unchanged with no network. Map task images to it with `--image-map '*=TAG'`.
    Verifier(VerifierArgs),
    /// Remove stale images: task images of the current suite's tasks that no task runs on now
    /// (changed tasks, images built on a FROM image since rebuilt; also those named under a
    /// registry) and agent images (`agent.install`) made from them that main's harness would
    /// not make now. Containers of runs that ended without cleaning up go first; images a
    /// running container uses are kept.
    Prune(PruneArgs),
}

#[derive(clap::Args, Debug)]
pub struct VerifierArgs {
    /// The image to build on (it needs python3).
    #[arg(long, default_value = BASE_IMAGE)]
    pub base: String,
    /// The image name.
    #[arg(long, default_value = image::VERIFIER_IMAGE)]
    pub tag: String,
    /// Another package to install (`NAME==VERSION`, repeatable), besides pytest==8.4.1 and
    /// pytest-json-ctrf==0.3.5.
    #[arg(long = "with", value_name = "REQUIREMENT")]
    pub with: Vec<String>,
    /// Rebuild even when the image exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    /// List what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also remove the images of tasks that are not in the current suite and every agent image
    /// main's harness would not make now (other suites on this Docker engine lose theirs too).
    #[arg(long)]
    pub all: bool,
}

#[derive(clap::Args, Debug)]
pub struct BaseArgs {
    /// Import this root-filesystem tarball.
    #[arg(
        long,
        value_name = "TAR",
        conflicts_with = "debootstrap",
        required_unless_present = "debootstrap"
    )]
    pub from_rootfs: Option<PathBuf>,
    /// Make the root filesystem with debootstrap for this Debian suite (needs root).
    #[arg(long, value_name = "SUITE")]
    pub debootstrap: Option<String>,
    /// Extra packages for debootstrap (comma-separated or repeated).
    #[arg(long, value_delimiter = ',', requires = "debootstrap")]
    pub include: Vec<String>,
    /// The Debian mirror for debootstrap [default: the Debian archive of this machine's apt
    /// sources, /etc/apt/sources.list and /etc/apt/sources.list.d/].
    #[arg(long, value_name = "URL", requires = "debootstrap")]
    pub mirror: Option<String>,
    /// The image name.
    #[arg(long, default_value = BASE_IMAGE)]
    pub tag: String,
    /// Rebuild even when the image exists.
    #[arg(long)]
    pub force: bool,
}

pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    match args.command {
        Sub::Base(a) => base(ui, a),
        Sub::Prune(a) => prune(ui, a),
        Sub::Verifier(a) => verifier(ui, a),
    }
}

fn verifier(ui: &mut Ui, a: VerifierArgs) -> Result<i32> {
    let mut packages: Vec<String> = image::VERIFIER_PACKAGES
        .iter()
        .map(|p| p.to_string())
        .collect();
    packages.extend(a.with);
    let spec = image::VerifierImage {
        base: a.base,
        tag: a.tag,
        packages,
        force: a.force,
    };
    let rt = super::session::runtime()?;
    let built = rt.block_on(async {
        let docker = image::connect().await?;
        let mut progress = |s: &str| eprintln!("{s}");
        image::build_verifier(&docker, &spec, &mut progress).await
    })?;
    if built {
        ui.out(format!("built {} ({})", spec.tag, spec.packages.join(" ")));
    } else {
        ui.out(format!("{} exists", spec.tag));
    }
    ui.note(format!(
        "run TB2-style suites on it offline: --image-map '*={}'",
        spec.tag
    ));
    Ok(exit::SUCCESS)
}

fn prune(ui: &mut Ui, a: PruneArgs) -> Result<i32> {
    let ws = method::open_workspace()?;
    let fixed = ws.fixed_on_main()?;
    let suite = git_harness::task::load_suite(&ws.suite_dir(&fixed.experiment)?)?;
    let provider = git_harness::sandbox::DockerProvider::connect(
        fixed.experiment.runner.image_map.clone(),
        Default::default(),
    )?;
    // The agent image trials of main's harness run on (`agent.install` of a command harness).
    let main = git_harness::lineage::main_commit(&ws.repo)?;
    let harness = git_harness::harness::Harness::from_commit(&ws.repo, &main)?;
    let install =
        git_harness::agent::command::install_spec(&harness, &fixed.experiment.runner.agent_paths);
    let rt = super::session::runtime()?;
    let (removed, kept, swept) = rt.block_on(async {
        // Containers that killed runs left (their owner is gone) hold images: they go first,
        // as at the start of every run.
        let swept = if a.dry_run {
            0
        } else {
            git_harness::sandbox::SandboxProvider::sweep(&provider).await?
        };
        let unused = provider
            .unused_task_images(&suite.tasks, a.all, install.as_ref())
            .await?;
        if a.dry_run {
            return Ok::<_, Error>((unused, Vec::new(), swept));
        }
        let (mut removed, mut kept) = (Vec::new(), Vec::new());
        for tag in unused {
            if provider.remove_image(&tag).await? {
                removed.push(tag);
            } else {
                kept.push(tag);
            }
        }
        Ok((removed, kept, swept))
    })?;
    if swept > 0 {
        ui.out(format!(
            "removed {swept} container{} of runs that ended without cleaning up",
            if swept == 1 { "" } else { "s" }
        ));
    }
    let verb = if a.dry_run { "would remove" } else { "removed" };
    for tag in &removed {
        ui.out(format!("{verb} {tag}"));
    }
    for tag in &kept {
        ui.out(format!("kept {tag} (a container uses it)"));
    }
    ui.out(format!(
        "{} {} image{} that no task of the suite runs on",
        verb,
        removed.len(),
        if removed.len() == 1 { "" } else { "s" }
    ));
    Ok(exit::SUCCESS)
}

fn base(ui: &mut Ui, a: BaseArgs) -> Result<i32> {
    let source = match (a.from_rootfs, a.debootstrap) {
        (Some(p), _) => {
            if !p.is_file() {
                return Err(Error::usage(format!("no such tarball: {}", p.display())));
            }
            RootfsSource::Tarball(p)
        }
        (None, Some(suite)) => {
            let mirror = match a.mirror {
                Some(m) => m,
                None => image::machine_mirror().ok_or_else(|| {
                    Error::usage_hint(
                        "no Debian mirror in /etc/apt/sources.list or /etc/apt/sources.list.d/",
                        "pass --mirror URL (the Debian archive debootstrap downloads from)",
                    )
                })?,
            };
            RootfsSource::Debootstrap {
                suite,
                include: a.include,
                mirror,
            }
        }
        (None, None) => {
            return Err(Error::usage(
                "give --from-rootfs TAR or --debootstrap SUITE",
            ));
        }
    };
    let rt = super::session::runtime()?;
    let built = rt.block_on(async {
        let docker = image::connect().await?;
        // Progress goes to stderr; the result line goes to stdout.
        let mut progress = |s: &str| eprintln!("{s}");
        image::build_base(&docker, &source, &a.tag, a.force, &mut progress).await
    })?;
    if built {
        ui.out(format!("built {}", a.tag));
    } else {
        ui.out(format!("{} exists", a.tag));
    }
    Ok(exit::SUCCESS)
}
