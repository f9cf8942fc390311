//! The lease protocol against deaths at every write: each holder (and each reclaimer) is
//! simulated by an identity of its own, and "killed after step k" stops its operation before
//! its (k+1)-th write to shared memory, as SIGKILL at that instruction would.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::holder::{Holder, Liveness};
use super::lease::{Crashed, Lease, Reclaimed, Steps, Unbounded};
use super::{LimitSpec, SharedLimits};

/// Stops before write number `k + 1`.
struct CrashAfter(usize);

impl Steps for CrashAfter {
    fn step(&mut self) -> Result<(), Crashed> {
        if self.0 == 0 {
            return Err(Crashed);
        }
        self.0 -= 1;
        Ok(())
    }
}

fn holder(n: u32) -> Holder {
    Holder { pid: 1000 + n, start_ticks: 77 }
}

/// A table of two resource limits and the set of simulated holders that are dead.
struct Sim {
    limits: SharedLimits,
    dead: HashSet<Holder>,
}

impl Sim {
    fn new() -> Self {
        Self {
            limits: SharedLimits::create(&[LimitSpec::resource(3), LimitSpec::resource(2)]).unwrap(),
            dead: HashSet::new(),
        }
    }

    fn lease(&self, h: Holder, limit: usize, amount: u64, steps: &mut impl Steps) -> Result<Option<Lease>, Crashed> {
        self.limits.table.leases().try_lease(h, limit, amount, steps)
    }

    fn release(&self, lease: &Lease, steps: &mut impl Steps) -> Result<bool, Crashed> {
        self.limits.table.leases().release(lease, steps)
    }

    fn reclaim(&self, me: Holder, steps: &mut impl Steps) -> Result<Reclaimed, Crashed> {
        let alive = |h: Holder| if self.dead.contains(&h) { Liveness::Dead } else { Liveness::Alive };
        self.limits.table.leases().reclaim(me, &|_| true, &alive, steps)
    }

    fn count(&self, limit: usize) -> u64 {
        self.limits.specs()[limit].capacity - self.limits.available(limit).unwrap()
    }

    /// Every count equals the units of the leases the live holders still hold, and no slot of
    /// a dead holder is left.
    fn assert_settled(&self, live: &[&Lease]) {
        for limit in 0..2 {
            let held: u64 = live.iter().filter(|l| l.limit == limit).map(|l| l.amount).sum();
            assert_eq!(self.count(limit), held, "limit {limit}: count vs live leases");
        }
        for (owner, _, _, phase) in self.limits.leases() {
            let owner = owner.expect("no garbage owner");
            assert!(!self.dead.contains(&owner), "a slot of dead {owner:?} is left ({phase})");
            assert_eq!(phase, "held", "{owner:?} left in {phase}");
        }
    }
}

/// Writes a complete acquire or release makes (an upper bound for the enumerations).
const MAX_STEPS: usize = 8;

#[derive(Clone, Copy, Debug)]
enum Op {
    Acquire,
    Release,
}

/// Victim `v` dies after `k` writes of `op` on limit 0, which live holders also use.
fn kill_victim(sim: &mut Sim, v: Holder, op: Op, k: usize) {
    let held = match op {
        Op::Acquire => None,
        Op::Release => Some(sim.lease(v, 0, 1, &mut Unbounded).unwrap().unwrap()),
    };
    let outcome = match (&held, op) {
        (Some(lease), Op::Release) => sim.release(lease, &mut CrashAfter(k)).map(|_| ()),
        _ => sim.lease(v, 0, 1, &mut CrashAfter(k)).map(|_| ()), // a lease left unreleased: it died holding
    };
    let _ = outcome;
    sim.dead.insert(v);
}

#[test]
fn a_holder_killed_after_any_write_of_acquire_or_release_is_settled_exactly() {
    for op in [Op::Acquire, Op::Release] {
        for k in 0..=MAX_STEPS {
            let mut sim = Sim::new();
            let a = sim.lease(holder(1), 0, 1, &mut Unbounded).unwrap().unwrap();
            kill_victim(&mut sim, holder(9), op, k);
            let b = sim.lease(holder(2), 0, 1, &mut Unbounded).unwrap().unwrap();
            let reclaimed = sim.reclaim(holder(50), &mut Unbounded).unwrap();
            assert!(reclaimed.complete, "{op:?} after {k}: {reclaimed:?}");
            sim.assert_settled(&[&a, &b]);
            assert!(sim.release(&a, &mut Unbounded).unwrap() && sim.release(&b, &mut Unbounded).unwrap());
            sim.assert_settled(&[]);
        }
    }
}

