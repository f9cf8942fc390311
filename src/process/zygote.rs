//! The zygote: a template process that forks workers, so a new worker costs a `fork` instead of
//! an interpreter's start and imports.
//!
//! The zygote is started like a worker (afresh, never forked from this threaded process: its own
//! process group, `PR_SET_PDEATHSIG`), with one end of a `SOCK_SEQPACKET` socket pair on
//! descriptor 3. It imports what it was told to, checks that it is still single-threaded, says
//! `R`eady (or `E` and why it refuses) and then serves fork requests: each carries the new
//! worker's descriptors (`SCM_RIGHTS`) and environment; the zygote forks, the child sets its
//! own death signal (the zygote dies with us, and it with the zygote), moves the descriptors to
//! 3, 4 and 5, applies the environment and working directory and becomes a worker speaking the
//! frame protocol as if started afresh (the Python zygote keeps one child forked ahead and hands
//! it the request, so a start costs no fork). The zygote answers with the child's pid and a
//! pidfd it opened before it could reap the child, then reaps it when it exits and reports its
//! status.
//!
//! Messages (one per packet; integers little-endian):
//!
//! | from | bytes | meaning |
//! | --- | --- | --- |
//! | zygote | `R` | ready for fork requests |
//! | zygote | `E` text | refused to start (a preload failed or started threads); it exits |
//! | us | `F` seq:u64 cwd `\0` (key`=`value `\0`)* + 2 or 3 descriptors | fork a worker |
//! | zygote | `P` seq:u64 pid:u32 + a pidfd | forked request `seq` |
//! | zygote | `X` seq:u64 text | could not fork for request `seq` |
//! | zygote | `S` pid:u32 status:i32 | a forked worker exited with this wait status |
//!
//! `python/stateful_pool/_zygote.py` is the other side.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::JoinHandle;

use super::child::ForkedChild;
use super::spawn::{start_fresh, ChildFds, ProcessSpec};
use super::unix_socket::{recv_packet, register, send_packet, seqpacket_pair};

/// How long a running zygote may take to answer a fork request before it counts as hung.
const FORK_TIMEOUT: Duration = Duration::from_secs(5);
/// Consecutive broken zygotes (died, hung, spoke nonsense) after which a pool stops using one
/// and starts its workers afresh.
const BROKEN_AT_MOST: u32 = 2;

/// Why a worker could not be forked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ZygoteError {
    /// The zygote refused to start or to fork, for a reason the user must see (a preload failed
    /// or started threads, `fork` failed); the start fails with it.
    #[error("{0}")]
    Refused(String),
    /// The zygote is unusable (it died, hung or broke the protocol); start the worker afresh.
    #[error("{0}")]
    Broken(String),
}

/// A template process that forks a pool's workers (see the module docs); started by
/// [`Zygote::warm_up`] when the pool is made (else on the first fork), and again when it dies. Workers forked from it die with it: when it dies while they
/// run, they are reported killed by SIGKILL and the pool restarts them (from a new zygote).
pub struct Zygote {
    program: PathBuf,
    args: Vec<OsString>,
    state: Mutex<State>,
    /// The runtime a shared zygote lives on (see `shared_zygote.rs`); `None`: the pool's own.
    home: Option<tokio::runtime::Handle>,
}

#[derive(Default)]
struct State {
    running: Option<Running>,
    /// Zygotes found broken in a row; at [`BROKEN_AT_MOST`] the pool gives up on them.
    broken: u32,
    /// The number of the last fork request.
    seq: u64,
    /// Bumped each time the running zygote is given up, so a fork that waited for an answer
    /// gives up only the zygote it asked, not a newer one.
    generation: u64,
}

impl State {
    /// The running zygote is broken: it is killed (with its driver) and counted.
    fn give_up(&mut self) {
        self.running = None;
        self.broken += 1;
        self.generation += 1;
    }
}

impl std::fmt::Debug for Zygote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zygote").field("program", &self.program).field("args", &self.args).finish_non_exhaustive()
    }
}

