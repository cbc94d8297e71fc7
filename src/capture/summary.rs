//! How a capture ended: the files it left, the packets in them, and what it did not
//! capture (past its limit, or after a failure), said in one sentence.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use super::config::size;

/// Why capturing stopped before the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// One file reached its limit (these bytes): later packets were counted, not
    /// captured.
    Limit(u64),
    /// Writing failed, for this reason ("the disk is full"); the file is cut back to its
    /// last whole packet.
    Failed(String),
}

/// How a capture ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// What the capture was asked to write to: a path (a ring's base name), or a
    /// stream's name (`stdout`).
    pub target: String,
    /// Whether it went to a stream rather than to files.
    pub stream: bool,
    /// The files left, oldest first, with the packets each holds (a stream's name, for a
    /// stream).
    pub files: Vec<(PathBuf, u64)>,
    /// Files a ring removed to make room, and the packets they held.
    pub removed_files: u64,
    pub removed_packets: u64,
    /// Packets that reached the capture and are in no file: past the limit, or lost
    /// with a failure.
    pub not_captured: u64,
    pub stop: Option<Stop>,
}

impl Summary {
    /// Whether everything meant to be captured was (a limit the user set is not a
    /// failure; a full disk or a reader that went away is).
    pub fn complete(&self) -> bool {
        !matches!(self.stop, Some(Stop::Failed(_)))
    }

    /// Packets in the files left.
    pub fn packets(&self) -> u64 {
        self.files.iter().map(|(_, n)| n).sum()
    }

    /// The files left, as `PATH` or `FIRST to LAST (N files)`.
    fn where_(&self) -> String {
        match self.files.as_slice() {
            [] => self.target.clone(),
            [(only, _)] => only.display().to_string(),
            [(first, _), .., (last, _)] => format!(
                "{} to {} ({} files)",
                first.display(),
                last.display(),
                self.files.len()
            ),
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let packets = self.packets();
        let whence = if self.stream { "capture to" } else { "capture" };
        let at = self.where_();
        match &self.stop {
            None => write!(f, "{whence} {at} complete, {packets} packets")?,
            Some(Stop::Limit(limit)) => write!(
                f,
                "capture {at} stopped at its limit of {} (--capture-limit): it holds the first {packets} packets, and {} later ones were not captured",
                size(*limit),
                self.not_captured
            )?,
            Some(Stop::Failed(why)) if self.files.is_empty() || self.stream => write!(
                f,
                "{whence} {at} is incomplete: {why}; {packets} packets were captured, {} were not",
                self.not_captured
            )?,
            Some(Stop::Failed(why)) => write!(
                f,
                "capture {at} is incomplete: {why}; it holds {packets} packets up to its last whole one, and {} were not captured",
                self.not_captured
            )?,
        }
        if self.removed_files > 0 {
            write!(
                f,
                " (the ring removed {} older file{} of {} packets)",
                self.removed_files,
                if self.removed_files == 1 { "" } else { "s" },
                self.removed_packets
            )?;
        }
        Ok(())
    }
}

/// Where a sink leaves its [`Summary`] when it finishes, for whoever reports on it after
/// handing the sink to the tap.
#[derive(Debug, Clone, Default)]
pub struct SummaryHandle(Arc<OnceLock<Summary>>);

impl SummaryHandle {
    /// The summary, once the capture has finished.
    pub fn get(&self) -> Option<Summary> {
        self.0.get().cloned()
    }

    pub(super) fn set(&self, summary: Summary) {
        let _ = self.0.set(summary);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(files: &[(&str, u64)], stop: Option<Stop>) -> Summary {
        Summary {
            target: "c.pcapng".into(),
            stream: false,
            files: files.iter().map(|(p, n)| (PathBuf::from(p), *n)).collect(),
            removed_files: 0,
            removed_packets: 0,
            not_captured: 7,
            stop,
        }
    }

    #[test]
    fn one_sentence_for_each_ending() {
        let done = summary(&[("c.pcapng", 10)], None);
        assert!(done.complete());
        assert_eq!(done.to_string(), "capture c.pcapng complete, 10 packets");
        let capped = summary(&[("c.pcapng", 10)], Some(Stop::Limit(1 << 20)));
        assert!(capped.complete(), "a limit is what the user asked for");
        assert_eq!(
            capped.to_string(),
            "capture c.pcapng stopped at its limit of 1 MiB (--capture-limit): it holds the first 10 packets, and 7 later ones were not captured"
        );
        let full = summary(
            &[("c.pcapng", 10)],
            Some(Stop::Failed("the disk is full".into())),
        );
        assert!(!full.complete());
        assert!(full.to_string().contains("incomplete: the disk is full"));
        let mut ring = summary(&[("c_00002.pcapng", 4), ("c_00003.pcapng", 5)], None);
        ring.removed_files = 1;
        ring.removed_packets = 3;
        assert_eq!(ring.packets(), 9);
        assert_eq!(
            ring.to_string(),
            "capture c_00002.pcapng to c_00003.pcapng (2 files) complete, 9 packets (the ring removed 1 older file of 3 packets)"
        );
    }
}