#[test]
fn two_victims_in_transition_on_one_limit_are_settled_together() {
    for (op1, op2) in [(Op::Acquire, Op::Acquire), (Op::Acquire, Op::Release), (Op::Release, Op::Release)] {
        for k1 in 0..=MAX_STEPS {
            for k2 in 0..=MAX_STEPS {
                let mut sim = Sim::new();
                let live = sim.lease(holder(1), 0, 1, &mut Unbounded).unwrap();
                kill_victim(&mut sim, holder(8), op1, k1);
                kill_victim(&mut sim, holder(9), op2, k2);
                let reclaimed = sim.reclaim(holder(50), &mut Unbounded).unwrap();
                assert!(reclaimed.complete);
                let live: Vec<&Lease> = live.iter().collect();
                sim.assert_settled(&live);
            }
        }
    }
}

#[test]
fn a_reclaimer_killed_after_any_write_leaves_work_the_next_one_finishes() {
    for op in [Op::Acquire, Op::Release] {
        for k in 0..=MAX_STEPS {
            for r in 0..=12 {
                let mut sim = Sim::new();
                let a = sim.lease(holder(1), 0, 1, &mut Unbounded).unwrap().unwrap();
                let other = sim.lease(holder(7), 1, 2, &mut Unbounded).unwrap().unwrap();
                sim.dead.insert(holder(7)); // held limit 1 when it died: no ambiguity, just units
                kill_victim(&mut sim, holder(9), op, k);
                let _ = sim.reclaim(holder(50), &mut CrashAfter(r));
                sim.dead.insert(holder(50));
                let reclaimed = sim.reclaim(holder(51), &mut Unbounded).unwrap();
                assert!(reclaimed.complete, "{op:?} after {k}, reclaimer after {r}");
                sim.assert_settled(&[&a]);
                let _ = other;
            }
        }
    }
}

#[test]
fn a_live_holder_in_transition_is_waited_for_not_guessed() {
    for k in 2..=4 {
        // After 2 to 4 writes (claim, intent, epoch, count) a live holder stopped half-way through its acquire (SIGSTOP, say) on the same limit
        // as a dead one: the dead one's part cannot be told, so nothing is touched.
        let mut sim = Sim::new();
        let _ = sim.lease(holder(1), 0, 1, &mut CrashAfter(k)); // "stopped": alive, in transition
        kill_victim(&mut sim, holder(9), Op::Acquire, 3);
        let before = sim.count(0);
        let reclaimed = sim.reclaim(holder(50), &mut Unbounded).unwrap();
        assert!(!reclaimed.complete);
        assert_eq!(sim.count(0), before);
        // Once it is gone too, both are settled.
        sim.dead.insert(holder(1));
        assert!(sim.reclaim(holder(50), &mut Unbounded).unwrap().complete);
        sim.assert_settled(&[]);
    }
}

#[test]
fn a_live_reclaimer_keeps_its_turn_and_a_dead_one_loses_it() {
    let mut sim = Sim::new();
    kill_victim(&mut sim, holder(9), Op::Acquire, 4);
    // Reclaimer 50 takes the turn and is stopped right after.
    let _ = sim.reclaim(holder(50), &mut CrashAfter(1));
    assert!(!sim.reclaim(holder(51), &mut Unbounded).unwrap().complete, "50 still runs");
    sim.dead.insert(holder(50));
    assert!(sim.reclaim(holder(51), &mut Unbounded).unwrap().complete);
    sim.assert_settled(&[]);
}

