//! Coalesced calls on a worker process (see `sched/gather.rs`): the tasks travel as one `Call`
//! frame, and its `Ok` reply carries one outcome per task.
//!
//! Request payload: the marker `u32::MAX` (where a single call's payload has its count of
//! out-of-band buffers, so no single call can look like one), a `u32` task count, one `u64`
//! length per task, then the tasks' payloads back to back (each exactly as a single call's).
//! Reply payload: a `u32` outcome count, then per outcome a `u8` (0: returned, 1: raised) and a
//! `u64` length, then the outcomes' payloads back to back (each as a single call's `Ok` or
//! `Raised` reply). All little-endian. The reply is the worker's word, so every count and
//! length is checked against what it sent before anything is cut out of it.

use super::{ProcessWorker, RaisedPayload};
use crate::error::WorkerFault;
use crate::worker::workable::{Coalesced, Response, Workable};

/// Where a single call's payload keeps its count of out-of-band buffers, a coalesced call's
/// payload has this marker (`stateful_pool/batching.py` reads it).
pub(crate) const COALESCED_MARKER: u32 = u32::MAX;

/// The payload of one coalesced call of `tasks`.
fn encode_request(tasks: &[Vec<u8>]) -> Vec<u8> {
    let body: usize = tasks.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(8 + 8 * tasks.len() + body);
    out.extend_from_slice(&COALESCED_MARKER.to_le_bytes());
    out.extend_from_slice(&u32::try_from(tasks.len()).unwrap_or(u32::MAX).to_le_bytes());
    for task in tasks {
        out.extend_from_slice(&(task.len() as u64).to_le_bytes());
    }
    for task in tasks {
        out.extend_from_slice(task);
    }
    out
}

/// One task's share of a coalesced call: its `Ok` payload, or its `Raised` payload.
type Outcome = Result<Vec<u8>, Vec<u8>>;

/// The outcomes in a coalesced call's reply, or why the reply is malformed.
fn decode_reply(reply: &[u8]) -> Result<Vec<Outcome>, String> {
    let take = |at: usize, n: usize| {
        at.checked_add(n).and_then(|end| reply.get(at..end)).ok_or_else(|| "truncated".to_owned())
    };
    let count = u32::from_le_bytes(take(0, 4)?.try_into().map_err(|_| "truncated")?) as usize;
    // Each outcome needs at least its 9-byte entry: a count beyond that is a lie, refused
    // before allocating for it.
    if count > reply.len() / 9 {
        return Err(format!("it claims {count} outcomes in {} bytes", reply.len()));
    }
    let mut entries = Vec::with_capacity(count);
    for i in 0..count {
        let entry = take(4 + 9 * i, 9)?;
        let len = u64::from_le_bytes(entry[1..9].try_into().map_err(|_| "truncated")?);
        entries.push((entry[0], usize::try_from(len).map_err(|_| "outcome too long")?));
    }
    let mut at = 4 + 9 * count;
    let mut outcomes = Vec::with_capacity(count);
    for (status, len) in entries {
        let payload = take(at, len)?.to_vec();
        at += len;
        outcomes.push(match status {
            0 => Ok(payload),
            1 => Err(payload),
            other => return Err(format!("unknown outcome status {other}")),
        });
    }
    if at != reply.len() {
        return Err(format!("{} bytes left over", reply.len() - at));
    }
    Ok(outcomes)
}

impl ProcessWorker {
    /// Runs `tasks` as one coalesced call (see the module docs).
    pub(crate) async fn call_coalesced(&mut self, tasks: Vec<Vec<u8>>) -> Coalesced<Self> {
        let payload = encode_request(&tasks);
        if payload.len() > self.spec.max_message_size {
            // The worker would refuse it as a protocol violation: fail the tasks, keep the worker.
            let why = format!(
                "ValueError: a coalesced call of {} tasks ({} bytes) is over max_message_size ({} bytes)",
                tasks.len(),
                payload.len(),
                self.spec.max_message_size
            );
            return Coalesced::Complete(tasks.iter().map(|_| Err(RaisedPayload::encode(&why, &[]))).collect());
        }
        match self.process(payload).await {
            Response::Complete(Ok(reply)) => match decode_reply(&reply) {
                Ok(outcomes) => Coalesced::Complete(outcomes),
                Err(why) => Coalesced::Fatal(WorkerFault::protocol(format!(
                    "worker broke the protocol: malformed reply to a coalesced call ({why}); worker killed"
                ))),
            },
            // The whole call raised (the worker could not even read it): every task fails so.
            Response::Complete(Err(raised)) => Coalesced::Complete(tasks.iter().map(|_| Err(raised.clone())).collect()),
            Response::Fatal(fault) => Coalesced::Fatal(fault),
            Response::Refused(_, fault) => Coalesced::Refused(tasks, fault),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(outcomes: &[(u8, &[u8])]) -> Vec<u8> {
        let mut out = (outcomes.len() as u32).to_le_bytes().to_vec();
        for (status, payload) in outcomes {
            out.push(*status);
            out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        }
        for (_, payload) in outcomes {
            out.extend_from_slice(payload);
        }
        out
    }

    #[test]
    fn request_lists_each_task() {
        let payload = encode_request(&[b"ab".to_vec(), b"c".to_vec()]);
        assert_eq!(&payload[..4], &u32::MAX.to_le_bytes());
        assert_eq!(&payload[4..8], &2u32.to_le_bytes());
        assert_eq!(&payload[8..16], &2u64.to_le_bytes());
        assert_eq!(&payload[16..24], &1u64.to_le_bytes());
        assert_eq!(&payload[24..], b"abc");
    }

    #[test]
    fn reply_splits_into_outcomes() {
        let outcomes = decode_reply(&reply(&[(0, b"ok"), (1, b"boom"), (0, b"")])).unwrap();
        assert_eq!(outcomes, vec![Ok(b"ok".to_vec()), Err(b"boom".to_vec()), Ok(Vec::new())]);
    }

    #[test]
    fn lying_replies_are_refused() {
        let good = reply(&[(0, b"ok"), (1, b"no")]);
        for cut in 0..good.len() {
            assert!(decode_reply(&good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut extra = good.clone();
        extra.push(0);
        assert!(decode_reply(&extra).unwrap_err().contains("left over"));
        assert!(decode_reply(&reply(&[(7, b"x")])).unwrap_err().contains("status 7"));
        let mut huge = reply(&[(0, b"x")]);
        huge[5..13].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_reply(&huge).is_err());
        assert!(decode_reply(&u32::MAX.to_le_bytes()).unwrap_err().contains("claims"));
    }
}
