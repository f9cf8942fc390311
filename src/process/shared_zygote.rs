//! Zygotes shared by every pool of this process (`start_method="forkserver"`), like
//! `multiprocessing`'s forkserver: started by the first pool that asks, kept until the process
//! exits, so a later pool's workers start without paying an interpreter's start and imports.
//!
//! A shared zygote cannot live on a pool's runtime: that runtime ends with its pool, and with
//! it the zygote's control socket and every forked worker's pidfd, which are registered with
//! its reactor. It cannot be started from a pool's thread either: `PR_SET_PDEATHSIG` fires
//! when the *thread* that started a process exits. So the shared zygotes live on a runtime of
//! their own, on one thread that runs until the process exits (then the zygotes get their
//! death signal, and their workers theirs). A child made by `fork()` has that runtime's memory
//! but not its thread: it makes its own (the parent's is never touched there).

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::runtime::Handle;

use super::zygote::Zygote;

/// What makes two pools' zygotes the same: the program and its arguments (the preloaded
/// modules among them), and the environment and working directory it starts with.
type Key = (PathBuf, Vec<OsString>, Vec<(OsString, OsString)>, Option<PathBuf>);

/// The shared zygotes of one process and the runtime they live on.
struct Home {
    /// The process that made it: a forked child makes its own.
    pid: u32,
    runtime: Handle,
    zygotes: HashMap<Key, Arc<Zygote>>,
}

static HOME: Mutex<Option<Home>> = Mutex::new(None);

/// The zygote shared by this process's pools for `key`, created (not started) on first use.
///
/// # Errors
/// The runtime's thread could not be started.
pub(crate) fn shared_zygote(
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
) -> std::io::Result<Arc<Zygote>> {
    let mut home = HOME.lock().unwrap_or_else(PoisonError::into_inner);
    let pid = std::process::id();
    if home.as_ref().is_none_or(|home| home.pid != pid) {
        // A parent's home, inherited through fork(), is left as it is: its thread is not here.
        std::mem::forget(home.take());
        *home = Some(Home { pid, runtime: start_runtime()?, zygotes: HashMap::new() });
    }
    let home = home.as_mut().expect("set above");
    let key: Key = (program, args, env, cwd);
    let runtime = home.runtime.clone();
    let zygote = home
        .zygotes
        .entry(key)
        .or_insert_with_key(|(program, args, _, _)| Arc::new(Zygote::new(program, args.clone()).living_on(runtime)));
    Ok(Arc::clone(zygote))
}

/// A current-thread runtime driven by a thread of its own until the process exits.
fn start_runtime() -> std::io::Result<Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("stateful-pool-zygotes".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    Ok(handle)
}
