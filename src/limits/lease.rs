//! Leases on resource limits: every unit held from a semaphore is recorded in a lease slot with
//! its holder, so that what a process held when it died can be given back exactly.
//!
//! # Layout
//! After the limits, the segment holds `slots` lease slots of two words: the owner (a packed
//! [`Holder`], 0 when free) and the state (phase, limit index and amount, one word so that a
//! transition is one store). Each semaphore also has an epoch word, bumped by every holder
//! before it changes the semaphore's count.
//!
//! # Protocol
//! A process can be killed between any two of its writes. Acquire: claim a free slot (CAS its
//! owner from 0), write `Acquiring(limit, amount)`, bump the epoch, CAS the count up, write
//! `Held` (or `Empty` and free the slot when the count was full). Release: CAS `Held` to
//! `Releasing`, bump the epoch, CAS the count down, write `Empty`, free the slot.
//!
//! Invariant: a semaphore's count is the sum of the `Held` amounts on it, plus for each slot in
//! transition (`Acquiring` or `Releasing`) either 0 or its amount, depending on whether its CAS
//! on the count happened. A slot left in transition by a dead holder is ambiguous on its own,
//! but not as a group: once no live holder is in transition on that limit, the count minus the
//! `Held` sum is exactly what the dead ones in transition still hold. The reclaimer reads that
//! with an epoch check around the snapshot (a live holder that moved the count in the meantime
//! bumped the epoch first), gives it back, and empties their slots. If a live holder is in
//! transition the reclaimer retries a little and otherwise reports the limit as not settled:
//! nothing is guessed.
//!
//! Reclaimers take turns through a lock word holding the reclaimer's identity (taken over
//! when that process is dead). Each reclaimer step leaves the slots in a state the next
//! reclaimer resolves the same way, so a reclaimer killed half-way loses nothing either.
//!
//! Everything read from the segment may have been scribbled on by an untrusted process: states
//! are decoded with bounds checks, counts are clamped to `0..=capacity`, and a garbled slot of
//! a dead owner is simply freed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use super::holder::{Holder, Liveness};
use super::{Algorithm, LimitSpec};

/// Words per lease slot: owner and state.
pub(super) const SLOT_WORDS: usize = 2;
/// Bits of the amount in a state word.
const AMOUNT_BITS: u32 = 48;
/// The most units one lease can hold (and so a semaphore's largest capacity).
pub(super) const MAX_AMOUNT: u64 = (1 << AMOUNT_BITS) - 1;
/// Bits of the limit index in a state word.
const LIMIT_BITS: u32 = 14;
/// The most limits a table can have.
pub(super) const MAX_LIMITS: usize = 1 << LIMIT_BITS;
/// Snapshots a reclaimer tries before reporting a limit as not settled.
const SNAPSHOT_ATTEMPTS: usize = 100;

/// One phase of a lease slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Empty,
    Acquiring,
    Held,
    Releasing,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Empty => "empty",
            Phase::Acquiring => "acquiring",
            Phase::Held => "held",
            Phase::Releasing => "releasing",
        }
    }
}

/// A decoded state word: phase, limit, amount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct State {
    phase: Phase,
    limit: usize,
    amount: u64,
}

impl State {
    const EMPTY: u64 = 0;

    fn word(phase: Phase, limit: usize, amount: u64) -> u64 {
        let code = match phase {
            Phase::Empty => return Self::EMPTY,
            Phase::Acquiring => 1u64,
            Phase::Held => 2,
            Phase::Releasing => 3,
        };
        (code << 62) | ((limit as u64 & (MAX_LIMITS as u64 - 1)) << AMOUNT_BITS) | (amount & MAX_AMOUNT)
    }

    /// The state a word holds, or `None` when it names no semaphore of `specs` or more units
    /// than its capacity (garbage).
    fn decode(word: u64, specs: &[LimitSpec]) -> Option<State> {
        let phase = match word >> 62 {
            0 => return (word == Self::EMPTY).then_some(State { phase: Phase::Empty, limit: 0, amount: 0 }),
            1 => Phase::Acquiring,
            2 => Phase::Held,
            _ => Phase::Releasing,
        };
        let limit = usize::try_from((word >> AMOUNT_BITS) & (MAX_LIMITS as u64 - 1)).ok()?;
        let amount = word & MAX_AMOUNT;
        let spec = specs.get(limit)?;
        (spec.algorithm == Algorithm::Semaphore && amount >= 1 && amount <= spec.capacity).then_some(State {
            phase,
            limit,
            amount,
        })
    }
}

