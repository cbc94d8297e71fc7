//! What a capture is asked to be: where it goes, how big a file may grow, and how many
//! files a ring keeps (dumpcap's `-b filesize:` and `-b files:`).

use std::path::{Path, PathBuf};

/// How big a capture file grows when nobody says: an 8 s SYN flood writes ~300 MB, so
/// this stops a forgotten server after a minute or so of flood, yet holds a 1 GB download
/// (about 1.1 GB of capture) whole.
pub const DEFAULT_FILE_LIMIT: u64 = 2 << 30;

/// The smallest file limit: room for the section, the interface, the TLS secrets a new
/// file of a ring starts with, and packets.
pub const MIN_FILE_LIMIT: u64 = 64 << 10;

/// The most files a ring keeps. Files are numbered with five digits, so that they sort
/// by name until the 100 000th.
pub const MAX_FILES: u32 = 10_000;

/// Where a capture goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A regular file, created or emptied; or, if the path is a FIFO (or another
    /// non-regular file), a stream into it.
    Path(PathBuf),
    /// A stream to the process's standard output, for `wireshark -k -i -`.
    Stdout,
}

/// What a capture is asked to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureConfig {
    pub target: Target,
    /// The most bytes a file may hold; `None`: [`DEFAULT_FILE_LIMIT`] for a regular file,
    /// no limit for a stream (it fills no disk). A file ends before the packet that would
    /// take it past the limit (a file's first packet always goes in).
    pub limit: Option<u64>,
    /// 1: one file, and capturing stops at the limit. More: a ring of that many files,
    /// each a complete pcapng of up to `limit` bytes; the oldest is removed as a new one
    /// starts.
    pub files: u32,
}

impl CaptureConfig {
    /// One file at `path`, with the default limit.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        CaptureConfig {
            target: Target::Path(path.into()),
            limit: None,
            files: 1,
        }
    }
}

impl From<PathBuf> for CaptureConfig {
    fn from(path: PathBuf) -> Self {
        Self::file(path)
    }
}

/// Why a capture could not start. Each is one sentence saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot create capture file {0}: {1} (is the directory writable?)")]
    Create(PathBuf, String),
    #[error(
        "cannot write to capture file {0}: {1}; free some room, or capture elsewhere (--capture PATH) or not at all (--no-capture)"
    )]
    Write(PathBuf, String),
    #[error("cannot write the capture to {0}: {1}")]
    Stream(String, String),
    #[error(
        "stdout is a terminal: pipe the capture into a reader (--capture - | wireshark -k -i -) or give a file"
    )]
    Terminal,
    #[error(
        "--capture-files {0} makes a ring of files, but {1} is a stream: give a file path, or one file"
    )]
    RingOnStream(u32, String),
    #[error("cannot start the capture's writer thread: {0}")]
    Thread(std::io::Error),
    #[error(
        "the directory {0} does not exist: create it first, or give a --capture path in an existing one"
    )]
    NoDirectory(PathBuf),
}

/// The name of file number `index` (from 1) of a ring on `base`: `run.pcapng` gives
/// `run_00001.pcapng`, `run_00002.pcapng` ..., which sort in the order they were written.
pub fn ring_path(base: &Path, index: u64) -> PathBuf {
    let stem = base
        .file_stem()
        .map_or_else(|| "capture".into(), |s| s.to_string_lossy().into_owned());
    let ext = base
        .extension()
        .map_or_else(|| "pcapng".into(), |e| e.to_string_lossy().into_owned());
    base.with_file_name(format!("{stem}_{index:05}.{ext}"))
}

/// A size in the units people read: `2 GiB`, `64 KiB`, `1.5 MiB`, `700 B`.
pub fn size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, scale) in UNITS {
        if bytes >= scale {
            let value = bytes as f64 / scale as f64;
            return if bytes % scale == 0 {
                format!("{} {unit}", bytes / scale)
            } else {
                format!("{value:.1} {unit}")
            };
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_files_sort_in_the_order_they_were_written() {
        let base = Path::new("captures/run.pcapng");
        let names: Vec<PathBuf> = [1, 2, 10, 99_999].map(|i| ring_path(base, i)).into();
        assert_eq!(names[0], Path::new("captures/run_00001.pcapng"));
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, names);
        assert_eq!(
            ring_path(Path::new("x"), 3),
            Path::new("x_00003.pcapng"),
            "no extension: pcapng"
        );
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(2 << 30), "2 GiB");
        assert_eq!(size(64 << 10), "64 KiB");
        assert_eq!(size(3 << 19), "1.5 MiB");
        assert_eq!(size(700), "700 B");
    }
}
