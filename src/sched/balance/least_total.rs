//! Least total: the worker given the fewest tasks over its life; lowest id among equals.

use super::Candidate;

pub(super) fn pick(candidates: &[Candidate]) -> usize {
    candidates.iter().enumerate().min_by_key(|(_, c)| (c.total, c.id)).map(|(i, _)| i).expect("candidates is not empty")
}
