//! Where the capture's bytes go: a regular file, written at offsets (O_DIRECT for whole
//! chunks where the filesystem allows it), or a stream (stdout, a FIFO), written in order
//! with no seeking, because a pipe has no offsets to write at.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::pcapng::ENHANCED_PACKET_BLOCK;
use super::writer::ALIGN;

/// A file's or a stream's writing end, owned by the writer thread.
pub enum Output {
    /// Chunks aligned in length and offset go to the disk through O_DIRECT, which skips
    /// the page-cache copy that costs this kind of machine ~0.7 s of CPU per GB (against
    /// ~0.1 s); the rest (tails, a file's last chunk) through the plain descriptor. Where
    /// the filesystem refuses O_DIRECT (tmpfs), everything goes through the plain one.
    File { direct: Option<File>, plain: File },
    /// Bytes in the order they come.
    Stream(File),
}

impl Output {
    /// Creates (or empties) the regular file at `path`. It is opened for reading too, to
    /// find its last whole block if a write fails.
    pub fn create_file(path: &Path) -> io::Result<Output> {
        let plain = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Output::from_file(path, plain))
    }

    /// The regular file `plain`, already open at `path`.
    pub fn from_file(path: &Path, plain: File) -> Output {
        use std::os::unix::fs::OpenOptionsExt;
        let direct = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok();
        Output::File { direct, plain }
    }

    pub fn is_stream(&self) -> bool {
        matches!(self, Output::Stream(_))
    }

    /// Writes `bytes` at `offset` in a file, or next in a stream.
    pub fn write_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        match self {
            Output::Stream(out) => out.write_all(bytes),
            Output::File { direct, plain } => {
                let aligned = bytes.len() % ALIGN == 0 && offset % ALIGN as u64 == 0;
                if aligned && let Some(d) = direct.as_ref() {
                    if d.write_all_at(bytes, offset).is_ok() {
                        return Ok(());
                    }
                    // The device refused O_DIRECT (or the write failed: the plain
                    // descriptor says why): plain writes from now on.
                    *direct = None;
                }
                plain.write_all_at(bytes, offset)
            }
        }
    }

    /// Cuts a file back to the end of its last whole block, walking the blocks from
    /// `from`, the end of a block known to be written with `from.1` packets before it.
    /// Returns the file's new length and the packets it holds.
    pub fn cut_back(&self, from: (u64, u64)) -> io::Result<(u64, u64)> {
        let Output::File { plain, .. } = self else {
            return Ok(from);
        };
        let len = plain.metadata()?.len();
        let (mut at, mut packets) = from;
        let mut head = [0u8; 8];
        let mut tail = [0u8; 4];
        // pcapng §3.1: every block starts with its type and total length and ends with
        // the length again; a block whose end is not in the file, or whose two lengths
        // differ, is where the file stops being whole.
        while at + 12 <= len {
            plain.read_exact_at(&mut head, at)?;
            let kind = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            let block = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
            if block < 12 || block % 4 != 0 || at + block > len {
                break;
            }
            plain.read_exact_at(&mut tail, at + block - 4)?;
            if u64::from(u32::from_le_bytes(tail)) != block {
                break;
            }
            at += block;
            if kind == ENHANCED_PACKET_BLOCK {
                packets += 1;
            }
        }
        plain.set_len(at)?;
        Ok((at, packets))
    }
}

/// What went wrong, in words a user acts on.
pub fn reason(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOSPC) => "the disk is full".into(),
        Some(libc::EDQUOT) => "the disk quota is used up".into(),
        Some(libc::EPIPE) => "the reader went away (broken pipe)".into(),
        Some(libc::EIO) => "the disk reported an I/O error".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block of `kind` with `body` bytes, as pcapng lays it out.
    fn block(kind: u32, body: usize) -> Vec<u8> {
        let len = (12 + body) as u32;
        let mut b = Vec::new();
        b.extend_from_slice(&kind.to_le_bytes());
        b.extend_from_slice(&len.to_le_bytes());
        b.resize(8 + body, 0xAB);
        b.extend_from_slice(&len.to_le_bytes());
        b
    }

    #[test]
    fn a_file_is_cut_back_to_its_last_whole_block() {
        let path = std::env::temp_dir().join(format!("synack-cut-{}.pcapng", std::process::id()));
        let head = block(0x0A0D_0D0A, 16);
        let mut bytes = head.clone();
        for _ in 0..3 {
            bytes.extend(block(ENHANCED_PACKET_BLOCK, 40));
        }
        bytes.extend(block(0x0A, 8));
        let whole = bytes.len() as u64;
        // Half a packet block, then a block whose trailing length is wrong.
        let half = block(ENHANCED_PACKET_BLOCK, 100);
        bytes.extend_from_slice(&half[..60]);
        std::fs::write(&path, &bytes).unwrap();
        let out = Output::from_file(
            &path,
            File::options().read(true).write(true).open(&path).unwrap(),
        );
        assert_eq!(out.cut_back((head.len() as u64, 0)).unwrap(), (whole, 3));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);

        let mut bad = block(ENHANCED_PACKET_BLOCK, 40);
        let n = bad.len();
        bad[n - 1] = 0xFF;
        let mut f = File::options().append(true).open(&path).unwrap();
        f.write_all(&bad).unwrap();
        assert_eq!(out.cut_back((head.len() as u64, 0)).unwrap(), (whole, 3));
        std::fs::remove_file(&path).unwrap();
    }
}
