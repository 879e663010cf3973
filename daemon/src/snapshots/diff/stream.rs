//! The layer stream: decompression, read on a producer thread, hashed as the
//! tar reader consumes it (the diff ID).

use crate::error::Result;
use sha2::Digest as _;
use std::io::{BufRead, BufReader, Read};

/// Counts and hashes what the tar reader consumes (the uncompressed layer).
pub(super) struct Hashing<R> {
    pub(super) inner: R,
    pub(super) hash: sha2::Sha256,
    pub(super) n: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
}

/// Wraps a (possibly compressed) layer stream in the right decompressor,
/// chosen by its magic bytes.
pub fn decompress<'a>(r: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    let mut br = BufReader::with_capacity(1 << 20, r);
    let head = br
        .fill_buf()
        .map_err(|e| crate::error::io_err("read layer", e))?
        .to_vec();
    Ok(match head.as_slice() {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(br)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Box::new(
            zstd::stream::read::Decoder::with_buffer(br)
                .map_err(|e| crate::error::io_err("start zstd decoder", e))?,
        ),
        _ => Box::new(br),
    })
}

/// Reads the chunks a producer thread sends.
pub(super) struct ChanReader {
    pub(super) rx: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    pub(super) buf: Vec<u8>,
    pub(super) pos: usize,
}

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(Ok(b)) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
