//! SPDY/3.1 frames on the wire, and the zlib-compressed header blocks.
//!
//! Control frame: `1 | version(15) | type(16) | flags(8) | length(24) | payload`.
//! Data frame:    `0 | stream-id(31) | flags(8) | length(24) | data`.
//! Header blocks are `count(32)` then `len(32) name len(32) value` pairs, sent through one zlib
//! stream per direction that lives as long as the session (primed with [`DICTIONARY`], flushed
//! with SYNC_FLUSH after every block), so encoder and decoder are stateful.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dictionary::DICTIONARY;

/// SPDY version carried in every control frame.
pub const VERSION: u16 = 3;
/// FIN on control and data frames: the sender's half of the stream is closed.
pub const FLAG_FIN: u8 = 0x01;
/// UNIDIRECTIONAL on SYN_STREAM: the receiver must not send on the stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// Largest payload a frame may carry (24-bit length).
pub const MAX_PAYLOAD: usize = 0xff_ffff;

/// RST_STREAM status codes used here.
pub mod rst {
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// REFUSED_STREAM.
    pub const REFUSED_STREAM: u32 = 3;
    /// CANCEL.
    pub const CANCEL: u32 = 5;
    /// INTERNAL_ERROR.
    pub const INTERNAL_ERROR: u32 = 6;
}

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// Header name/value pairs. Names are lower case on the wire; multiple values of one name are
/// NUL-separated inside one value.
pub type Headers = Vec<(String, String)>;

/// Looks a header up by name, ignoring ASCII case (Go peers canonicalise names).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// One SPDY/3.1 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_id: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    /// `(flags, id, value)` entries.
    Settings {
        flags: u8,
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
}

/// Errors of the frame layer; any of them ends the session.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("SPDY control frame of unsupported version {0}")]
    Version(u16),
    #[error("SPDY frame too short: type {kind} with {len} payload bytes")]
    Short { kind: u16, len: usize },
    #[error("SPDY frame payload of {0} bytes exceeds the 24-bit length field")]
    TooLarge(usize),
    #[error("SPDY header block is malformed: {0}")]
    HeaderBlock(&'static str),
    #[error("SPDY header block compression")]
    Compress(#[source] flate2::CompressError),
    #[error("SPDY header block decompression")]
    Decompress(#[source] flate2::DecompressError),
}

/// Stateful encoder/decoder of one session's frames (one zlib stream each way).
pub struct Codec {
    deflate: Compress,
    inflate: Decompress,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").finish_non_exhaustive()
    }
}

impl Default for Codec {
    fn default() -> Self {
        Self::new()
    }
}

fn u31(v: u32) -> u32 {
    v & 0x7fff_ffff
}

fn len24(len: usize) -> Result<[u8; 3], FrameError> {
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(len));
    }
    let b = u32::try_from(len)
        .map_err(|_| FrameError::TooLarge(len))?
        .to_be_bytes();
    Ok([b[1], b[2], b[3]])
}

/// The uncompressed header block of `headers`.
pub fn encode_header_block(headers: &Headers) -> Vec<u8> {
    let mut out = Vec::new();
    let count = u32::try_from(headers.len()).unwrap_or(u32::MAX);
    out.put_u32(count);
    for (name, value) in headers {
        for s in [name.to_ascii_lowercase().as_str(), value.as_str()] {
            out.put_u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
            out.extend_from_slice(s.as_bytes());
        }
    }
    out
}

/// Parses an uncompressed header block.
pub fn decode_header_block(mut b: &[u8]) -> Result<Headers, FrameError> {
    fn take<'a>(b: &mut &'a [u8]) -> Result<&'a [u8], FrameError> {
        if b.remaining() < 4 {
            return Err(FrameError::HeaderBlock("truncated length"));
        }
        let n = b.get_u32() as usize;
        if b.remaining() < n {
            return Err(FrameError::HeaderBlock("truncated string"));
        }
        let (s, rest) = b.split_at(n);
        *b = rest;
        Ok(s)
    }
    if b.remaining() < 4 {
        return Err(FrameError::HeaderBlock("missing pair count"));
    }
    let count = b.get_u32();
    let mut headers = Vec::new();
    for _ in 0..count {
        let name = take(&mut b)?;
        let value = take(&mut b)?;
        if name.is_empty() {
            return Err(FrameError::HeaderBlock("empty header name"));
        }
        let name =
            std::str::from_utf8(name).map_err(|_| FrameError::HeaderBlock("name not UTF-8"))?;
        let value =
            std::str::from_utf8(value).map_err(|_| FrameError::HeaderBlock("value not UTF-8"))?;
        headers.push((name.to_ascii_lowercase(), value.to_string()));
    }
    Ok(headers)
}

