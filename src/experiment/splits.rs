use std::path::Path;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    HeldIn,
    Validation,
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::HeldIn => "held_in",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Split {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "held_in" | "held-in" => Ok(Split::HeldIn),
            "validation" => Ok(Split::Validation),
            "test" => Ok(Split::Test),
            _ => Err(Error::usage(format!(
                "unknown split `{s}`: expected held_in, validation or test"
            ))),
        }
    }
}

/// Task ids per split, fixed before the first run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Splits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    pub held_in: Vec<String>,
    pub validation: Vec<String>,
    pub test: Vec<String>,
}

impl Splits {
    /// What an empty split means for the method, one line each (empty when all are filled).
    pub fn empty_warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.held_in.is_empty() {
            w.push("held_in is empty: `mine` has no failures to learn from and proposals have no evidence".to_string());
        }
        if self.validation.is_empty() {
            w.push("validation is empty: the gate judges candidates on held_in alone, the split their evidence came from".to_string());
        }
        if self.test.is_empty() {
            w.push("test is empty: `report --final` has no sealed number to give".to_string());
        }
        w
    }

    pub fn parse(text: &str, file: &Path) -> Result<Self> {
        let s: Splits = crate::support::yaml::from_str(text, file)?;
        let mut seen = std::collections::BTreeMap::new();
        for split in [Split::HeldIn, Split::Validation, Split::Test] {
            for id in s.get(split) {
                if let Some(prev) = seen.insert(id.clone(), split) {
                    return Err(Error::config(
                        file,
                        crate::support::yaml::line_of_value(text, id),
                        split.as_str(),
                        format!(
                            "task `{id}` is in both {prev} and {split}; splits must be disjoint"
                        ),
                    ));
                }
            }
        }
        Ok(s)
    }

    pub fn get(&self, split: Split) -> &[String] {
        match split {
            Split::HeldIn => &self.held_in,
            Split::Validation => &self.validation,
            Split::Test => &self.test,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.held_in.is_empty() && self.validation.is_empty() && self.test.is_empty()
    }

    pub fn split_of(&self, task: &str) -> Option<Split> {
        [Split::HeldIn, Split::Validation, Split::Test]
            .into_iter()
            .find(|s| self.get(*s).iter().any(|t| t == task))
    }

    /// Deterministic split of `ids` by `ratios` (held_in, validation, test): the same ids and
    /// seed always give the same split, whatever order the ids come in.
    pub fn compute(ids: &[String], seed: u64, ratios: [f64; 3]) -> Result<Self> {
        let total: f64 = ratios.iter().sum();
        if ratios.iter().any(|r| *r < 0.0) || total <= 0.0 {
            return Err(Error::usage(
                "split ratios must be non-negative and not all zero",
            ));
        }
        let mut ids: Vec<String> = ids.to_vec();
        ids.sort();
        ids.dedup();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        ids.shuffle(&mut rng);
        let n = ids.len();
        let n_in = ((ratios[0] / total) * n as f64).round() as usize;
        let n_val = (((ratios[1] / total) * n as f64).round() as usize).min(n - n_in.min(n));
        let n_in = n_in.min(n);
        let mut held_in = ids[..n_in].to_vec();
        let mut validation = ids[n_in..n_in + n_val].to_vec();
        let mut test = ids[n_in + n_val..].to_vec();
        held_in.sort();
        validation.sort();
        test.sort();
        Ok(Splits {
            seed: Some(seed),
            held_in,
            validation,
            test,
        })
    }
}
