//! mine