impl Codec {
    /// A fresh codec, as at the start of a session.
    pub fn new() -> Self {
        Self {
            // Go's framer uses BestCompression; any level decodes the same.
            deflate: Compress::new(Compression::best(), true),
            inflate: Decompress::new(true),
        }
    }

    fn compress(&mut self, plain: &[u8]) -> Result<Vec<u8>, FrameError> {
        if self.deflate.total_in() == 0 && self.deflate.total_out() == 0 {
            self.deflate
                .set_dictionary(DICTIONARY)
                .map_err(FrameError::Compress)?;
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let start = self.deflate.total_in();
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let consumed = usize::try_from(self.deflate.total_in() - start).unwrap_or(usize::MAX);
            self.deflate
                .compress_vec(&plain[consumed..], &mut out, FlushCompress::Sync)
                .map_err(FrameError::Compress)?;
            let consumed = usize::try_from(self.deflate.total_in() - start).unwrap_or(usize::MAX);
            // The flush is complete once all input is in and zlib left output space unused.
            if consumed == plain.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    fn decompress(&mut self, packed: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::with_capacity(packed.len() * 4 + 256);
        let start = self.inflate.total_in();
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity().max(1024));
            }
            let consumed = usize::try_from(self.inflate.total_in() - start).unwrap_or(usize::MAX);
            let out_before = out.len();
            match self
                .inflate
                .decompress_vec(&packed[consumed..], &mut out, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => return Ok(out),
                Ok(_) => {}
                // The peer's zlib header names the dictionary (FDICT): prime and go on.
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(DICTIONARY)
                        .map_err(FrameError::Decompress)?;
                    continue;
                }
                Err(e) => return Err(FrameError::Decompress(e)),
            }
            let now = usize::try_from(self.inflate.total_in() - start).unwrap_or(usize::MAX);
            if now == packed.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            // zlib neither read nor wrote although it had room: a block that cannot end here.
            if now == consumed && out.len() == out_before && out.len() < out.capacity() {
                return Err(FrameError::HeaderBlock("truncated compressed header block"));
            }
        }
    }

    fn control(out: &mut Vec<u8>, kind: u16, flags: u8, payload: &[u8]) -> Result<(), FrameError> {
        out.put_u16(0x8000 | VERSION);
        out.put_u16(kind);
        out.put_u8(flags);
        out.extend_from_slice(&len24(payload.len())?);
        out.extend_from_slice(payload);
        Ok(())
    }

    /// Appends the wire form of `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let mut p = Vec::new();
        match frame {
            Frame::SynStream {
                stream_id,
                associated_id,
                priority,
                flags,
                headers,
            } => {
                p.put_u32(u31(*stream_id));
                p.put_u32(u31(*associated_id));
                p.put_u8((priority & 0x07) << 5);
                p.put_u8(0); // slot
                p.extend_from_slice(&self.compress(&encode_header_block(headers))?);
                Self::control(out, SYN_STREAM, *flags, &p)
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                p.put_u32(u31(*stream_id));
                p.extend_from_slice(&self.compress(&encode_header_block(headers))?);
                Self::control(out, SYN_REPLY, *flags, &p)
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                p.put_u32(u31(*stream_id));
                p.extend_from_slice(&self.compress(&encode_header_block(headers))?);
                Self::control(out, HEADERS, *flags, &p)
            }
            Frame::RstStream { stream_id, status } => {
                p.put_u32(u31(*stream_id));
                p.put_u32(*status);
                Self::control(out, RST_STREAM, 0, &p)
            }
            Frame::Settings { flags, entries } => {
                p.put_u32(u32::try_from(entries.len()).unwrap_or(u32::MAX));
                for (f, id, value) in entries {
                    p.put_u32((u32::from(*f) << 24) | (id & 0xff_ffff));
                    p.put_u32(*value);
                }
                Self::control(out, SETTINGS, *flags, &p)
            }
            Frame::Ping { id } => {
                p.put_u32(*id);
                Self::control(out, PING, 0, &p)
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                p.put_u32(u31(*last_good_stream_id));
                p.put_u32(*status);
                Self::control(out, GOAWAY, 0, &p)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                p.put_u32(u31(*stream_id));
                p.put_u32(u31(*delta));
                Self::control(out, WINDOW_UPDATE, 0, &p)
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                out.put_u32(u31(*stream_id));
                out.put_u8(*flags);
                out.extend_from_slice(&len24(data.len())?);
                out.extend_from_slice(data);
                Ok(())
            }
        }
    }

    /// Takes one whole frame off the front of `buf`; `Ok(None)` when more bytes are needed.
    /// Control frames of unknown types are consumed and skipped, as SPDY/3 requires.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        loop {
            if buf.len() < 8 {
                return Ok(None);
            }
            let len =
                (usize::from(buf[5]) << 16) | (usize::from(buf[6]) << 8) | usize::from(buf[7]);
            if buf.len() < 8 + len {
                return Ok(None);
            }
            let mut head = buf.split_to(8);
            let payload = buf.split_to(len).freeze();
            let word = head.get_u32();
            let flags = head.get_u8();
            if word & 0x8000_0000 == 0 {
                return Ok(Some(Frame::Data {
                    stream_id: u31(word),
                    flags,
                    data: payload,
                }));
            }
            let version = u16::try_from((word >> 16) & 0x7fff).unwrap_or(0);
            let kind = u16::try_from(word & 0xffff).unwrap_or(0);
            if version != VERSION {
                return Err(FrameError::Version(version));
            }
            let need = match kind {
                SYN_STREAM => 10,
                SYN_REPLY | HEADERS => 4,
                RST_STREAM | GOAWAY | WINDOW_UPDATE => 8,
                SETTINGS | PING => 4,
                _ => 0,
            };
            if len < need {
                return Err(FrameError::Short { kind, len });
            }
            let mut p = payload;
            let frame = match kind {
                SYN_STREAM => {
                    let stream_id = u31(p.get_u32());
                    let associated_id = u31(p.get_u32());
                    let priority = p.get_u8() >> 5;
                    p.advance(1);
                    let headers = decode_header_block(&self.decompress(&p)?)?;
                    Frame::SynStream {
                        stream_id,
                        associated_id,
                        priority,
                        flags,
                        headers,
                    }
                }
                SYN_REPLY => {
                    let stream_id = u31(p.get_u32());
                    let headers = decode_header_block(&self.decompress(&p)?)?;
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                }
                HEADERS => {
                    let stream_id = u31(p.get_u32());
                    let headers = decode_header_block(&self.decompress(&p)?)?;
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
                RST_STREAM => Frame::RstStream {
                    stream_id: u31(p.get_u32()),
                    status: p.get_u32(),
                },
                SETTINGS => {
                    let n = p.get_u32() as usize;
                    if p.remaining() < n.saturating_mul(8) {
                        return Err(FrameError::Short { kind, len });
                    }
                    let entries = (0..n)
                        .map(|_| {
                            let w = p.get_u32();
                            let f = u8::try_from(w >> 24).unwrap_or(0);
                            (f, w & 0xff_ffff, p.get_u32())
                        })
                        .collect();
                    Frame::Settings { flags, entries }
                }
                PING => Frame::Ping { id: p.get_u32() },
                GOAWAY => Frame::GoAway {
                    last_good_stream_id: u31(p.get_u32()),
                    status: p.get_u32(),
                },
                WINDOW_UPDATE => Frame::WindowUpdate {
                    stream_id: u31(p.get_u32()),
                    delta: u31(p.get_u32()),
                },
                _ => continue,
            };
            return Ok(Some(frame));
        }
    }
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
