//! The handle on one worker process, whichever way it started: a child of ours
//! ([`StartMethod::Spawn`](super::StartMethod::Spawn)), or a child of the pool's zygote, which
//! we watch through a pidfd and whose exit status the zygote reaps and reports to us.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::process::Child;
use tokio::sync::oneshot;

/// How long a forked worker's exit status may take to arrive once the pidfd says it exited:
/// the zygote reaps within microseconds unless it is stopped, and then we stop waiting.
const REPORT_GRACE: Duration = Duration::from_secs(1);

/// A worker process: the supervisor's way to wait for it, probe it and kill it.
#[derive(Debug)]
pub(crate) enum WorkerChild {
    /// Started afresh by us: a child of this process.
    Spawned(Child),
    /// Forked by the pool's zygote.
    Forked(ForkedChild),
}

impl WorkerChild {
    /// The process id, while we have not seen it exit.
    pub(crate) fn id(&self) -> Option<u32> {
        match self {
            Self::Spawned(child) => child.id(),
            Self::Forked(child) => child.status.is_none().then_some(child.pid),
        }
    }

    /// Its exit status if it has exited (waiting, boundedly, for a forked one's status to be
    /// reported); `None` while it runs or when that cannot be told.
    pub(crate) async fn exited(&mut self) -> Option<ExitStatus> {
        match self {
            Self::Spawned(child) => child.try_wait().ok().flatten(),
            Self::Forked(child) if child.status.is_some() || child.has_exited() => child.wait().await.ok(),
            Self::Forked(_) => None,
        }
    }

    /// Whether it is running as far as we can tell without waiting.
    pub(crate) fn is_running(&mut self) -> bool {
        match self {
            Self::Spawned(child) => matches!(child.try_wait(), Ok(None)),
            Self::Forked(child) => child.status.is_none() && !child.has_exited(),
        }
    }

    /// Waits for it to exit; its exit status.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        match self {
            Self::Spawned(child) => child.wait().await,
            Self::Forked(child) => child.wait().await,
        }
    }

    /// Sends SIGKILL and waits until it is gone (reaped, for our own children).
    pub(crate) async fn kill(&mut self) -> io::Result<()> {
        match self {
            Self::Spawned(child) => child.kill().await,
            Self::Forked(child) => child.kill().await,
        }
    }
}

/// A worker forked by a zygote: not our child, so we cannot reap it; the zygote does and tells
/// us its status, and its pidfd (opened by the zygote before it could reap, so it names the
/// right process) tells us when it exited and lets us signal it without pid-reuse races.
#[derive(Debug)]
pub(crate) struct ForkedChild {
    pid: u32,
    pidfd: AsyncFd<OwnedFd>,
    /// The raw wait status, from the zygote; closed unsent when the zygote is gone.
    report: Option<oneshot::Receiver<i32>>,
    /// The exit status, once known.
    status: Option<ExitStatus>,
}

impl ForkedChild {
    /// Wraps a worker the zygote forked. Must run inside a tokio runtime.
    pub(crate) fn new(pid: u32, pidfd: OwnedFd, report: oneshot::Receiver<i32>) -> io::Result<Self> {
        let pidfd = super::unix_socket::register(pidfd, Interest::READABLE)?;
        Ok(Self { pid, pidfd, report: Some(report), status: None })
    }

    /// Its process id, as `sched_setaffinity` and friends take it.
    pub(crate) fn pid(&self) -> Option<libc::pid_t> {
        libc::pid_t::try_from(self.pid).ok()
    }

    /// Whether the process has exited (its pidfd polls readable), without waiting.
    fn has_exited(&self) -> bool {
        let mut poll = libc::pollfd { fd: self.pidfd.get_ref().as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, zero timeout.
        unsafe { libc::poll(&mut poll, 1, 0) > 0 }
    }

    /// Cancel-safe: dropped half-way, it loses nothing (the report stays in its channel).
    async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let Self { pidfd, report, status, .. } = self;
        let Some(receiver) = report.as_mut() else {
            return Err(io::Error::other("worker exit status is not known: its zygote did not report it"));
        };
        let reported = tokio::select! {
            biased;
            reported = &mut *receiver => reported,
            exited = exit(pidfd) => {
                exited?;
                match tokio::time::timeout(REPORT_GRACE, &mut *receiver).await {
                    Ok(reported) => reported,
                    Err(_) => {
                        return Err(io::Error::other(
                            "worker exited but its zygote, stopped or hung, did not report its status",
                        ));
                    }
                }
            }
        };
        *report = None;
        let exit_status = match reported {
            Ok(raw) => ExitStatus::from_raw(raw),
            Err(_) => {
                // The zygote is gone, and its workers with it: each one's parent-death signal
                // is SIGKILL, which is what we report once the process is gone.
                exit(pidfd).await?;
                ExitStatus::from_raw(libc::SIGKILL)
            }
        };
        *status = Some(exit_status);
        Ok(exit_status)
    }