/// Units held from a resource limit, recorded in a lease slot until
/// [`SharedLimits::release_lease`](super::SharedLimits::release_lease) gives them back. If the
/// holding process dies first, a reclaimer gives them back.
#[must_use = "the units stay held until the lease is released"]
#[derive(Debug, PartialEq, Eq)]
pub struct Lease {
    pub(super) limit: usize,
    /// `None` for a lease of zero units (no slot is used).
    pub(super) slot: Option<usize>,
    pub(super) amount: u64,
    pub(super) owner: u64,
    /// The nonce of the table it was taken from.
    pub(super) table: u64,
}

impl Lease {
    /// The limit the units come from.
    #[must_use]
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// How many units it holds.
    #[must_use]
    pub fn amount(&self) -> u64 {
        self.amount
    }
}

/// What a reclaim gave back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reclaimed {
    /// Units given back, per limit index.
    pub units: Vec<u64>,
    /// Lease slots of dead holders freed.
    pub slots: usize,
    /// `false` when something is left for a later reclaim: a live holder stayed in the middle
    /// of a transition on a limit a dead one also was (a stopped process, say), or another
    /// live reclaimer was at work.
    pub complete: bool,
}

/// A simulated death in the tests: the operation stopped before a write.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Crashed;

/// Where an operation may be cut short: called before every write to shared memory.
pub(super) trait Steps {
    /// `Err(Crashed)` to stop here, as a process killed at this instruction would.
    fn step(&mut self) -> Result<(), Crashed>;
}

/// Never stops (the real thing).
pub(super) struct Unbounded;

impl Steps for Unbounded {
    #[inline(always)]
    fn step(&mut self) -> Result<(), Crashed> {
        Ok(())
    }
}

/// The lease slots and semaphore words of one table.
pub(super) struct Leases<'a> {
    pub(super) specs: &'a [LimitSpec],
    /// The count and epoch words of each limit (`None` for a limit that is not a semaphore).
    pub(super) counters: Vec<Option<(&'a AtomicU64, &'a AtomicU64)>>,
    /// The slots, `SLOT_WORDS` each.
    pub(super) slots: &'a [AtomicU64],
    /// The reclaimers' turn word.
    pub(super) reclaim_lock: &'a AtomicU64,
}

