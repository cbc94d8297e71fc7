//! The journey's file (`--journey-file`), bounded like the capture: whole lines up to a
//! limit, then nothing more. Reaching the limit is said once, when it happens, and the
//! bytes left out are counted and said again when the file is closed.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::capture::size;

/// How big a journey file grows when nobody says: at the ~300 bytes a JSON event takes,
/// about a million events, or a few minutes of SYN flood.
pub const DEFAULT_LIMIT: u64 = 256 << 20;

/// A partial line longer than this is written out as if it ended (the journal writes no
/// such line; this keeps the buffer bounded whatever comes).
const MAX_LINE: usize = 64 << 10;

/// A file that takes whole lines up to `limit` bytes and drops (and counts) the rest.
pub struct BoundedFile {
    out: BufWriter<File>,
    path: PathBuf,
    limit: u64,
    written: u64,
    /// The start of a line whose newline has not come yet.
    line: Vec<u8>,
    /// Bytes left out since the limit was reached (`None`: not reached).
    dropped: Option<u64>,
}

impl BoundedFile {
    /// Creates (or empties) the file at `path`.
    pub fn create(path: &Path, limit: u64) -> io::Result<Self> {
        Ok(BoundedFile {
            out: BufWriter::new(File::create(path)?),
            path: path.to_owned(),
            limit,
            written: 0,
            line: Vec::new(),
            dropped: None,
        })
    }

    /// Bytes left out past the limit, if it was reached.
    pub fn dropped(&self) -> Option<u64> {
        self.dropped
    }

    /// Writes the pending line and `end` (which ends it) if they fit; else stops.
    fn commit(&mut self, end: &[u8]) -> io::Result<()> {
        let len = (self.line.len() + end.len()) as u64;
        if self.written + len > self.limit {
            log::warn!(
                "journey file {}: it reached its limit of {} (--journey-limit); later events are not written to it",
                self.path.display(),
                size(self.limit)
            );
            self.dropped = Some(len);
            self.line.clear();
            return Ok(());
        }
        self.out.write_all(&self.line)?;
        self.out.write_all(end)?;
        self.written += len;
        self.line.clear();
        Ok(())
    }
}

impl Write for BoundedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(dropped) = self.dropped.as_mut() {
            *dropped += buf.len() as u64;
            return Ok(buf.len());
        }
        let mut rest = buf;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            self.commit(&rest[..=nl])?;
            rest = &rest[nl + 1..];
            if let Some(dropped) = self.dropped.as_mut() {
                *dropped += rest.len() as u64;
                return Ok(buf.len());
            }
        }
        self.line.extend_from_slice(rest);
        if self.line.len() > MAX_LINE {
            self.commit(&[])?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl Drop for BoundedFile {
    fn drop(&mut self) {
        if self.dropped.is_none() && !self.line.is_empty() {
            let _ = self.commit(&[]);
        }
        let _ = self.out.flush();
        if let Some(dropped) = self.dropped {
            log::warn!(
                "journey file {} holds the first {} of the journey; {dropped} bytes of later events were not written (--journey-limit)",
                self.path.display(),
                size(self.written)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_lines_up_to_the_limit_then_nothing() {
        let path = std::env::temp_dir().join(format!("synack-journey-{}.txt", std::process::id()));
        let mut f = BoundedFile::create(&path, 20).unwrap();
        // Lines arrive in pieces, as writeln! makes them.
        for piece in ["first ", "line\n", "second\nthi", "rd line\n", "fourth\n"] {
            f.write_all(piece.as_bytes()).unwrap();
        }
        assert_eq!(
            f.dropped(),
            Some(("third line\n".len() + "fourth\n".len()) as u64)
        );
        drop(f);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            text, "first line\nsecond\n",
            "whole lines only, and within 20 bytes"
        );
    }

    #[test]
    fn under_the_limit_everything_goes_through() {
        let path =
            std::env::temp_dir().join(format!("synack-journey-ok-{}.txt", std::process::id()));
        let mut f = BoundedFile::create(&path, 1 << 20).unwrap();
        writeln!(f, "{{\"conn\":1}}").unwrap();
        write!(f, "no newline at the end").unwrap();
        assert_eq!(f.dropped(), None);
        drop(f);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(text, "{\"conn\":1}\nno newline at the end");
    }
}
