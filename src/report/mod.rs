//! Reports: terminal tables live in the CLI; markdown for pull requests here.

pub mod markdown;

use crate::lineage::ValidationRecord;

/// The gate report carried by a promotion's merge message.
pub fn gate_report(r: &ValidationRecord) -> String {
    let mut s = format!("Gate ({}): {} — {}\n\n", r.gate, r.verdict, r.reason);
    s.push_str(&format!("  held_in     {}\n", r.held_in.describe()));
    s.push_str(&format!("  validation  {}\n", r.validation.describe()));
    if let Some(st) = &r.statistic {
        s.push_str(&format!("  statistic   {st}\n"));
    }
    if let Some(e) = &r.early_stop {
        s.push_str(&format!("  early stop  {e}\n"));
    }
    if !r.runs.is_empty() {
        s.push_str(&format!("  runs        {}\n", r.runs.join(", ")));
    }
    s
}
