//! Model checks of the limit table's park/wake protocol (`wake.rs`, proof sketch there) under
//! every interleaving loom explores:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --quiet --release --lib loom
//! ```
//!
//! A park here has no timeout (see `wake::model`): if a wake-up could be lost, a waiter would
//! sleep for ever and loom reports the deadlock. The waiters follow
//! `SharedLimits::acquire_all` step for step (observe, attempt all or nothing, park), with a
//! semaphore word standing for each limit; givers follow `release_grant` and `cancel_grant`
//! (give back every unit, then notify once).

use loom::sync::atomic::{AtomicU64, Ordering::SeqCst};
use loom::sync::Arc;
use loom::thread;

use super::wake::{Parking, SLICE};
use crate::shm::loom_tests::model;

/// A table with two limits of capacity 1, and its parking words.
#[derive(Default)]
struct Table {
    limits: [AtomicU64; 2],
    generation: AtomicU64,
    waiters: AtomicU64,
}

impl Table {
    fn parking(&self) -> Parking<'_, AtomicU64> {
        Parking { generation: &self.generation, waiters: &self.waiters }
    }

    /// One unit of limit `i`, if free.
    fn take(&self, i: usize) -> bool {
        self.limits[i].compare_exchange(0, 1, SeqCst, SeqCst).is_ok()
    }

    /// An attempt on `wanted`, all or nothing (`Ok`), or refused (`Err`), with the generation
    /// its notify found if it gave back what it took before a later limit refused, as
    /// `attempt_all` and `cancel_grant` do.
    fn try_all(&self, wanted: &[usize]) -> Result<(), Option<u32>> {
        for (n, &i) in wanted.iter().enumerate() {
            if !self.take(i) {
                return Err((n > 0).then(|| self.give(&wanted[..n])));
            }
        }
        Ok(())
    }

    /// `acquire_all`: observe, attempt, park until a give (not its own).
    fn acquire_all(&self, wanted: &[usize]) {
        let parking = self.parking();
        loop {
            let mut seen = parking.observe();
            match self.try_all(wanted) {
                Ok(()) => return,
                Err(None) => {}
                Err(Some(before)) => match Parking::<AtomicU64>::after_own_give(seen, before) {
                    Some(next) => seen = next,
                    None => continue,
                },
            }
            parking.park(seen, SLICE);
        }
    }

    /// `release_grant`: every unit back, then one notify.
    fn give(&self, held: &[usize]) -> u32 {
        for &i in held {
            self.limits[i].fetch_sub(1, SeqCst);
        }
        self.parking().notify()
    }
}

/// A waiter refused by a held limit is woken by its release, whatever the interleaving.
#[test]
fn loom_a_waiter_is_woken_by_the_release_it_waits_for() {
    model(|| {
        let table = Arc::new(Table::default());
        table.limits[0].store(1, SeqCst); // held by the giver below
        let giver = {
            let table = Arc::clone(&table);
            thread::spawn(move || table.give(&[0]))
        };
        table.acquire_all(&[0]);
        giver.join().unwrap();
        assert_eq!(table.limits[0].load(SeqCst), 1);
    });
}

/// A taker of both limits is refused by the second (held by a giver) after taking the first,
/// so it gives the first back and parks; a taker of the first alone, refused meanwhile by that
/// transient hold, is woken by the undo; the first taker by the giver's release. Nobody sleeps
/// for ever, and nobody wakes itself into a spin (the model would run out of branches).
#[test]
fn loom_an_undone_partial_grant_wakes_the_others_and_not_itself() {
    model(|| {
        let table = Arc::new(Table::default());
        table.limits[1].store(1, SeqCst); // held by the giver below
        let both = {
            let table = Arc::clone(&table);
            thread::spawn(move || {
                table.acquire_all(&[0, 1]);
                table.give(&[0, 1]);
            })
        };
        let first = {
            let table = Arc::clone(&table);
            thread::spawn(move || {
                table.acquire_all(&[0]);
                table.give(&[0]);
            })
        };
        table.give(&[1]);
        both.join().unwrap();
        first.join().unwrap();
        assert_eq!(table.limits[0].load(SeqCst), 0);
        assert_eq!(table.limits[1].load(SeqCst), 0);
    });
}
