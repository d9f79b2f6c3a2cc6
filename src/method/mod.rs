//! The method's steps, composed from the pipeline's modules: validate a candidate against its
//! parent, evolve (mine → propose → validate → promote rounds), the sealed test split, and the
//! cost estimate before a run.

pub mod estimate;
pub mod evolve;
pub mod mine_rev;
pub mod noise;
pub mod revalidate;
pub mod sealed;
pub mod validate;

pub use mine_rev::mine_rev;

use crate::error::Result;
use crate::workspace::Workspace;

/// Open the repository of the current directory and finish what a killed earlier command left
/// half done (a promotion whose checkout did not follow, journals of runs that were recorded or
/// adopted). Best effort: what cannot be repaired is reported where it matters.
pub fn open_workspace() -> Result<Workspace> {
    let ws = Workspace::open()?;
    let _ = crate::lineage::recover_promotion(&ws.repo);
    let _ = crate::eval::record::sweep_journals(&ws.repo, &ws.state_dir(), false);
    Ok(ws)
}
