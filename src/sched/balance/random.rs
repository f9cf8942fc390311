//! Random: a uniformly random idle worker (xorshift64*, seeded per pool).

use super::Candidate;

pub(super) fn pick(candidates: &[Candidate], state: &mut u64) -> usize {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
    // Multiply-shift maps r onto 0..len without modulo bias worth measuring.
    ((u128::from(r) * candidates.len() as u128) >> 64) as usize
}