#[test]
fn garbage_in_the_segment_is_clamped_never_a_panic() {
    let sim = Sim::new();
    let words = sim.limits.table.segment.words();
    let lease = sim.lease(holder(1), 0, 2, &mut Unbounded).unwrap().unwrap();
    // Scribble over every slot word except the live holder's.
    for (i, w) in words.iter().enumerate().skip(super::STRIDE * 3) {
        if w.load(std::sync::atomic::Ordering::SeqCst) == 0 && i % 3 == 0 {
            w.store(u64::MAX - i as u64, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let alive = |h: Holder| if h == holder(1) { Liveness::Alive } else { Liveness::Dead };
    let leases = sim.limits.table.leases();
    let reclaimed = leases.reclaim(holder(50), &|_| true, &alive, &mut Unbounded).unwrap();
    assert!(reclaimed.units.iter().all(|&u| u <= 3));
    assert!(sim.count(0) <= 3 && sim.count(1) <= 2);
    let _ = sim.release(&lease, &mut Unbounded).unwrap();
    assert!(sim.count(0) <= 3);
}

/// One step of a random history.
#[derive(Clone, Debug)]
enum Step {
    /// Holder takes `amount` of `limit`.
    Lease { holder: u32, limit: usize, amount: u64 },
    /// Holder gives back its oldest lease.
    Release { holder: u32 },
    /// Holder dies after `k` writes of an acquire (or of releasing its oldest lease).
    Die { holder: u32, release: bool, k: usize },
    /// A reclaimer runs, maybe dying after `k` writes.
    Reclaim { crash: Option<usize> },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..4u32, 0..2usize, 1..=2u64).prop_map(|(holder, limit, amount)| Step::Lease { holder, limit, amount }),
        2 => (0..4u32).prop_map(|holder| Step::Release { holder }),
        1 => (0..4u32, any::<bool>(), 0..=MAX_STEPS).prop_map(|(holder, release, k)| Step::Die { holder, release, k }),
        1 => proptest::option::of(0..12usize).prop_map(|crash| Step::Reclaim { crash }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_history_of_deaths_settles_to_the_live_leases(steps in proptest::collection::vec(step(), 1..40)) {
        let mut sim = Sim::new();
        // Each life of holder n is a fresh identity (n + 10 * life), as a new process is.
        let mut lives: HashMap<u32, u32> = HashMap::new();
        let mut held: HashMap<Holder, Vec<Lease>> = HashMap::new();
        let mut reclaimers = 5000;
        for s in steps {
            match s {
                Step::Lease { holder: n, limit, amount } => {
                    let h = holder(n + 10 * lives.get(&n).copied().unwrap_or(0));
                    if let Some(lease) = sim.lease(h, limit, amount, &mut Unbounded).unwrap() {
                        held.entry(h).or_default().push(lease);
                    }
                }
                Step::Release { holder: n } => {
                    let h = holder(n + 10 * lives.get(&n).copied().unwrap_or(0));
                    if let Some(lease) = held.get_mut(&h).filter(|v| !v.is_empty()).map(|v| v.remove(0)) {
                        prop_assert!(sim.release(&lease, &mut Unbounded).unwrap(), "a live holder's lease was taken");
                    }
                }
                Step::Die { holder: n, release, k } => {
                    let life = lives.entry(n).or_insert(0);
                    let h = holder(n + 10 * *life);
                    *life += 1;
                    let mine = held.remove(&h).unwrap_or_default();
                    match mine.first() {
                        Some(lease) if release => { let _ = sim.release(lease, &mut CrashAfter(k)); }
                        _ => { let _ = sim.lease(h, 0, 1, &mut CrashAfter(k)); }
                    }
                    sim.dead.insert(h);
                }
                Step::Reclaim { crash } => {
                    reclaimers += 1;
                    let me = Holder { pid: reclaimers, start_ticks: 99 };
                    match crash {
                        Some(k) => { let _ = sim.reclaim(me, &mut CrashAfter(k)); sim.dead.insert(me); }
                        None => { let _ = sim.reclaim(me, &mut Unbounded).unwrap(); }
                    }
                }
            }
            for limit in 0..2 {
                prop_assert!(sim.count(limit) <= sim.limits.specs()[limit].capacity);
            }
        }
        let reclaimed = sim.reclaim(holder(999), &mut Unbounded).unwrap();
        prop_assert!(reclaimed.complete);
        let live: Vec<&Lease> = held.values().flatten().collect();
        sim.assert_settled(&live);
        for lease in live {
            prop_assert!(sim.release(lease, &mut Unbounded).unwrap());
        }
        sim.assert_settled(&[]);
    }
}

/// A real child process, exited and reaped: its identity (read while it was a zombie).
fn dead_process() -> Holder {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    let start_ticks = loop {
        match super::holder::read_stat(pid).unwrap() {
            Some((b'Z', start)) => break start,
            _ => std::thread::yield_now(),
        }
    };
    child.wait().unwrap();
    Holder { pid, start_ticks }
}

#[test]
fn the_supervisor_entry_point_reclaims_a_dead_pid_in_every_table_and_spares_the_living() {
    let sim = Sim::new();
    let dead = dead_process();
    let me = Holder::current().unwrap();
    let _theirs = sim.lease(dead, 0, 2, &mut Unbounded).unwrap().unwrap();
    let mine = sim.lease(me, 0, 1, &mut Unbounded).unwrap().unwrap();
    assert_eq!(sim.count(0), 3);
    // The pid of a live process reclaims nothing (here: this one).
    let _ = super::reclaim_dead_process(me.pid);
    assert!(matches!(sim.limits.release_holder(me), Err(super::LimitError::HolderAlive(_))));
    assert_eq!(sim.count(0), 3);
    // Another test thread may be reclaiming at the same moment (then ours reports not complete).
    let reclaimed = (0..1000)
        .map(|_| super::reclaim_dead_process(dead.pid))
        .find(|r| r.iter().any(|r| r.units == [2, 0]))
        .expect("reclaimed");
    assert!(reclaimed.iter().any(|r| r.units == [2, 0] && r.slots == 1 && r.complete), "{reclaimed:?}");
    assert_eq!(sim.count(0), 1);
    assert!(sim.limits.release_lease(Lease { table: sim.limits.table.nonce(), ..mine }));
    assert_eq!(sim.count(0), 0);
}

#[test]
fn a_refused_lease_reclaims_a_dead_holders_units_itself() {
    let limits = SharedLimits::create(&[LimitSpec::resource(1)]).unwrap();
    let dead = dead_process();
    let _theirs = limits.table.leases().try_lease(dead, 0, 1, &mut Unbounded).unwrap().unwrap();
    // Refused waiters look every 50 ms (and not while another thread of this process does).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let lease = loop {
        if let Some(lease) = limits.try_lease(0, 1).unwrap() {
            break lease;
        }
        assert!(std::time::Instant::now() < deadline, "the dead holder's unit never came back");
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert!(limits.try_lease(0, 1).unwrap().is_none());
    assert!(limits.release_lease(lease));
}

#[test]
fn reclaims_racing_live_holders_and_deaths_on_real_threads_settle_exactly() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};

    let limits = Arc::new(SharedLimits::create(&[LimitSpec::resource(3)]).unwrap());
    let dead = Arc::new(Mutex::new(HashSet::<Holder>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let next_victim = Arc::new(AtomicU32::new(0));
    let mut threads = Vec::new();
    for t in 0..2u32 {
        // Live holders: every release must find its lease (a reclaimer never takes it).
        let (limits, stop) = (Arc::clone(&limits), Arc::clone(&stop));
        threads.push(std::thread::spawn(move || {
            let me = holder(t);
            let mut rounds = 0u32;
            while !stop.load(Ordering::Relaxed) {
                if let Some(lease) = limits.table.leases().try_lease(me, 0, 1, &mut Unbounded).unwrap() {
                    assert!(limits.available(0).unwrap() <= 2);
                    assert!(limits.table.leases().release(&lease, &mut Unbounded).unwrap(), "a live lease was taken");
                    rounds += 1;
                }
            }
            rounds
        }));
    }
    {
        // Victims: each a fresh identity dying after a random number of writes.
        let (limits, stop, dead, next) =
            (Arc::clone(&limits), Arc::clone(&stop), Arc::clone(&dead), Arc::clone(&next_victim));
        threads.push(std::thread::spawn(move || {
            let mut rng = 0x2545_F491_4F6C_DD1Du64;
            while !stop.load(Ordering::Relaxed) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let victim = holder(100 + next.fetch_add(1, Ordering::Relaxed));
                let k = usize::try_from(rng % 12).unwrap();
                let leases = limits.table.leases();
                if rng % 2 == 0 {
                    let _ = leases.try_lease(victim, 0, 1, &mut CrashAfter(k));
                } else if let Ok(Some(lease)) = leases.try_lease(victim, 0, 1, &mut Unbounded) {
                    let _ = leases.release(&lease, &mut CrashAfter(k));
                }
                dead.lock().unwrap().insert(victim);
                std::thread::yield_now();
            }
            0
        }));
    }
    {
        let (limits, stop, dead) = (Arc::clone(&limits), Arc::clone(&stop), Arc::clone(&dead));
        threads.push(std::thread::spawn(move || {
            let mut reclaims = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let alive =
                    |h: Holder| if dead.lock().unwrap().contains(&h) { Liveness::Dead } else { Liveness::Alive };
                let _ = limits
                    .table
                    .leases()
                    .reclaim(Holder { pid: 9999, start_ticks: 1 }, &|_| true, &alive, &mut Unbounded)
                    .unwrap();
                reclaims += 1;
            }
            reclaims
        }));
    }
    std::thread::sleep(std::time::Duration::from_millis(400));
    stop.store(true, Ordering::Relaxed);
    let counts: Vec<u32> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(counts[0] > 0 && counts[1] > 0 && counts[3] > 0, "{counts:?}");
    assert!(next_victim.load(Ordering::Relaxed) > 10);
    let dead = dead.lock().unwrap().clone();
    let alive = |h: Holder| if dead.contains(&h) { Liveness::Dead } else { Liveness::Alive };
    let last =
        limits.table.leases().reclaim(Holder { pid: 9998, start_ticks: 1 }, &|_| true, &alive, &mut Unbounded).unwrap();
    assert!(last.complete);
    assert_eq!(limits.available(0).unwrap(), 3, "every unit back: {:?}", limits.leases());
    assert!(limits.leases().is_empty(), "{:?}", limits.leases());
}
