//! The worker state machine as a pure function, so every transition can be tested exhaustively.
//!
//! ```text
//!             Ready                TaskStarted
//!  Starting ─────────▶ Idle ◀──────────────────▶ Busy
//!     ▲  │              │ │   TaskFinished        │
//!     │  │ Crashed      │ │ Recycle               │ Crashed / TimedOut
//!     │  ▼              │ └──────▶ Starting       ▼
//!     │ Failed ◀────────┴──────────────────────── Failed
//!     └──────┘ Restart
//!  any live state ── StopRequested ──▶ Stopping ── Exited ──▶ Stopped
//! ```

use std::fmt;

/// Where one worker is in its life. See the module docs for the transition diagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum WorkerState {
    /// The worker is being created or re-created (its setup is running).
    Starting = 0,
    /// The worker is ready and waits for a task.
    Idle = 1,
    /// The worker is processing a task.
    Busy = 2,
    /// The worker died, crashed or was killed; the restart policy decides what happens next.
    Failed = 3,
    /// The worker was asked to stop and is finishing.
    Stopping = 4,
    /// The worker is gone for good.
    Stopped = 5,
}

impl WorkerState {
    /// All states, in declaration order.
    pub const ALL: [WorkerState; 6] = [
        WorkerState::Starting,
        WorkerState::Idle,
        WorkerState::Busy,
        WorkerState::Failed,
        WorkerState::Stopping,
        WorkerState::Stopped,
    ];

    /// The lowercase name used in statistics (`"idle"`, `"busy"`, ...).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Failed => "failed",
            WorkerState::Stopping => "stopping",
            WorkerState::Stopped => "stopped",
        }
    }

    pub(crate) fn from_u8(raw: u8) -> WorkerState {
        Self::ALL[usize::from(raw).min(Self::ALL.len() - 1)]
    }

    /// Whether the worker can still serve tasks now or after a restart.
    #[must_use]
    pub fn is_live(self) -> bool {
        matches!(self, WorkerState::Starting | WorkerState::Idle | WorkerState::Busy)
    }
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happened to a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkerEvent {
    /// Setup finished; the worker can take tasks.
    Ready,
    /// The worker took a task.
    TaskStarted,
    /// The worker finished a task (successfully or with the task's own error).
    TaskFinished,
    /// The worker died or its setup failed.
    Crashed,
    /// A task ran past its deadline and the worker was killed.
    TimedOut,
    /// The worker is replaced between tasks (task count or memory limit reached).
    Recycle,
    /// A failed worker is started again.
    Restart,
    /// The supervisor asks the worker to stop.
    StopRequested,
    /// The worker's resources are released.
    Exited,
}

/// A transition the state machine does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("worker cannot go from {from} on {event:?}")]
pub struct InvalidTransition {
    /// The state the worker was in.
    pub from: WorkerState,
    /// The event that does not apply to it.
    pub event: WorkerEvent,
}

/// The state a worker in `from` moves to on `event`.
///
/// # Errors
/// [`InvalidTransition`] when `event` cannot happen in `from` (a bug in the caller).
pub fn transition(from: WorkerState, event: WorkerEvent) -> Result<WorkerState, InvalidTransition> {
    use WorkerEvent as E;
    use WorkerState as S;
    let to = match (from, event) {
        (S::Starting, E::Ready) => S::Idle,
        (S::Idle, E::TaskStarted) => S::Busy,
        (S::Busy, E::TaskFinished) => S::Idle,
        (S::Starting | S::Idle | S::Busy, E::Crashed) | (S::Busy, E::TimedOut) => S::Failed,
        (S::Idle, E::Recycle) | (S::Failed, E::Restart) => S::Starting,
        (S::Starting | S::Idle | S::Busy | S::Failed, E::StopRequested) => S::Stopping,
        (S::Stopping | S::Failed, E::Exited) => S::Stopped,
        _ => return Err(InvalidTransition { from, event }),
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: [WorkerEvent; 9] = [
        WorkerEvent::Ready,
        WorkerEvent::TaskStarted,
        WorkerEvent::TaskFinished,
        WorkerEvent::Crashed,
        WorkerEvent::TimedOut,
        WorkerEvent::Recycle,
        WorkerEvent::Restart,
        WorkerEvent::StopRequested,
        WorkerEvent::Exited,
    ];

    #[test]
    fn happy_path_round_trip() {
        let mut s = WorkerState::Starting;
        for e in [WorkerEvent::Ready, WorkerEvent::TaskStarted, WorkerEvent::TaskFinished] {
            s = transition(s, e).unwrap();
        }
        assert_eq!(s, WorkerState::Idle);
        s = transition(s, WorkerEvent::StopRequested).unwrap();
        assert_eq!(transition(s, WorkerEvent::Exited).unwrap(), WorkerState::Stopped);
    }

    #[test]
    fn failures_lead_to_failed_and_back_through_starting() {
        assert_eq!(transition(WorkerState::Busy, WorkerEvent::Crashed), Ok(WorkerState::Failed));
        assert_eq!(transition(WorkerState::Busy, WorkerEvent::TimedOut), Ok(WorkerState::Failed));
        assert_eq!(transition(WorkerState::Idle, WorkerEvent::Crashed), Ok(WorkerState::Failed));
        assert_eq!(transition(WorkerState::Starting, WorkerEvent::Crashed), Ok(WorkerState::Failed));
        assert_eq!(transition(WorkerState::Failed, WorkerEvent::Restart), Ok(WorkerState::Starting));
        assert_eq!(transition(WorkerState::Failed, WorkerEvent::Exited), Ok(WorkerState::Stopped));
        assert_eq!(transition(WorkerState::Idle, WorkerEvent::Recycle), Ok(WorkerState::Starting));
    }

    #[test]
    fn stopped_is_terminal_and_idle_cannot_time_out() {
        for e in EVENTS {
            assert!(transition(WorkerState::Stopped, e).is_err(), "{e:?}");
        }
        assert!(transition(WorkerState::Idle, WorkerEvent::TimedOut).is_err());
        assert!(transition(WorkerState::Busy, WorkerEvent::TaskStarted).is_err());
        assert!(transition(WorkerState::Busy, WorkerEvent::Recycle).is_err());
    }

    #[test]
    fn every_state_reaches_stopped_and_every_live_state_can_stop() {
        for s in WorkerState::ALL {
            let mut cur = s;
            for _ in 0..3 {
                if cur == WorkerState::Stopped {
                    break;
                }
                cur = transition(cur, WorkerEvent::StopRequested)
                    .or_else(|_| transition(cur, WorkerEvent::Exited))
                    .unwrap();
            }
            assert_eq!(cur, WorkerState::Stopped, "from {s}");
            if s.is_live() {
                assert_eq!(transition(s, WorkerEvent::StopRequested), Ok(WorkerState::Stopping));
            }
        }
    }

    #[test]
    fn u8_round_trip() {
        for s in WorkerState::ALL {
            assert_eq!(WorkerState::from_u8(s as u8), s);
        }
    }
}
