//! Reading a non-blocking descriptor registered with the reactor, shared
//! by the copies of process output (to FIFOs, files and json-file logs).

use std::os::fd::OwnedFd;
use tokio::io::unix::AsyncFd;

/// Reads what is there, waiting until something is; a closed terminal
/// (EIO) reads as the end.
pub async fn async_read(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut g = fd.readable().await?;
        match g.try_io(|f| nix::unistd::read(f.get_ref(), buf).map_err(std::io::Error::from)) {
            Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0), // pty closed
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}
