//! Starting a worker process: a fresh program (no fork of the threaded parent past `exec`), its
//! own process group, `PR_SET_PDEATHSIG`, and the two protocol pipes on fds 3 and 4; or, with
//! [`StartMethod::Zygote`], a fork of a single-threaded template process that was itself
//! started that way (see [`super::zygote`]), handed the same descriptors.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::child::WorkerChild;
use super::zygote::{Zygote, ZygoteError};

/// The descriptor the worker reads frames from.
pub(super) const WORKER_READ_FD: RawFd = 3;
/// The descriptor the worker writes frames to (with shared memory: doorbell bytes only).
pub(super) const WORKER_WRITE_FD: RawFd = 4;
/// The shared-memory segment's descriptor in the worker, when the spec asks for one.
pub(super) const WORKER_SHM_FD: RawFd = 5;
/// Environment variable telling the worker that its frames travel through the segment on
/// [`WORKER_SHM_FD`] (value `"shm"`); absent, they travel through the pipes.
pub(super) const TRANSPORT_ENV: &str = "WORKER_POOL_TRANSPORT";
/// Environment variable carrying [`ProcessSpec::max_message_size`] to the worker, which refuses
/// larger frames too (absent: [`super::DEFAULT_MAX_MESSAGE_SIZE`]).
pub(super) const MAX_MESSAGE_ENV: &str = "WORKER_POOL_MAX_MESSAGE_SIZE";

/// How to start one worker process.
#[derive(Clone, Debug)]
pub struct ProcessSpec {
    /// The program to run, e.g. the Python interpreter.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Environment variables set on top of the parent's.
    pub env: Vec<(OsString, OsString)>,
    /// Its working directory (`None`: the parent's).
    pub cwd: Option<PathBuf>,
    /// How long a graceful stop may take before the process is killed.
    pub stop_timeout: Duration,
    /// Bytes per direction of a shared-memory channel to the worker (`None`: frames travel
    /// through the pipes). Larger messages stream through it.
    pub shm_capacity: Option<usize>,
    /// The largest frame payload either side sends or accepts (default
    /// [`super::DEFAULT_MAX_MESSAGE_SIZE`], 1 GiB). A worker that announces a larger one broke
    /// the protocol and is replaced; a larger call fails without reaching the worker.
    pub max_message_size: usize,
    /// Where this worker runs: its own environment variables and CPU affinity, applied at every
    /// (re)start of its process (see [`Placement`]).
    pub placement: Placement,
    /// Serves the workers' upcalls (see [`super::upcall`]); `None`: an upcall is a protocol
    /// violation. A pool serving upcalls sends one call at a time and has no direct lane.
    pub(crate) upcalls: Option<super::Upcalls>,
    /// How a worker process comes to be (default [`StartMethod::Spawn`]).
    pub start_method: StartMethod,
}

/// How [`super::ProcessWorker`] starts a worker process.
#[derive(Clone, Debug, Default)]
pub enum StartMethod {
    /// Run [`ProcessSpec::program`] afresh for every worker: slow (an interpreter's start and
    /// imports), and nothing is shared.
    #[default]
    Spawn,
    /// Fork every worker from a template process (see [`Zygote`]); [`ProcessSpec::program`] and
    /// its arguments are then unused. Clones of the spec share the template.
    Zygote(Arc<Zygote>),
}

impl ProcessSpec {
    /// A spec running `program` with `args`, no extra environment, a 5 s stop timeout.
    #[must_use]
    pub fn new(program: impl Into<PathBuf>, args: impl IntoIterator<Item = impl Into<OsString>>) -> Self {
        Self {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            cwd: None,
            stop_timeout: Duration::from_secs(5),
            shm_capacity: None,
            max_message_size: super::DEFAULT_MAX_MESSAGE_SIZE,
            placement: Placement::default(),
            upcalls: None,
            start_method: StartMethod::Spawn,
        }
    }
}

/// One worker's own environment and CPUs, set before its interpreter starts: the environment on
/// top of [`ProcessSpec::env`], the affinity by `sched_setaffinity` in the child between `fork`
/// and `exec` ([`Placement::apply_in_child`], async-signal-safe, so any start method that forks
/// can call it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// Environment variables of this worker alone (e.g. `CUDA_VISIBLE_DEVICES`).
    pub env: Vec<(OsString, OsString)>,
    /// The CPUs it may run on (empty: those of the parent).
    pub cpus: Vec<usize>,
}

impl Placement {
    /// The affinity mask of [`Placement::cpus`], built before `fork` (`None`: leave it alone).
    ///
    /// # Errors
    /// `InvalidInput` for a CPU number the kernel's mask cannot hold.
    pub fn cpu_set(&self) -> io::Result<Option<libc::cpu_set_t>> {
        if self.cpus.is_empty() {
            return Ok(None);
        }
        // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &cpu in &self.cpus {
            if cpu >= libc::CPU_SETSIZE as usize {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cpu {cpu} is out of range (at most {})", libc::CPU_SETSIZE - 1),
                ));
            }
            // SAFETY: `cpu` is below CPU_SETSIZE (checked above), so the bit lies inside `set`.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        Ok(Some(set))
    }

    /// Pins the calling process to `set`. Only a system call: safe between `fork` and `exec`.
    ///
    /// # Errors
    /// The kernel's, e.g. `EINVAL` when none of the CPUs is available to the process.
    pub fn apply_in_child(set: Option<&libc::cpu_set_t>) -> io::Result<()> {
        Self::pin(0, set)
    }

    /// Pins process `pid` (0: the caller) to `set`; a zygote-forked worker is pinned this way
    /// by its supervisor before it is sent any work.
    fn pin(pid: libc::pid_t, set: Option<&libc::cpu_set_t>) -> io::Result<()> {
        if let Some(set) = set {
            // SAFETY: sched_setaffinity reads `size_of::<cpu_set_t>()` bytes from a valid set;
            // it is a plain system call, async-signal-safe.
            if unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), set) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The descriptors a child gets on 3, 4 and 5 (`None`: left closed).
