//! Who holds a lease: a process, named by its pid and its start time, so that a pid reused by a
//! new process after the holder died is never mistaken for the holder.
//!
//! The start time is field 22 of `/proc/<pid>/stat` (clock ticks since boot): two processes with
//! the same pid differ in it unless the pid space wrapped around within one tick. Both fit in
//! one word, so a lease slot is claimed by a single compare-and-swap of its owner word.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bits of the pid in a packed holder: Linux pids are below `PID_MAX_LIMIT` = 2^22.
const PID_BITS: u32 = 22;
const PID_MASK: u64 = (1 << PID_BITS) - 1;

/// A process that may hold leases: pid and start time (clock ticks since boot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Holder {
    /// The process id.
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`, kept to its low 42 bits (centuries of uptime).
    pub start_ticks: u64,
}

/// What `/proc` says about a holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// The process runs (or is stopped): it may still use what it holds.
    Alive,
    /// Gone, a zombie, or its pid now names another process: what it held can be taken back.
    Dead,
}

impl Holder {
    /// The word stored in shared memory; never 0 (a pid is at least 1), so 0 can mean "free".
    #[must_use]
    pub fn pack(self) -> u64 {
        (self.start_ticks << PID_BITS) | (u64::from(self.pid) & PID_MASK)
    }

    /// The holder a word names, or `None` for 0 (free) or a pid of 0 (garbage).
    #[must_use]
    pub fn unpack(word: u64) -> Option<Self> {
        let pid = u32::try_from(word & PID_MASK).ok().filter(|&p| p != 0)?;
        Some(Self { pid, start_ticks: word >> PID_BITS })
    }

    /// This process. Read from `/proc/self/stat` once per process (checked against `getpid`, so
    /// a forked child does not reuse its parent's identity).
    ///
    /// # Errors
    /// When `/proc/self/stat` cannot be read or parsed (no procfs).
    pub fn current() -> std::io::Result<Self> {
        static CURRENT: AtomicU64 = AtomicU64::new(0);
        let pid = std::process::id();
        if let Some(h) = Holder::unpack(CURRENT.load(Ordering::Relaxed)).filter(|h| h.pid == pid) {
            return Ok(h);
        }
        let (_, start_ticks) = read_stat(pid)?
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "unreadable /proc/self/stat"))?;
        let me = Holder { pid, start_ticks };
        CURRENT.store(me.pack(), Ordering::Relaxed);
        Ok(me)
    }

    /// Whether this holder still runs. A process that cannot be looked at for another reason
    /// (permissions) counts as alive: a lease is only taken back from a holder known to be gone.
    #[must_use]
    pub fn liveness(self) -> Liveness {
        match read_stat(self.pid) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Liveness::Dead,
            Ok(Some((state, start))) if start == self.start_ticks && !matches!(state, b'Z' | b'X' | b'x') => {
                Liveness::Alive
            }
            Ok(Some(_)) => Liveness::Dead, // a zombie, or another process with a reused pid
            Ok(None) | Err(_) => Liveness::Alive,
        }
    }
}

/// `(state, start time)` of `pid` from `/proc/<pid>/stat`, or `Ok(None)` if the text does not
/// parse. The command name (field 2) may hold spaces and parentheses: fields are counted from
/// the last `)`.
pub(super) fn read_stat(pid: u32) -> std::io::Result<Option<(u8, u64)>> {
    let text = std::fs::read(format!("/proc/{pid}/stat"))?;
    Ok(parse_stat(&text))
}

fn parse_stat(text: &[u8]) -> Option<(u8, u64)> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let mut fields = text.get(close + 1..)?.split(|&b| b == b' ').filter(|f| !f.is_empty());
    let state = *fields.next()?.first()?; // field 3
    let start = fields.nth(18)?; // field 22
    let start: u64 = std::str::from_utf8(start).ok()?.trim().parse().ok()?;
    Some((state, start & (u64::MAX >> PID_BITS)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips_and_zero_is_free() {
        let h = Holder { pid: 4_194_303, start_ticks: (1 << 42) - 1 };
        assert_eq!(Holder::unpack(h.pack()), Some(h));
        assert_eq!(Holder::unpack(0), None);
        assert_eq!(Holder::unpack(5 << PID_BITS), None, "a pid of 0 is garbage");
    }

    #[test]
    fn stat_parsing_counts_fields_after_the_last_parenthesis() {
        let line = b"123 (a b) c)) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 20 21\n";
        assert_eq!(parse_stat(line), Some((b'S', 4242)));
        assert_eq!(parse_stat(b"123 (x) S 1"), None);
        assert_eq!(parse_stat(b"garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = Holder::current().unwrap();
        assert_eq!(me.pid, std::process::id());
        assert_eq!(me.liveness(), Liveness::Alive);
        let reused = Holder { start_ticks: me.start_ticks + 1, ..me };
        assert_eq!(reused.liveness(), Liveness::Dead);
    }

    #[test]
    fn a_reaped_child_is_dead_and_a_zombie_too() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped yet: once it has exited it is a zombie, which counts as dead.
        let start = loop {
            match read_stat(pid).unwrap() {
                Some((b'Z', start)) => break start,
                _ => std::thread::yield_now(),
            }
        };
        let h = Holder { pid, start_ticks: start };
        assert_eq!(h.liveness(), Liveness::Dead);
        child.wait().unwrap();
        assert_eq!(h.liveness(), Liveness::Dead);
    }
}
