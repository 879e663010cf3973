//! ttrpc framing: the 10-byte header (u32 BE payload length, u32 BE stream
//! id, u8 type, u8 flags), reading and writing whole frames, and the 4 MiB
//! payload limit both sides keep.

use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Length of a frame header.
pub const HEADER_LEN: usize = 10;
/// Largest payload either side accepts.
pub const MAX_MESSAGE: usize = 4 << 20;
/// Frame type of a request.
pub const TYPE_REQUEST: u8 = 1;
/// Frame type of a response.
pub const TYPE_RESPONSE: u8 = 2;
/// Frame type of a stream data message (unused by unary services).
pub const TYPE_DATA: u8 = 3;

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub length: u32,
    pub stream_id: u32,
    pub kind: u8,
    pub flags: u8,
}

impl Header {
    /// The header's wire bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..4].copy_from_slice(&self.length.to_be_bytes());
        b[4..8].copy_from_slice(&self.stream_id.to_be_bytes());
        b[8] = self.kind;
        b[9] = self.flags;
        b
    }

    /// Parses wire bytes.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            length: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            stream_id: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            kind: b[8],
            flags: b[9],
        }
    }
}

/// One frame read off the wire.
#[derive(Debug)]
pub struct Frame {
    pub header: Header,
    /// The payload, or `None` when it exceeded [`MAX_MESSAGE`] and was skipped.
    pub payload: Option<Vec<u8>>,
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
/// An oversized payload is read past (so the stream stays in sync) and
/// reported as `payload: None`.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Frame>> {
    let mut hb = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r.read(&mut hb[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "ttrpc: connection closed inside a frame header",
            ));
        }
        got += n;
    }
    let header = Header::decode(&hb);
    let len = header.length as usize;
    if len > MAX_MESSAGE {
        let skipped = tokio::io::copy(&mut r.take(len as u64), &mut tokio::io::sink()).await?;
        if skipped != len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "ttrpc: connection closed inside an oversized frame",
            ));
        }
        return Ok(Some(Frame {
            header,
            payload: None,
        }));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Some(Frame {
        header,
        payload: Some(payload),
    }))
}

/// Writes one frame (header and payload in a single write).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    stream_id: u32,
    kind: u8,
    payload: &[u8],
) -> io::Result<()> {
    if payload.len() > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "ttrpc: message of {} bytes exceeds the {MAX_MESSAGE}-byte limit",
                payload.len()
            ),
        ));
    }
    // At most MAX_MESSAGE (4 MiB): checked above.
    #[allow(clippy::cast_possible_truncation)]
    let length = payload.len() as u32;
    let header = Header {
        length,
        stream_id,
        kind,
        flags: 0,
    };
    let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
    buf.extend_from_slice(&header.encode());
    buf.extend_from_slice(payload);
    w.write_all(&buf).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::ttrpc::Request;
    use prost::Message;

    #[test]
    fn header_layout_matches_hand_made_bytes() {
        let h = Header {
            length: 0x0102_0304,
            stream_id: 5,
            kind: TYPE_RESPONSE,
            flags: 0,
        };
        assert_eq!(h.encode(), [1, 2, 3, 4, 0, 0, 0, 5, 2, 0]);
        assert_eq!(Header::decode(&h.encode()), h);
    }

    #[tokio::test]
    async fn reads_a_hand_made_request_frame() {
        // Request{service:"s", method:"m", payload:[0x08,0x01]} encoded by hand.
        let body: Vec<u8> = vec![0x0a, 1, b's', 0x12, 1, b'm', 0x1a, 2, 0x08, 0x01];
        let len = u8::try_from(body.len()).unwrap();
        let mut wire = vec![0, 0, 0, len, 0, 0, 0, 3, 1, 0];
        wire.extend_from_slice(&body);
        let mut r = wire.as_slice();
        let f = read_frame(&mut r).await.unwrap().unwrap();
        assert_eq!(f.header.stream_id, 3);
        assert_eq!(f.header.kind, TYPE_REQUEST);
        let req = Request::decode(f.payload.unwrap().as_slice()).unwrap();
        assert_eq!((req.service.as_str(), req.method.as_str()), ("s", "m"));
        assert_eq!(req.payload, vec![0x08, 0x01]);
        assert!(read_frame(&mut r).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn truncated_and_oversized_frames() {
        let mut r: &[u8] = &[0, 0, 0];
        assert!(read_frame(&mut r).await.is_err());
        let len = u32::try_from(MAX_MESSAGE + 1).unwrap();
        let mut wire = len.to_be_bytes().to_vec();
        wire.extend_from_slice(&[0, 0, 0, 1, 1, 0]);
        wire.resize(HEADER_LEN + MAX_MESSAGE + 1, 7);
        let mut r = wire.as_slice();
        let f = read_frame(&mut r).await.unwrap().unwrap();
        assert!(f.payload.is_none());
        let mut sink = Vec::new();
        assert!(
            write_frame(&mut sink, 1, TYPE_REQUEST, &vec![0; MAX_MESSAGE + 1])
                .await
                .is_err()
        );
    }
}
