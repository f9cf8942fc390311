//! The wire format between the supervisor and a worker process: a 17-byte header
//! (kind `u8`, task id `u64` LE, payload length `u64` LE) followed by the payload.
//! `python/stateful_pool/_protocol.py` is the other side.

use std::fmt;

/// Bytes in a frame header.
pub(crate) const HEADER_LEN: usize = 17;

/// The default largest frame payload either side accepts (1 GiB): far above the messages a
/// pool moves in practice (the shared-memory rings stream anything larger than themselves),
/// and small enough that a forged length cannot make the receiver allocate without bound.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 30;

/// The kind of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Supervisor → worker: set yourself up with this payload (once, first).
    Init = 1,
    /// Supervisor → worker: run this call.
    Call = 2,
    /// Supervisor → worker: exit cleanly.
    Stop = 3,
    /// Supervisor → worker: the answer to the worker's [`FrameKind::Upcall`] (id 0).
    UpcallReply = 4,
    /// Worker → supervisor: setup done; payload is what setup returned.
    Ready = 10,
    /// Worker → supervisor: the call returned; payload is the result.
    Ok = 11,
    /// Worker → supervisor: setup or the call raised; payload is a [`RaisedPayload`].
    Raised = 12,
    /// Worker → supervisor, while a call runs: a request for the pool's upcall handler (see
    /// `src/process/upcall.rs`), id 0. The worker waits for the [`FrameKind::UpcallReply`] before it
    /// sends anything else.
    Upcall = 13,
}

impl FrameKind {
    /// The kind with this wire value.
    #[must_use]
    pub fn from_u8(raw: u8) -> Option<Self> {
        Some(match raw {
            1 => FrameKind::Init,
            2 => FrameKind::Call,
            3 => FrameKind::Stop,
            4 => FrameKind::UpcallReply,
            10 => FrameKind::Ready,
            11 => FrameKind::Ok,
            12 => FrameKind::Raised,
            13 => FrameKind::Upcall,
            _ => return None,
        })
    }
}

/// A frame that does not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protocol error: {0}")]
pub struct ProtocolError(pub String);

/// One decoded frame.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the frame means.
    pub kind: FrameKind,
    /// The task it belongs to (0 for setup frames).
    pub id: u64,
    /// Its body.
    pub payload: Vec<u8>,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frame({:?}, id={}, {} bytes)", self.kind, self.id, self.payload.len())
    }
}

/// Encodes a header.
#[must_use]
pub(crate) fn encode_header(kind: FrameKind, id: u64, len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = kind as u8;
    h[1..9].copy_from_slice(&id.to_le_bytes());
    h[9..17].copy_from_slice(&(len as u64).to_le_bytes());
    h
}

/// Decodes a header into kind, id and payload length; the length is checked against
/// `max_len` before anyone allocates for it (the header comes from the other process).
///
/// # Errors
/// [`ProtocolError`] for an unknown kind or a length over `max_len`.
pub(crate) fn decode_header(h: &[u8; HEADER_LEN], max_len: usize) -> Result<(FrameKind, u64, usize), ProtocolError> {
    let kind = FrameKind::from_u8(h[0]).ok_or_else(|| ProtocolError(format!("unknown frame kind {}", h[0])))?;
    let id = u64::from_le_bytes(h[1..9].try_into().expect("8 bytes"));
    let len = u64::from_le_bytes(h[9..17].try_into().expect("8 bytes"));
    match usize::try_from(len) {
        Ok(len) if len <= max_len => Ok((kind, id, len)),
        _ => Err(ProtocolError(format!("{kind:?} frame of {len} bytes is over max_message_size ({max_len} bytes)"))),
    }
}

