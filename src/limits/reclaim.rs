//! The lease API of [`SharedLimits`], and the registry of the tables this process maps, through
//! which the supervisor gives back what a dead worker held ([`reclaim_dead_process`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, TryLockError, Weak};

use super::holder::{Holder, Liveness};
use super::lease::{Lease, Reclaimed, Unbounded};
use super::{Algorithm, Clock, Header, LimitError, MonotonicClock, SharedLimits, Table};

/// How often a refused lease looks for dead holders, at most (nanoseconds): each look reads
/// `/proc` once per process holding a lease.
const RECLAIM_EVERY: u64 = 50_000_000;

/// Every table mapped in this process (weakly: a table dropped elsewhere is pruned here).
static TABLES: Mutex<Vec<Weak<Table>>> = Mutex::new(Vec::new());
/// One reclaimer per process at a time: reclaimers of one process share its identity, so the
/// turn word in shared memory cannot tell them apart.
static RECLAIMING: Mutex<()> = Mutex::new(());

pub(super) fn register(table: &Arc<Table>) {
    let mut tables = TABLES.lock().unwrap_or_else(PoisonError::into_inner);
    tables.retain(|t| t.strong_count() > 0);
    tables.push(Arc::downgrade(table));
}

/// Gives back, in every limit table mapped in this process, what process `pid` held, once it is
/// dead (for the supervisor, when a worker exits). The pid alone is not trusted: a holder is
/// taken back only if `/proc` shows it gone, a zombie, or its pid reused by a newer process.
/// Other dead holders caught half-way through an acquire or release on the same limits are
/// resolved too. Never blocks: a table another thread is reclaiming is reported as not
/// complete. Returns what each table with something to give back gave back.
#[must_use]
pub fn reclaim_dead_process(pid: u32) -> Vec<Reclaimed> {
    let tables: Vec<Arc<Table>> = {
        let tables = TABLES.lock().unwrap_or_else(PoisonError::into_inner);
        tables.iter().filter_map(Weak::upgrade).collect()
    };
    tables
        .iter()
        .filter_map(|t| t.reclaim(&|h: Holder| h.pid == pid).ok())
        .filter(|r| r.slots > 0 || !r.complete)
        .collect()
}

impl Table {
    /// The reclaim of `wanted` dead holders, as this process (see `Leases::reclaim`).
    fn reclaim(&self, wanted: &dyn Fn(Holder) -> bool) -> Result<Reclaimed, LimitError> {
        let me = Holder::current()?;
        let _turn = match RECLAIMING.try_lock() {
            Ok(turn) => turn,
            // A panic in an earlier reclaim: the words it left are resolvable like a dead one's.
            Err(TryLockError::Poisoned(turn)) => turn.into_inner(),
            Err(TryLockError::WouldBlock) => {
                return Ok(Reclaimed { units: vec![0; self.specs.len()], slots: 0, complete: false });
            }
        };
        let reclaimed = self.leases().reclaim(me, wanted, &Holder::liveness, &mut Unbounded).unwrap_or_default();
        if reclaimed.units.iter().any(|&u| u > 0) || reclaimed.slots > 0 {
            self.parking().notify(); // units came back: parked processes may go now
        }
        Ok(reclaimed)
    }

    /// This table's nonce: tells its leases from another table's.
    pub(super) fn nonce(&self) -> u64 {
        self.segment.words()[Header::Nonce as usize].load(Ordering::Relaxed)
    }
}

impl<C: Clock> SharedLimits<C> {
    /// Takes `amount` units of resource limit `index` now, for this process, or `None` if they
    /// are not free (try again later). A refused call looks, at most every 50 ms, for holders
    /// that died holding units of this table, and gives their units back.
    ///
    /// # Errors
    /// No such limit, not a resource limit, more units than its capacity, or no `/proc`.
    pub fn try_lease(&self, index: usize, amount: u64) -> Result<Option<Lease>, LimitError> {
        self.check_leasable(index, amount)?;
        let mut lease = self.try_lease_once(index, amount)?;
        if lease.is_none() && self.reclaim_due() {
            let reclaimed = self.reclaim_dead_holders()?;
            if reclaimed.units.get(index).is_some_and(|&u| u > 0) || reclaimed.slots > 0 {
                lease = self.try_lease_once(index, amount)?;
            }
        }
        Ok(lease)
    }

