//! [`Members`]: which supervisor workers make up one worker as Python sees it.
//!
//! The supervisor runs one task per worker at a time, so a host that takes `concurrency` calls
//! at once (an asyncio event loop; a Ray actor with calls queued at it) is registered as that
//! many *lanes*: supervisor workers
//! sharing one host. Stats, broadcasts, retirement and worker ids are reported per host, the
//! id of its first lane. A worker with one lane (every other mode) is not recorded: its lane
//! id is its id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::error::TaskError;
use crate::job::Outcome;
use crate::{Workable, WorkerInfo, WorkerState};

/// Lane id -> the id of the worker (host) it belongs to.
#[derive(Clone, Default)]
pub(crate) struct Members(Arc<Mutex<HashMap<u64, u64>>>);

impl Members {
    /// The table, locked: a worker's lanes are recorded while it starts, before any reports.
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<u64, u64>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The worker a lane belongs to.
    pub(crate) fn worker_of(&self, lane: u64) -> u64 {
        self.lock().get(&lane).copied().unwrap_or(lane)
    }

    /// The lanes of a worker.
    pub(crate) fn lanes_of(&self, worker: u64) -> Vec<u64> {
        let lanes: Vec<u64> = self.lock().iter().filter(|(_, w)| **w == worker).map(|(l, _)| *l).collect();
        if lanes.is_empty() {
            vec![worker]
        } else {
            lanes
        }
    }

    /// `(worker, one of its lanes)` for every worker with a live lane, in worker order.
    pub(crate) fn live(&self, live_lanes: Vec<u64>) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for lane in live_lanes {
            let worker = self.worker_of(lane);
            if !out.iter().any(|(w, _)| *w == worker) {
                out.push((worker, lane));
            }
        }
        out
    }

    /// One entry per worker, its lanes' counts added up.
    pub(crate) fn merge(&self, lanes: Vec<WorkerInfo>) -> Vec<WorkerInfo> {
        let mut merged: Vec<WorkerInfo> = Vec::new();
        for lane in lanes {
            let worker = self.worker_of(lane.id);
            match merged.iter_mut().find(|w| w.id == worker) {
                Some(entry) => merge(entry, &lane),
                None => merged.push(WorkerInfo { id: worker, ..lane }),
            }
        }
        merged
    }

    /// `outcome` with a crashed lane's id replaced by its worker's.
    pub(crate) fn relabel<W: Workable>(&self, outcome: Outcome<W>) -> Outcome<W> {
        match outcome {
            Err(TaskError::WorkerCrashed { worker, fault }) => {
                Err(TaskError::WorkerCrashed { worker: self.worker_of(worker), fault })
            }
            other => other,
        }
    }
}

/// Adds one lane's counts into its worker's entry.
fn merge(into: &mut WorkerInfo, lane: &WorkerInfo) {
    if lane.state == WorkerState::Busy && into.state == WorkerState::Idle {
        into.state = WorkerState::Busy;
    }
    into.restarts += lane.restarts;
    into.tasks_done += lane.tasks_done;
    into.tasks_failed += lane.tasks_failed;
    into.dispatched += lane.dispatched;
    into.batches += lane.batches;
    into.batched_tasks += lane.batched_tasks;
    into.health_failures += lane.health_failures;
    if into.last_error.is_none() {
        into.last_error.clone_from(&lane.last_error);
    }
    into.pid = into.pid.or(lane.pid);
}