pub(crate) type ChildFds = [Option<RawFd>; 3];

/// Runs in the child between `fork` and `exec`: only async-signal-safe calls.
fn child_setup(parent: libc::pid_t, fds: ChildFds, cpus: Option<&libc::cpu_set_t>) -> io::Result<()> {
    let check = |rc: libc::c_int| {
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    };
    // SAFETY: prctl, getppid, fcntl and dup2 are async-signal-safe and touch no Rust state;
    // the descriptors are open in the child (inherited from the parent).
    unsafe {
        // Die with the parent's spawning thread (a long-lived runtime thread), even on SIGKILL.
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
        if libc::getppid() != parent {
            // The parent died before prctl took effect.
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        // Move every descriptor above the target numbers first, so no dup2 clobbers another.
        let mut high = [None; 3];
        for (slot, fd) in high.iter_mut().zip(fds) {
            if let Some(fd) = fd {
                *slot = Some(check(libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10))?);
            }
        }
        for (target, fd) in [WORKER_READ_FD, WORKER_WRITE_FD, WORKER_SHM_FD].into_iter().zip(high) {
            if let Some(fd) = fd {
                check(libc::dup2(fd, target))?;
            }
        }
    }
    Placement::apply_in_child(cpus)
}

/// Starts `program` afresh: own process group, stdin from `/dev/null`, killed when dropped and
/// when the calling thread ends (`PR_SET_PDEATHSIG`), `fds` on descriptors 3, 4 and 5.
pub(crate) fn start_fresh(
    program: &Path,
    args: &[OsString],
    env: &[(OsString, OsString)],
    cwd: Option<&Path>,
    fds: ChildFds,
    cpus: Option<libc::cpu_set_t>,
) -> io::Result<Child> {
    let mut cmd = Command::new(program);
    cmd.args(args).envs(env.iter().map(|(k, v)| (k, v))).stdin(Stdio::null()).process_group(0).kill_on_drop(true);
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: `child_setup` only makes async-signal-safe calls, as required after fork.
    unsafe {
        cmd.pre_exec(move || child_setup(parent, fds, cpus.as_ref()));
    }
    cmd.spawn()
}

/// The environment a worker gets on top of what it inherits: the spec's, its placement's, then
/// the channel's.
pub(crate) fn worker_env(spec: &ProcessSpec, shm: bool) -> Vec<(OsString, OsString)> {
    let mut env = spec.env.clone();
    env.extend(spec.placement.env.iter().cloned());
    if shm {
        env.push((TRANSPORT_ENV.into(), "shm".into()));
    }
    env.push((MAX_MESSAGE_ENV.into(), spec.max_message_size.to_string().into()));
    env
}

/// Starts a worker process as `spec.start_method` says; returns it with the supervisor's ends
/// (to the worker, from the worker). Must run on the supervisor's runtime.
///
/// A zygote that refuses (a preload failed or started threads) fails the start with its
/// reason; one that is broken (died, hung, spoke nonsense) twice in a row is given up for this
/// pool, and the worker is started afresh instead, so no start waits on a dead zygote.
pub(crate) async fn start_worker_process(
    spec: &ProcessSpec,
    shm: Option<RawFd>,
) -> io::Result<(WorkerChild, OwnedFd, OwnedFd)> {
    let (worker_reads, to_worker) = pipe()?;
    let (from_worker, worker_writes) = pipe()?;
    for fd in [&to_worker, &from_worker] {
        // Bigger pipes mean fewer wake-ups for large payloads; best effort.
        // SAFETY: F_SETPIPE_SZ on an open pipe descriptor; failure is harmless.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
    }
    let fds = [Some(worker_reads.as_raw_fd()), Some(worker_writes.as_raw_fd()), shm];
    let env = worker_env(spec, shm.is_some());
    let cpus = spec.placement.cpu_set()?;
    let forked = match &spec.start_method {
        // The zygote's environment is ours when it started: the worker gets ours now, as a
        // fresh start would (e.g. a `CUDA_VISIBLE_DEVICES` set just before this worker).
        StartMethod::Zygote(zygote) => {
            match zygote.fork(spec, fds, &[std::env::vars_os().collect(), env.clone()].concat()).await {
                Ok(child) => {
                    // A forked worker runs no user code before its INIT frame, sent after this
                    // returns: pinning it from here is still "before its code runs".
                    if let (Some(set), Some(pid)) = (cpus.as_ref(), child.pid()) {
                        Placement::pin(pid, Some(set))?;
                    }
                    Some(WorkerChild::Forked(child))
                }
                Err(ZygoteError::Refused(why)) => return Err(io::Error::other(why)),
                Err(ZygoteError::Broken(_)) => None,
            }
        }
        StartMethod::Spawn => None,
    };
    let child = match forked {
        Some(child) => child,
        None => WorkerChild::Spawned(start_fresh(&spec.program, &spec.args, &env, spec.cwd.as_deref(), fds, cpus)?),
    };
    drop((worker_reads, worker_writes));
    Ok((child, to_worker, from_worker))
}