impl Zygote {
    /// A zygote running `program` with `args` (with the worker spec's environment and working
    /// directory) once a worker is first needed. The program must speak the zygote protocol of
    /// the module docs, e.g. `python -c "from stateful_pool._zygote import main; main()"`.
    #[must_use]
    pub fn new(program: impl Into<PathBuf>, args: impl IntoIterator<Item = impl Into<OsString>>) -> Self {
        Self {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            state: Mutex::default(),
            home: None,
        }
    }

    /// The zygote of every pool of this process that starts `program` with `args` in the same
    /// environment and working directory, like `multiprocessing`'s forkserver: started by the
    /// first pool that needs it (on a runtime and thread of its own, see `shared_zygote.rs`),
    /// restarted when it dies, and kept until this process exits, when it dies with its workers.
    ///
    /// # Errors
    /// The thread of the shared zygotes' runtime could not be started.
    pub fn shared(
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<OsString>>,
        env: Vec<(OsString, OsString)>,
        cwd: Option<PathBuf>,
    ) -> io::Result<Arc<Self>> {
        super::shared_zygote::shared_zygote(program.into(), args.into_iter().map(Into::into).collect(), env, cwd)
    }

    /// This zygote, living on `runtime` (see [`Zygote::shared`]).
    pub(super) fn living_on(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.home = Some(runtime);
        self
    }

    /// Starts the zygote now, in a task on `runtime` (the supervisor's), so that a new pool's
    /// first workers find it ready instead of waiting for its start; the caller does not wait.
    /// The first fork waits for this start (it holds the zygote's lock). A zygote that refuses is
    /// left stopped: the first fork starts it again and fails with the reason the user must see.
    pub fn warm_up(self: &Arc<Self>, spec: Arc<ProcessSpec>, runtime: &tokio::runtime::Handle) {
        let zygote = Arc::clone(self);
        self.home.as_ref().unwrap_or(runtime).spawn(async move {
            let mut state = zygote.state.lock().await;
            if state.running.is_some() || state.broken >= BROKEN_AT_MOST {
                return;
            }
            match zygote.start(&spec).await {
                Ok(running) => state.running = Some(running),
                Err(ZygoteError::Broken(_)) => state.broken += 1,
                Err(ZygoteError::Refused(_)) => {}
            }
        });
    }

    /// Forks a worker with `fds` on 3, 4 and 5 and `env` on top of the zygote's environment;
    /// starts (or restarts) the zygote first when needed. Must run on the supervisor's runtime
    /// (a shared zygote's work runs on its own).
    /// Requests are sent one at a time, but their answers are awaited concurrently: the forks
    /// of a pool's workers started together follow each other without a round trip each.
    pub(crate) async fn fork(
        self: &Arc<Self>,
        spec: &ProcessSpec,
        fds: ChildFds,
        env: &[(OsString, OsString)],
    ) -> Result<ForkedChild, ZygoteError> {
        let request_body = encode_request(spec, env)?;
        let Some(home) = &self.home else { return self.fork_here(spec, fds, request_body).await };
        // A shared zygote is driven on its own runtime. The descriptors stay open meanwhile:
        // they are the caller's, and it waits here.
        let (zygote, spec) = (Arc::clone(self), spec.clone());
        home.spawn(async move { zygote.fork_here(&spec, fds, request_body).await })
            .await
            .unwrap_or_else(|e| Err(ZygoteError::Broken(format!("the shared zygotes' runtime failed: {e}"))))
    }