impl Leases<'_> {
    fn slot_count(&self) -> usize {
        self.slots.len() / SLOT_WORDS
    }

    fn owner(&self, slot: usize) -> &AtomicU64 {
        &self.slots[slot * SLOT_WORDS]
    }

    fn state(&self, slot: usize) -> &AtomicU64 {
        &self.slots[slot * SLOT_WORDS + 1]
    }

    fn counter(&self, limit: usize) -> Option<(&AtomicU64, &AtomicU64)> {
        self.counters.get(limit).copied().flatten()
    }

    fn capacity(&self, limit: usize) -> u64 {
        self.specs.get(limit).map_or(0, |s| s.capacity)
    }

    /// Takes `amount` units of semaphore `limit` for `me` if they are free now (`None` if not,
    /// or if every lease slot is taken). The caller checked `limit` and `amount`.
    pub(super) fn try_lease(
        &self,
        me: Holder,
        limit: usize,
        amount: u64,
        steps: &mut impl Steps,
    ) -> Result<Option<Lease>, Crashed> {
        let owner = me.pack();
        if amount == 0 {
            return Ok(Some(Lease { limit, slot: None, amount, owner, table: 0 }));
        }
        let Some((count, epoch)) = self.counter(limit) else { return Ok(None) };
        let capacity = self.capacity(limit);
        if count.load(SeqCst).saturating_add(amount) > capacity {
            return Ok(None); // no slot churn while the limit is full
        }
        let n = self.slot_count();
        if n == 0 {
            return Ok(None);
        }
        let start = (me.pid as usize).wrapping_mul(0x9E37) % n;
        let mut slot = None;
        for s in (start..n).chain(0..start) {
            if self.owner(s).load(SeqCst) == 0 {
                steps.step()?;
                if self.owner(s).compare_exchange(0, owner, SeqCst, SeqCst).is_ok() {
                    slot = Some(s);
                    break;
                }
            }
        }
        let Some(slot) = slot else { return Ok(None) };
        steps.step()?;
        self.state(slot).store(State::word(Phase::Acquiring, limit, amount), SeqCst);
        steps.step()?;
        epoch.fetch_add(1, SeqCst);
        steps.step()?;
        let granted =
            count.fetch_update(SeqCst, SeqCst, |used| used.checked_add(amount).filter(|&total| total <= capacity));
        if granted.is_ok() {
            steps.step()?;
            self.state(slot).store(State::word(Phase::Held, limit, amount), SeqCst);
            return Ok(Some(Lease { limit, slot: Some(slot), amount, owner, table: 0 }));
        }
        steps.step()?;
        self.state(slot).store(State::EMPTY, SeqCst);
        steps.step()?;
        let _ = self.owner(slot).compare_exchange(owner, 0, SeqCst, SeqCst);
        Ok(None)
    }

    /// Gives a lease's units back. `false` if its slot no longer records it (a reclaimer took
    /// it back, or another process scribbled on it): then nothing is released twice.
    pub(super) fn release(&self, lease: &Lease, steps: &mut impl Steps) -> Result<bool, Crashed> {
        let Some(slot) = lease.slot.filter(|&s| s < self.slot_count()) else { return Ok(lease.slot.is_none()) };
        let Some((count, epoch)) = self.counter(lease.limit) else { return Ok(false) };
        if self.owner(slot).load(SeqCst) != lease.owner {
            return Ok(false);
        }
        let held = State::word(Phase::Held, lease.limit, lease.amount);
        steps.step()?;
        let releasing = State::word(Phase::Releasing, lease.limit, lease.amount);
        if self.state(slot).compare_exchange(held, releasing, SeqCst, SeqCst).is_err() {
            return Ok(false);
        }
        steps.step()?;
        epoch.fetch_add(1, SeqCst);
        steps.step()?;
        let _ = count.fetch_update(SeqCst, SeqCst, |used| Some(used.saturating_sub(lease.amount)));
        steps.step()?;
        self.state(slot).store(State::EMPTY, SeqCst);
        steps.step()?;
        let _ = self.owner(slot).compare_exchange(lease.owner, 0, SeqCst, SeqCst);
        Ok(true)
    }

    /// Gives back what dead holders held, as `me`: every dead holder's slots that `wanted`
    /// selects, plus any other dead holder's slot caught in transition on the same limits.
    /// `alive` says whether a holder still runs.
    pub(super) fn reclaim(
        &self,
        me: Holder,
        wanted: &dyn Fn(Holder) -> bool,
        alive: &dyn Fn(Holder) -> Liveness,
        steps: &mut impl Steps,
    ) -> Result<Reclaimed, Crashed> {
        let mut out = Reclaimed { units: vec![0; self.specs.len()], slots: 0, complete: true };
        let mut cache = HashMap::<u64, bool>::new();
        let mut is_dead = |word: u64| -> bool {
            *cache.entry(word).or_insert_with(|| Holder::unpack(word).is_none_or(|h| alive(h) == Liveness::Dead))
        };
        // A cheap look first: no dead holder selected, nothing to do (and no lock to take).
        let candidates: Vec<usize> = (0..self.slot_count())
            .filter(|&s| {
                let w = self.owner(s).load(SeqCst);
                w != 0 && Holder::unpack(w).is_none_or(wanted) && is_dead(w)
            })
            .collect();
        if candidates.is_empty() {
            return Ok(out);
        }
        if !self.take_turn(me, &mut is_dead, steps)? {
            out.complete = false;
            return Ok(out);
        }
        let mut limits = vec![false; self.specs.len()];
        for s in candidates {
            let owner = self.owner(s).load(SeqCst);
            if owner == 0 || !is_dead(owner) {
                continue; // freed meanwhile (by its own process, before it died)
            }
            let word = self.state(s).load(SeqCst);
            match State::decode(word, self.specs) {
                Some(State { phase: Phase::Held, limit, amount }) => {
                    // Held -> Releasing: from here the group resolution below gives it back,
                    // and a reclaimer killed after this write leaves it resolvable the same way.
                    steps.step()?;
                    self.state(s).store(State::word(Phase::Releasing, limit, amount), SeqCst);
                    limits[limit] = true;
                }
                Some(State { phase: Phase::Acquiring | Phase::Releasing, limit, .. }) => limits[limit] = true,
                Some(State { phase: Phase::Empty, .. }) | None => {
                    if word != State::EMPTY {
                        steps.step()?;
                        self.state(s).store(State::EMPTY, SeqCst);
                    }
                    steps.step()?;
                    if self.owner(s).compare_exchange(owner, 0, SeqCst, SeqCst).is_ok() {
                        out.slots += 1;
                    }
                }
            }
        }
        for limit in (0..self.specs.len()).filter(|&l| limits[l]) {
            match self.settle(limit, &mut is_dead, steps)? {
                Some((units, slots)) => {
                    out.units[limit] += units;
                    out.slots += slots;
                }
                None => out.complete = false,
            }
        }
        steps.step()?;
        let _ = self.reclaim_lock.compare_exchange(me.pack(), 0, SeqCst, SeqCst);
        Ok(out)
    }

    /// Takes the reclaimers' turn word for `me`: free, or held by a dead reclaimer.
    fn take_turn(
        &self,
        me: Holder,
        is_dead: &mut impl FnMut(u64) -> bool,
        steps: &mut impl Steps,
    ) -> Result<bool, Crashed> {
        let current = self.reclaim_lock.load(SeqCst);
        // Our own identity there is a turn of ours that never ended: the in-process lock in
        // `SharedLimits` keeps two threads of one process from reclaiming at once.
        if current != 0 && current != me.pack() && !is_dead(current) {
            return Ok(false);
        }
        steps.step()?;
        Ok(self.reclaim_lock.compare_exchange(current, me.pack(), SeqCst, SeqCst).is_ok())
    }

    /// Gives back what the dead slots in transition on `limit` still hold and frees them:
    /// `Some((units, slots))`, or `None` while a live holder stays in transition there.
    fn settle(
        &self,
        limit: usize,
        is_dead: &mut impl FnMut(u64) -> bool,
        steps: &mut impl Steps,
    ) -> Result<Option<(u64, usize)>, Crashed> {
        let Some((count, epoch)) = self.counter(limit) else { return Ok(Some((0, 0))) };
        for attempt in 0..SNAPSHOT_ATTEMPTS {
            if attempt > 0 {
                std::thread::yield_now();
            }
            let before = epoch.load(SeqCst);
            let mut held = 0u64;
            let mut live_in_transition = false;
            let mut dead: Vec<(usize, u64, u64)> = Vec::new(); // slot, owner, amount
            for s in 0..self.slot_count() {
                let owner = self.owner(s).load(SeqCst);
                if owner == 0 {
                    continue;
                }
                match State::decode(self.state(s).load(SeqCst), self.specs) {
                    Some(st) if st.limit == limit => match st.phase {
                        Phase::Held => held = held.saturating_add(st.amount),
                        Phase::Acquiring | Phase::Releasing if is_dead(owner) => dead.push((s, owner, st.amount)),
                        Phase::Acquiring | Phase::Releasing => live_in_transition = true,
                        Phase::Empty => {}
                    },
                    _ => {}
                }
            }
            let used = count.load(SeqCst);
            if live_in_transition || epoch.load(SeqCst) != before {
                continue;
            }
            // What the dead in transition still hold: the count beyond the Held sum, never
            // more than they asked for together (the rest would be garbage, not theirs).
            let most = dead.iter().fold(0u64, |sum, &(_, _, a)| sum.saturating_add(a));
            let excess = used.saturating_sub(held).min(most);
            if excess > 0 {
                steps.step()?;
                let _ = count.fetch_update(SeqCst, SeqCst, |c| Some(c.saturating_sub(excess)));
            }
            let mut freed = 0;
            for &(s, owner, _) in &dead {
                steps.step()?;
                self.state(s).store(State::EMPTY, SeqCst);
                steps.step()?;
                if self.owner(s).compare_exchange(owner, 0, SeqCst, SeqCst).is_ok() {
                    freed += 1;
                }
            }
            return Ok(Some((excess, freed)));
        }
        Ok(None)
    }

    /// `(owner, limit, amount, phase)` of every occupied slot, for diagnostics (a garbled
    /// state reads as limit 0, amount 0, phase `"garbage"`).
    pub(super) fn occupied(&self) -> Vec<(Option<Holder>, usize, u64, &'static str)> {
        (0..self.slot_count())
            .filter_map(|s| {
                let owner = self.owner(s).load(SeqCst);
                if owner == 0 {
                    return None;
                }
                let (limit, amount, phase) = match State::decode(self.state(s).load(SeqCst), self.specs) {
                    Some(State { phase, limit, amount }) => (limit, amount, phase.name()),
                    None => (0, 0, "garbage"),
                };
                Some((Holder::unpack(owner), limit, amount, phase))
            })
            .collect()
    }
}