    /// SIGKILL through the pidfd, then waits until the process exited (the zygote reaps it).
    async fn kill(&mut self) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        self.signal(libc::SIGKILL)?;
        exit(&self.pidfd).await
    }

    fn signal(&self, signal: libc::c_int) -> io::Result<()> {
        // SAFETY: pidfd_send_signal with a pidfd we own, no siginfo, no flags.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.get_ref().as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        match rc {
            0 => Ok(()),
            _ => match io::Error::last_os_error() {
                // Already exited (a zombie still counts as the same process): nothing to kill.
                e if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
                e => Err(e),
            },
        }
    }
}

/// Waits until the pidfd's process has exited (not necessarily reaped).
async fn exit(pidfd: &AsyncFd<OwnedFd>) -> io::Result<()> {
    let mut ready = pidfd.readable().await?;
    // A pidfd stays readable once its process exited: keep the readiness for later waits.
    ready.retain_ready();
    Ok(())
}

impl Drop for ForkedChild {
    /// Like a spawned worker's `kill_on_drop`: a worker nobody holds any more is killed.
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.signal(libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    /// A child of this test (standing in for the zygote's child) and a pidfd on it.
    fn watched(program: &str, args: &[&str]) -> (std::process::Child, OwnedFd) {
        let child = std::process::Command::new(program).args(args).spawn().unwrap();
        let pid = libc::pid_t::try_from(child.id()).unwrap();
        // SAFETY: pidfd_open on a pid of our own unreaped child, no flags.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        assert!(fd >= 0, "pidfd_open: {}", io::Error::last_os_error());
        // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
        (child, unsafe { OwnedFd::from_raw_fd(std::os::fd::RawFd::try_from(fd).unwrap()) })
    }

    #[tokio::test]
    async fn a_forked_worker_reads_its_reported_status_and_is_killed_through_its_pidfd() {
        let (mut process, pidfd) = watched("sh", &["-c", "exit 3"]);
        let (report, reported) = oneshot::channel();
        let mut child = WorkerChild::Forked(ForkedChild::new(process.id(), pidfd, reported).unwrap());
        let status = process.wait().unwrap(); // the "zygote" reaps it and reports the status
        report.send(status.into_raw()).unwrap();
        assert_eq!(child.wait().await.unwrap().code(), Some(3));
        assert_eq!(child.exited().await.and_then(|s| s.code()), Some(3));
        assert!(!child.is_running() && child.id().is_none());

        let (mut process, pidfd) = watched("sleep", &["30"]);
        let (report, reported) = oneshot::channel::<i32>();
        let mut child = WorkerChild::Forked(ForkedChild::new(process.id(), pidfd, reported).unwrap());
        assert!(child.is_running() && child.exited().await.is_none());
        child.kill().await.unwrap(); // returns once it exited, reaped or not
        assert!(!child.is_running());
        drop(report); // the zygote is gone without a report: SIGKILL, as its death signal says
        assert_eq!(child.wait().await.unwrap().signal(), Some(libc::SIGKILL));
        assert_eq!(process.wait().unwrap().signal(), Some(libc::SIGKILL));
    }

    #[tokio::test]
    async fn a_silent_zygote_does_not_hang_a_wait() {
        let (mut process, pidfd) = watched("true", &[]);
        let (_report, reported) = oneshot::channel::<i32>(); // kept, never sent: a hung zygote
        let mut child = WorkerChild::Forked(ForkedChild::new(process.id(), pidfd, reported).unwrap());
        let error = tokio::time::timeout(REPORT_GRACE * 5, child.wait()).await.expect("bounded").unwrap_err();
        assert!(error.to_string().contains("did not report"), "{error}");
        process.wait().unwrap();
    }
}