    async fn fork_here(
        &self,
        spec: &ProcessSpec,
        fds: ChildFds,
        request_body: Vec<u8>,
    ) -> Result<ForkedChild, ZygoteError> {
        let mut why = String::from("the zygote broke too often");
        loop {
            let (answer, generation) = {
                let mut state = self.state.lock().await;
                if state.broken >= BROKEN_AT_MOST {
                    return Err(ZygoteError::Broken(why));
                }
                state.seq += 1;
                let seq = state.seq;
                if state.running.as_ref().is_some_and(|running| running.driver.is_finished()) {
                    state.running = None; // it died while idle: start another, no harm done
                }
                let running = match state.running.take() {
                    Some(running) => running,
                    None => match self.start(spec).await {
                        Ok(running) => running,
                        Err(ZygoteError::Broken(broken)) => {
                            state.broken += 1;
                            why = broken;
                            continue;
                        }
                        Err(refused) => return Err(refused),
                    },
                };
                let running = state.running.insert(running);
                match running.request(seq, &request_body, fds).await {
                    Ok(answer) => (answer, state.generation),
                    Err(broken) => {
                        state.give_up();
                        why = broken;
                        continue;
                    }
                }
            };
            let broken = match tokio::time::timeout(FORK_TIMEOUT, answer).await {
                Ok(Ok(Ok(child))) => {
                    self.state.lock().await.broken = 0;
                    return Ok(child);
                }
                Ok(Ok(Err(ZygoteError::Broken(broken)))) => broken,
                Ok(Ok(Err(refused))) => return Err(refused),
                Ok(Err(_)) => "the zygote died".to_owned(),
                Err(_) => format!("the zygote did not answer a fork request within {FORK_TIMEOUT:?}; it was killed"),
            };
            let mut state = self.state.lock().await;
            if state.generation == generation {
                state.give_up(); // killed with its driver
            }
            why = broken;
        }
    }

    /// Starts the zygote and waits until it is ready (or refuses, or dies).
    async fn start(&self, spec: &ProcessSpec) -> Result<Running, ZygoteError> {
        let broken = |e: io::Error| ZygoteError::Broken(format!("cannot start the zygote: {e}"));
        let (ours, theirs) = seqpacket_pair().map_err(broken)?;
        let process = start_fresh(
            &self.program,
            &self.args,
            &spec.env,
            spec.cwd.as_deref(),
            [Some(theirs.as_raw_fd()), None, None],
            None,
        )
        .map_err(broken)?;
        drop(theirs);
        let control = Arc::new(register(ours, Interest::READABLE | Interest::WRITABLE).map_err(broken)?);
        let (tx, replies) = mpsc::unbounded_channel();
        let answers = Arc::new(Answers::default());
        let driver = tokio::spawn(drive(process, Arc::clone(&control), tx, Arc::clone(&answers)));
        let mut running = Running { control, replies, answers, driver };
        match running.replies.recv().await {
            Some(Reply::Ready) => Ok(running),
            Some(Reply::Refused(why)) => {
                // It exits after refusing: wait until it has (and is reaped), so the caller,
                // told of the refusal, finds no zygote left.
                let _ = tokio::time::timeout(FORK_TIMEOUT, &mut running.driver).await;
                Err(ZygoteError::Refused(format!("the zygote refused to start: {why}")))
            }
            Some(Reply::Gone(why)) => Err(ZygoteError::Broken(format!("the zygote died while starting: {why}"))),
            None => Err(ZygoteError::Broken("the zygote died while starting".to_owned())),
        }
    }
}

/// The fork request's body after its tag and number: the working directory, then `key=value`
/// entries, each ended by a NUL byte.
fn encode_request(spec: &ProcessSpec, env: &[(OsString, OsString)]) -> Result<Vec<u8>, ZygoteError> {
    let mut body = Vec::new();
    let cwd = spec.cwd.as_deref().map(|p| p.as_os_str().as_bytes()).unwrap_or_default();
    let entries = env.iter().map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes()].concat());
    for (i, entry) in std::iter::once(cwd.to_vec()).chain(entries).enumerate() {
        if entry.contains(&0) || (i > 0 && entry.iter().position(|&b| b == b'=') == Some(0)) {
            let entry = String::from_utf8_lossy(&entry).into_owned();
            return Err(ZygoteError::Refused(format!(
                "cannot pass {entry:?} to a worker: a NUL byte or an empty name"
            )));
        }
        body.extend_from_slice(&entry);
        body.push(0);
    }
    Ok(body)
}

/// A started zygote: its control socket, what its driver task hears on it while it starts, and
/// the fork requests waiting for their answers.
struct Running {
    control: Arc<AsyncFd<OwnedFd>>,
    replies: mpsc::UnboundedReceiver<Reply>,
    answers: Arc<Answers>,
    driver: JoinHandle<()>,
}

