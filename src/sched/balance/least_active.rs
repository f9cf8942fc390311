//! Least active: the worker with the fewest tasks in flight; round robin among equals.

use super::{round_robin, Candidate};

pub(super) fn pick(candidates: &[Candidate], last: Option<u64>) -> usize {
    let fewest = candidates.iter().map(|c| c.active).min().expect("candidates is not empty");
    let tied: Vec<Candidate> = candidates.iter().filter(|c| c.active == fewest).copied().collect();
    let chosen = tied[round_robin::pick(&tied, last)].id;
    candidates.iter().position(|c| c.id == chosen).expect("chosen from candidates")
}
