//! Round robin: the idle worker with the next id after the last one picked, wrapping around.

use super::Candidate;

pub(super) fn pick(candidates: &[Candidate], last: Option<u64>) -> usize {
    let after = |c: &&Candidate| last.is_none_or(|l| c.id > l);
    let next = candidates.iter().filter(after).min_by_key(|c| c.id);
    let chosen = next.or_else(|| candidates.iter().min_by_key(|c| c.id)).expect("candidates is not empty");
    candidates.iter().position(|c| c.id == chosen.id).expect("chosen from candidates")
}
