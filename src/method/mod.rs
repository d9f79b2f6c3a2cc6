//! The method's steps, composed from the pipeline's modules: validate a candidate against its
//! parent, evolve (mine → propose → validate → promote rounds), the sealed test split, and the
//! cost estimate before a run.

pub mod estimate;
pub mod evolve;
pub mod mine_rev;
pub mod noise;
pub mod sealed;
pub mod validate;

pub use mine_rev::mine_rev;