impl Drop for Running {
    /// The driver owns the zygote's process (killed on drop) and its workers' exit reports.
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// The answer to one fork request.
type Answer = Result<ForkedChild, ZygoteError>;

impl Running {
    /// Sends fork request `seq`; its answer comes on the returned receiver (dropped unanswered
    /// when the zygote dies). Errors: why the request could not be sent (the zygote is broken).
    async fn request(&mut self, seq: u64, body: &[u8], fds: ChildFds) -> Result<oneshot::Receiver<Answer>, String> {
        let answer = self.answers.wait_for(seq)?;
        let message = [b"F".as_slice(), &seq.to_le_bytes(), body].concat();
        let fds: Vec<_> = fds.into_iter().flatten().collect();
        if let Err(e) = send_packet(&self.control, &message, &fds).await {
            self.answers.forget(seq);
            return Err(format!("cannot send a fork request to the zygote: {e}"));
        }
        Ok(answer)
    }
}

/// Fork requests waiting for their answers, by number, shared by [`Running`] and its driver.
#[derive(Default)]
struct Answers(std::sync::Mutex<AnswerBook>);

#[derive(Default)]
struct AnswerBook {
    waiting: HashMap<u64, oneshot::Sender<Answer>>,
    /// Set when the zygote is gone: why.
    gone: Option<String>,
}

impl Answers {
    fn book(&self) -> std::sync::MutexGuard<'_, AnswerBook> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wait_for(&self, seq: u64) -> Result<oneshot::Receiver<Answer>, String> {
        let mut book = self.book();
        if let Some(why) = &book.gone {
            return Err(format!("the zygote died: {why}"));
        }
        let (tx, rx) = oneshot::channel();
        book.waiting.insert(seq, tx);
        Ok(rx)
    }

    fn forget(&self, seq: u64) {
        self.book().waiting.remove(&seq);
    }

    /// Hands request `seq` its answer. A request nobody waits for any more (its start was
    /// abandoned) drops it: its worker is killed as it is dropped.
    fn answer(&self, seq: u64, answer: Answer) {
        let waiter = self.book().waiting.remove(&seq);
        if let Some(waiter) = waiter {
            let _ = waiter.send(answer);
        }
    }

    /// The zygote is gone: every request still waiting fails with `why`.
    fn close(&self, why: &str) {
        let waiting = {
            let mut book = self.book();
            book.gone = Some(why.to_owned());
            std::mem::take(&mut book.waiting)
        };
        for waiter in waiting.into_values() {
            let _ = waiter.send(Err(ZygoteError::Broken(format!("the zygote died: {why}"))));
        }
    }
}

/// What the driver passes on to whoever starts the zygote.
enum Reply {
    Ready,
    Refused(String),
    /// The zygote is gone (and reaped): why.
    Gone(String),
}

