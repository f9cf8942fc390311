//! Load balancers: which idle worker gets the next task.
//!
//! Tasks are bound to workers late: the dispatcher hands a task out only when some worker is
//! idle, and the balancer chooses among the idle ones. So no balancer can queue a fast task
//! behind a slow one while another worker sits idle; the balancer decides fairness among the
//! free workers (and, with several idle, which one warms up).

mod least_active;
mod least_total;
mod random;
pub(crate) mod rendezvous;
mod round_robin;

use std::fmt;
use std::str::FromStr;

/// One idle worker the balancer may choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// The worker's id.
    pub id: u64,
    /// Tasks it is running now (0 for an idle process worker).
    pub active: u64,
    /// Tasks it has been given over its life.
    pub total: u64,
}

/// The balancing algorithm of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum LoadBalancing {
    /// Cycle through the workers in id order, skipping busy ones (default).
    #[default]
    RoundRobin,
    /// The worker with the fewest tasks in flight; ties go round-robin.
    LeastActive,
    /// The worker with the fewest tasks over its life; ties go to the lowest id.
    LeastTotal,
    /// A uniformly random idle worker.
    Random,
}

impl LoadBalancing {
    /// The canonical name (`"round_robin"`, `"active"`, `"total"`, `"random"`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            LoadBalancing::RoundRobin => "round_robin",
            LoadBalancing::LeastActive => "active",
            LoadBalancing::LeastTotal => "total",
            LoadBalancing::Random => "random",
        }
    }
}

impl fmt::Display for LoadBalancing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown balancer name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown load balancing {0:?}: use round_robin (rr), active (least_active), total (least_total) or random (rand)"
)]
pub struct UnknownBalancer(pub String);

impl FromStr for LoadBalancing {
    type Err = UnknownBalancer;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "round_robin" | "rr" => LoadBalancing::RoundRobin,
            "active" | "least_active" => LoadBalancing::LeastActive,
            "total" | "least_total" => LoadBalancing::LeastTotal,
            "random" | "rand" => LoadBalancing::Random,
            other => return Err(UnknownBalancer(other.to_owned())),
        })
    }
}

/// A balancer with its state (round-robin cursor, random generator).
#[derive(Clone, Debug)]
pub(crate) struct Balancer {
    kind: LoadBalancing,
    last: Option<u64>,
    rng: u64,
}

impl Balancer {
    /// A balancer of `kind`; `seed` feeds the random one.
    #[must_use]
    pub(crate) fn new(kind: LoadBalancing, seed: u64) -> Self {
        Self { kind, last: None, rng: seed | 1 }
    }

    /// The index in `candidates` of the worker to use. `candidates` must not be empty.
    ///
    /// # Panics
    /// When `candidates` is empty.
    pub(crate) fn pick(&mut self, candidates: &[Candidate]) -> usize {
        assert!(!candidates.is_empty(), "no candidate to pick from");
        let index = match self.kind {
            LoadBalancing::RoundRobin => round_robin::pick(candidates, self.last),
            LoadBalancing::LeastActive => least_active::pick(candidates, self.last),
            LoadBalancing::LeastTotal => least_total::pick(candidates),
            LoadBalancing::Random => random::pick(candidates, &mut self.rng),
        };
        self.last = Some(candidates[index].id);
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(ids: &[u64]) -> Vec<Candidate> {
        ids.iter().map(|&id| Candidate { id, active: 0, total: 0 }).collect()
    }

    #[test]
    fn names_and_aliases() {
        for (name, kind) in [
            ("rr", LoadBalancing::RoundRobin),
            ("least_active", LoadBalancing::LeastActive),
            ("least_total", LoadBalancing::LeastTotal),
            ("rand", LoadBalancing::Random),
        ] {
            assert_eq!(name.parse::<LoadBalancing>().unwrap(), kind);
            assert_eq!(kind.as_str().parse::<LoadBalancing>().unwrap(), kind);
        }
        assert!("fastest".parse::<LoadBalancing>().is_err());
    }

    #[test]
    fn round_robin_cycles_over_all_idle_workers() {
        let mut b = Balancer::new(LoadBalancing::RoundRobin, 1);
        let all = idle(&[0, 1, 2]);
        let picks: Vec<u64> = (0..6).map(|_| all[b.pick(&all)].id).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        // Worker 0 busy: the cycle goes on with the idle ones.
        let some = idle(&[1, 2]);
        assert_eq!(some[b.pick(&some)].id, 1);
        assert_eq!(some[b.pick(&some)].id, 2);
    }

    #[test]
    fn least_total_prefers_the_least_used() {
        let mut b = Balancer::new(LoadBalancing::LeastTotal, 1);
        let c = [Candidate { id: 0, active: 0, total: 9 }, Candidate { id: 1, active: 0, total: 3 }];
        assert_eq!(b.pick(&c), 1);
    }

    #[test]
    fn least_active_prefers_fewest_in_flight() {
        let mut b = Balancer::new(LoadBalancing::LeastActive, 1);
        let c = [Candidate { id: 0, active: 2, total: 0 }, Candidate { id: 1, active: 1, total: 50 }];
        assert_eq!(b.pick(&c), 1);
    }

    #[test]
    fn every_balancer_picks_in_range_and_random_spreads() {
        let all = idle(&[3, 5, 8, 13]);
        for kind in
            [LoadBalancing::RoundRobin, LoadBalancing::LeastActive, LoadBalancing::LeastTotal, LoadBalancing::Random]
        {
            let mut b = Balancer::new(kind, 42);
            for n in 1..=all.len() {
                assert!(b.pick(&all[..n]) < n);
            }
        }
        let mut b = Balancer::new(LoadBalancing::Random, 7);
        let mut counts = [0u32; 4];
        for _ in 0..4000 {
            counts[b.pick(&all)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
