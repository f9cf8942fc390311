//! The one definition of every code that crosses between Rust and Python: reply statuses,
//! frame kinds of the process channel, and what an in-process host reads from its channel and
//! reports. `_core` exports them all (`STATUS_OK`, `FRAME_CALL`, ...), and the Python side
//! (`_protocol.py`) takes its values from there, so no number is written twice.

use pyo3::prelude::*;

use crate::process::FrameKind;

/// A reply's value is a pickled result ([`super::buffers::Payload`]) to decode.
pub(crate) const STATUS_OK: u8 = 0;
/// A reply's value is a raised exception's payload (bytes, see `_serialize.load_exception`).
pub(crate) const STATUS_RAISED: u8 = 1;
/// A reply's value is an exception instance to raise.
pub(crate) const STATUS_ERROR: u8 = 2;
/// A reply's value is the result object itself.
pub(crate) const STATUS_OBJECT: u8 = 3;

/// A host request: run a call.
pub(crate) const REQUEST_CALL: u8 = 0;
/// A host request: cancel the call with this id (asyncio hosts run several at once).
pub(crate) const REQUEST_CANCEL: u8 = 1;
/// A host request: run the payloads (a list, each a call to the same batched method) as one
/// coalesced call, answered with `Replier.coalesced`.
pub(crate) const REQUEST_COALESCED: u8 = 2;

/// A host's setup returned the value it reports.
pub(crate) const READY_OK: u8 = 0;
/// A host's setup raised the exception it reports.
pub(crate) const READY_RAISED: u8 = 1;
/// A host cannot run at all; it reports why as text.
pub(crate) const READY_FATAL: u8 = 2;

/// Adds every code to the module, under its Rust name.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let codes: [(&str, u8); 18] = [
        ("STATUS_OK", STATUS_OK),
        ("STATUS_RAISED", STATUS_RAISED),
        ("STATUS_ERROR", STATUS_ERROR),
        ("STATUS_OBJECT", STATUS_OBJECT),
        ("FRAME_INIT", FrameKind::Init as u8),
        ("FRAME_CALL", FrameKind::Call as u8),
        ("FRAME_STOP", FrameKind::Stop as u8),
        ("FRAME_READY", FrameKind::Ready as u8),
        ("FRAME_OK", FrameKind::Ok as u8),
        ("FRAME_RAISED", FrameKind::Raised as u8),
        ("FRAME_UPCALL", FrameKind::Upcall as u8),
        ("FRAME_UPCALL_REPLY", FrameKind::UpcallReply as u8),
        ("REQUEST_CALL", REQUEST_CALL),
        ("REQUEST_CANCEL", REQUEST_CANCEL),
        ("REQUEST_COALESCED", REQUEST_COALESCED),
        ("READY_OK", READY_OK),
        ("READY_RAISED", READY_RAISED),
        ("READY_FATAL", READY_FATAL),
    ];
    for (name, code) in codes {
        m.add(name, code)?;
    }
    // What a coalesced call's payload starts with (little-endian), where a single call's keeps
    // its count of out-of-band buffers.
    m.add("COALESCED_MARKER", crate::process::COALESCED_MARKER)?;
    Ok(())
}