/// Reads the zygote's messages until it is gone: hands replies on and routes each worker's exit
/// status to its [`ForkedChild`]. Owns the zygote's process, which dies when this task is
/// dropped (`kill_on_drop`), and its workers with it.
async fn drive(
    process: Child,
    control: Arc<AsyncFd<OwnedFd>>,
    replies: mpsc::UnboundedSender<Reply>,
    answers: Arc<Answers>,
) {
    let mut process = ZygoteProcess(process);
    let process = &mut process.0;
    let mut reports: HashMap<u32, oneshot::Sender<i32>> = HashMap::new();
    let mut announced = false;
    let why = loop {
        let (bytes, mut fds) = match recv_packet(&control).await {
            Ok(Some(packet)) => packet,
            Ok(None) => break "it closed its control socket".to_owned(),
            Err(e) => break format!("reading its control socket failed: {e}"),
        };
        let reply = match (bytes.first(), bytes.len(), fds.len()) {
            (Some(b'S'), 9, 0) => {
                let pid = u32::from_le_bytes(bytes[1..5].try_into().unwrap_or_default());
                if let Some(report) = reports.remove(&pid) {
                    let _ = report.send(i32::from_le_bytes(bytes[5..9].try_into().unwrap_or_default()));
                }
                continue;
            }
            (Some(b'P'), 13, 1) => {
                let seq = u64::from_le_bytes(bytes[1..9].try_into().unwrap_or_default());
                let pid = u32::from_le_bytes(bytes[9..13].try_into().unwrap_or_default());
                let (report, reported) = oneshot::channel();
                reports.insert(pid, report);
                let child = ForkedChild::new(pid, fds.remove(0), reported)
                    .map_err(|e| ZygoteError::Broken(format!("cannot watch the forked worker: {e}")));
                answers.answer(seq, child);
                continue;
            }
            (Some(b'X'), 9.., 0) => {
                let seq = u64::from_le_bytes(bytes[1..9].try_into().unwrap_or_default());
                let why = String::from_utf8_lossy(&bytes[9..]);
                answers.answer(seq, Err(ZygoteError::Refused(format!("the zygote could not fork a worker: {why}"))));
                continue;
            }
            (Some(b'R' | b'E'), _, 0) if announced => break "it announced itself twice".to_owned(),
            (Some(b'R'), 1, 0) => Reply::Ready,
            (Some(b'E'), _, 0) => Reply::Refused(String::from_utf8_lossy(&bytes[1..]).into_owned()),
            _ => {
                break format!(
                    "it broke the zygote protocol (a {}-byte message with {} descriptors)",
                    bytes.len(),
                    fds.len()
                )
            }
        };
        announced = true;
        let _ = replies.send(reply); // Ready or refused: the start waits for it
    };
    // Workers still waiting for a report learn that the zygote is gone (and they with it).
    drop(reports);
    let _ = process.start_kill();
    let status = match process.wait().await {
        Ok(status) => status.to_string(),
        Err(e) => format!("exit status unknown: {e}"),
    };
    let why = format!("{why}; {status}");
    answers.close(&why);
    let _ = replies.send(Reply::Gone(why));
}

/// How long dropping a zygote's process waits for it to exit after SIGKILL.
const EXIT_WAIT: Duration = Duration::from_secs(1);

/// The zygote's process, killed when dropped (the pool's runtime ends, or the zygote is given
/// up), and waited for, up to [`EXIT_WAIT`], until it has exited (tokio still reaps it): a
/// pool's shutdown leaves no zygote running, not even one that is still dying.
struct ZygoteProcess(Child);

impl Drop for ZygoteProcess {
    fn drop(&mut self) {
        let Some(pid) = self.0.id() else { return }; // reaped already
                                                     // SAFETY: pidfd_open on our own child, which is not reaped yet (`id` says so), no flags.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let _ = self.0.start_kill();
        let Ok(pidfd) = libc::c_int::try_from(pidfd) else { return };
        if pidfd < 0 {
            return;
        }
        // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
        let pidfd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(pidfd) };
        let mut poll = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let timeout = libc::c_int::try_from(EXIT_WAIT.as_millis()).unwrap_or(libc::c_int::MAX);
        // A pidfd is readable once its process has exited. SAFETY: one valid pollfd, count 1.
        unsafe { libc::poll(&mut poll, 1, timeout) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fork_requests_carry_cwd_and_env_and_refuse_what_cannot_pass() {
        let mut spec = ProcessSpec::new("python3", ["-c", "pass"]);
        spec.cwd = Some("/tmp".into());
        let env = [("A".into(), "1".into()), ("B".into(), "x=y".into())];
        assert_eq!(encode_request(&spec, &env).unwrap(), b"/tmp\0A=1\0B=x=y\0");
        spec.cwd = None;
        assert_eq!(encode_request(&spec, &[]).unwrap(), b"\0");
        let nul = [("A".into(), OsString::from("a\0b"))];
        assert!(matches!(encode_request(&spec, &nul), Err(ZygoteError::Refused(_))));
        let unnamed = [(OsString::new(), OsString::from("v"))];
        assert!(matches!(encode_request(&spec, &unnamed), Err(ZygoteError::Refused(_))));
    }
}
