//! The wire format between the supervisor and a worker process: a 17-byte header
//! (kind `u8`, task id `u64` LE, payload length `u64` LE) followed by the payload.
//! `python/stateful_pool/_protocol.py` is the other side.

use std::fmt;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 17;

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
    /// Worker → supervisor: setup done; payload is what setup returned.
    Ready = 10,
    /// Worker → supervisor: the call returned; payload is the result.
    Ok = 11,
    /// Worker → supervisor: setup or the call raised; payload is a [`RaisedPayload`].
    Raised = 12,
}

impl FrameKind {
    /// The kind with this wire value.
    #[must_use]
    pub fn from_u8(raw: u8) -> Option<Self> {
        Some(match raw {
            1 => FrameKind::Init,
            2 => FrameKind::Call,
            3 => FrameKind::Stop,
            10 => FrameKind::Ready,
            11 => FrameKind::Ok,
            12 => FrameKind::Raised,
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
pub fn encode_header(kind: FrameKind, id: u64, len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = kind as u8;
    h[1..9].copy_from_slice(&id.to_le_bytes());
    h[9..17].copy_from_slice(&(len as u64).to_le_bytes());
    h
}

/// Decodes a header into kind, id and payload length.
///
/// # Errors
/// [`ProtocolError`] for an unknown kind or a length that does not fit in memory.
pub fn decode_header(h: &[u8; HEADER_LEN]) -> Result<(FrameKind, u64, usize), ProtocolError> {
    let kind = FrameKind::from_u8(h[0]).ok_or_else(|| ProtocolError(format!("unknown frame kind {}", h[0])))?;
    let id = u64::from_le_bytes(h[1..9].try_into().expect("8 bytes"));
    let len = u64::from_le_bytes(h[9..17].try_into().expect("8 bytes"));
    let len = usize::try_from(len).map_err(|_| ProtocolError(format!("frame of {len} bytes")))?;
    Ok((kind, id, len))
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

impl<'a> RaisedPayload<'a> {
    /// Splits a raised frame's payload.
    ///
    /// # Errors
    /// [`ProtocolError`] when the summary length or encoding is wrong.
    pub fn parse(payload: &'a [u8]) -> Result<Self, ProtocolError> {
        let bad = || ProtocolError("malformed raised frame".into());
        let len = payload.get(..4).ok_or_else(bad)?;
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let summary = payload.get(4..4 + len).ok_or_else(bad)?;
        let summary = std::str::from_utf8(summary).map_err(|_| bad())?;
        Ok(Self { summary, exception: &payload[4 + len..] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        for kind in
            [FrameKind::Init, FrameKind::Call, FrameKind::Stop, FrameKind::Ready, FrameKind::Ok, FrameKind::Raised]
        {
            let h = encode_header(kind, u64::MAX - 3, 1 << 40);
            assert_eq!(decode_header(&h).unwrap(), (kind, u64::MAX - 3, 1 << 40));
        }
        let mut h = encode_header(FrameKind::Ok, 1, 1);
        h[0] = 99;
        assert!(decode_header(&h).is_err());
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