impl From<ProtocolError> for std::io::Error {
    fn from(e: ProtocolError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// The body of a [`FrameKind::Raised`] frame: a UTF-8 one-line summary the supervisor can show
/// (`u32` LE length first), then the serialized exception for the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaisedPayload<'a> {
    /// `"ValueError: bad input"`.
    pub summary: &'a str,
    /// The serialized exception.
    pub exception: &'a [u8],
}

impl RaisedPayload<'_> {
    /// Encodes a raised frame's payload.
    #[must_use]
    pub fn encode(summary: &str, exception: &[u8]) -> Vec<u8> {
        let len = u32::try_from(summary.len()).unwrap_or(u32::MAX);
        let summary = &summary.as_bytes()[..len as usize];
        let mut payload = Vec::with_capacity(4 + summary.len() + exception.len());
        payload.extend_from_slice(&len.to_le_bytes());
        payload.extend_from_slice(summary);
        payload.extend_from_slice(exception);
        payload
    }
}

impl<'a> RaisedPayload<'a> {
    /// Splits a raised frame's payload.
    ///
    /// # Errors
    /// [`ProtocolError`] when the summary length or encoding is wrong.
    pub fn parse(payload: &'a [u8]) -> Result<Self, ProtocolError> {
        let bad = || ProtocolError("malformed raised frame".into());
        let len = payload.get(..4).ok_or_else(bad)?;
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let summary = payload.get(4..4usize.saturating_add(len)).ok_or_else(bad)?;
        let summary = std::str::from_utf8(summary).map_err(|_| bad())?;
        Ok(Self { summary, exception: &payload[4 + len..] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        for kind in [
            FrameKind::Init,
            FrameKind::Call,
            FrameKind::Stop,
            FrameKind::UpcallReply,
            FrameKind::Ready,
            FrameKind::Ok,
            FrameKind::Raised,
            FrameKind::Upcall,
        ] {
            let h = encode_header(kind, u64::MAX - 3, 1 << 40);
            assert_eq!(decode_header(&h, 1 << 40).unwrap(), (kind, u64::MAX - 3, 1 << 40));
            assert!(decode_header(&h, (1 << 40) - 1).is_err());
        }
        let mut h = encode_header(FrameKind::Ok, 1, 1);
        h[0] = 99;
        assert!(decode_header(&h, 10).is_err());
        let forged = encode_header(FrameKind::Ok, 1, 1 << 60);
        let err = decode_header(&forged, DEFAULT_MAX_MESSAGE_SIZE).unwrap_err();
        assert_eq!(
            err.to_string(),
            "protocol error: Ok frame of 1152921504606846976 bytes is over max_message_size (1073741824 bytes)"
        );
    }

    proptest::proptest! {
        /// Any 17 bytes decode to a known kind and a length within the limit, or to an error;
        /// never a panic.
        #[test]
        fn any_header_decodes_within_limits_or_fails(h in proptest::array::uniform17(proptest::prelude::any::<u8>()), max in 0usize..(1 << 34)) {
            match decode_header(&h, max) {
                Ok((kind, id, len)) => {
                    proptest::prop_assert!(len <= max);
                    proptest::prop_assert_eq!(encode_header(kind, id, len), h);
                }
                Err(e) => proptest::prop_assert!(!e.0.is_empty()),
            }
        }

        /// A raised payload of any bytes parses into an in-bounds summary or fails.
        #[test]
        fn any_raised_payload_parses_or_fails(p in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            if let Ok(r) = RaisedPayload::parse(&p) {
                proptest::prop_assert_eq!(4 + r.summary.len() + r.exception.len(), p.len());
            }
        }
    }

    #[test]
    fn raised_payload() {
        let mut p = 5u32.to_le_bytes().to_vec();
        p.extend_from_slice(b"Boom!pickle");
        let r = RaisedPayload::parse(&p).unwrap();
        assert_eq!(r.summary, "Boom!");
        assert_eq!(r.exception, b"pickle");
        assert!(RaisedPayload::parse(&[9, 0, 0, 0, b'x']).is_err());
    }
}