    /// One attempt of [`try_lease`](SharedLimits::try_lease), never looking for dead holders
    /// (it only touches a few atomic words: callers need not leave the interpreter for it).
    /// The caller checked that `index` is a resource limit and `amount` within its capacity.
    pub(crate) fn try_lease_once(&self, index: usize, amount: u64) -> Result<Option<Lease>, LimitError> {
        let me = Holder::current()?;
        let lease = self.table.leases().try_lease(me, index, amount, &mut Unbounded).unwrap_or_default();
        Ok(lease.map(|l| Lease { table: self.table.nonce(), ..l }))
    }

    /// Whether limit `index` can be leased (`amount` within its capacity).
    pub(crate) fn check_leasable(&self, index: usize, amount: u64) -> Result<(), LimitError> {
        let specs = &self.table.specs;
        let spec = specs.get(index).ok_or(LimitError::NoSuchLimit { index, count: specs.len() })?;
        if spec.algorithm != Algorithm::Semaphore {
            return Err(LimitError::NotAResourceLimit(index));
        }
        if amount > spec.capacity {
            return Err(LimitError::ExceedsCapacity { amount, capacity: spec.capacity });
        }
        Ok(())
    }

    /// Gives a lease's units back. `false` if they were already given back (its holder was
    /// taken for dead, or another process scribbled on its slot) or it belongs to another table.
    pub fn release_lease(&self, lease: Lease) -> bool {
        let released = self.release_lease_quietly(&lease);
        if released {
            self.table.parking().notify();
        }
        released
    }

    /// [`release_lease`](SharedLimits::release_lease) without waking parked processes (the
    /// caller does, once for several leases).
    pub(super) fn release_lease_quietly(&self, lease: &Lease) -> bool {
        lease.table == self.table.nonce() && self.table.leases().release(lease, &mut Unbounded).unwrap_or(false)
    }

    /// Gives back everything held by processes that are dead (and any dead acquire or release
    /// left half-way).
    ///
    /// # Errors
    /// No `/proc` to name this process.
    pub fn reclaim_dead_holders(&self) -> Result<Reclaimed, LimitError> {
        self.table.last_reclaim.store(MonotonicClock.now_nanos(), Ordering::Relaxed);
        self.table.reclaim(&|_| true)
    }

    /// Gives back everything `holder` held.
    ///
    /// # Errors
    /// [`LimitError::HolderAlive`] if it still runs (its units are its own), or no `/proc`.
    pub fn release_holder(&self, holder: Holder) -> Result<Reclaimed, LimitError> {
        if holder.liveness() == Liveness::Alive {
            return Err(LimitError::HolderAlive(holder.pid));
        }
        self.table.reclaim(&|h| h == holder)
    }

    /// Gives back what process `pid` held if it is dead (see [`reclaim_dead_process`], which
    /// does this for every table of this process).
    ///
    /// # Errors
    /// No `/proc` to name this process.
    pub fn release_dead_process(&self, pid: u32) -> Result<Reclaimed, LimitError> {
        self.table.reclaim(&|h| h.pid == pid)
    }

    /// The occupied lease slots: `(holder, limit, units, phase)`, phase one of `"held"`,
    /// `"acquiring"`, `"releasing"`, `"empty"` (claimed, not yet used) or `"garbage"`.
    #[must_use]
    pub fn leases(&self) -> Vec<(Option<Holder>, usize, u64, &'static str)> {
        self.table.leases().occupied()
    }

    /// Whether a refused lease should look for dead holders now (and note that it does).
    pub(super) fn reclaim_due(&self) -> bool {
        let now = MonotonicClock.now_nanos();
        let last = self.table.last_reclaim.load(Ordering::Relaxed);
        now.saturating_sub(last) >= RECLAIM_EVERY
            && self.table.last_reclaim.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}
