//! Records every packet that crosses the node's edge, both ways, to pcapng, with the
//! words the node and the link have for it as the packet's comment.
//!
//! The capture sits where a tcpdump on synack's own machine would: between the node and
//! the link. An inbound packet is recorded when it reaches the node (a packet the link
//! lost never does; one it delayed arrives late), an outbound one when the node sends it
//! (its comment says what the link will do to it). The capture does not read packets to
//! decide anything: the node explains each packet when it handles or sends it (by serial
//! number, see `node::Outgoing`), and the driver hands the words over with the packet.
//!
//! [`PcapngSink`] writes the pcapng: to a file, a ring of files each bounded in size, or
//! a stream (stdout, a FIFO) for a live reader; see [`CaptureConfig`]. How it ended
//! (complete, stopped at its limit, cut short by a full disk) is its [`Summary`].

mod config;
mod output;
mod pcapng;
mod summary;
mod writer;

pub use config::{
    CaptureConfig, CaptureError, DEFAULT_FILE_LIMIT, MAX_FILES, MIN_FILE_LIMIT, Target, ring_path,
    size,
};
pub use pcapng::{PcapngSink, SinkInfo};
pub use summary::{Stop, Summary, SummaryHandle};

use std::io;
use std::path::PathBuf;

use smoltcp::time::{Duration, Instant};

use crate::observe::Direction;

/// How stale the file may get while the node is idle: open it in Wireshark and it holds
/// everything up to this long ago.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// The directory default captures go to; the only one synack makes if it is missing.
pub const DEFAULT_DIR: &str = "captures";

/// Where the default capture goes: a new timestamped file under `captures/`.
pub fn default_path(prefix: &str) -> PathBuf {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (y, mo, d, h, mi, s) = crate::clock::civil_from_unix(now.as_secs());
    PathBuf::from(DEFAULT_DIR).join(format!(
        "{prefix}-{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}-{:03}.pcapng",
        now.subsec_millis()
    ))
}

/// A capture in progress.
pub struct Capture {
    sink: Option<PcapngSink>,
    keylog: Option<std::fs::File>,
    failure: Option<io::Error>,
    /// The comment being put together (reused: no allocation per packet).
    comment: String,
    last_sync: Instant,
    synced_packets: u64,
    synced_chunks: u64,
}

impl Capture {
    pub fn new(sink: PcapngSink) -> Self {
        Capture {
            sink: Some(sink),
            keylog: None,
            failure: None,
            comment: String::new(),
            last_sync: Instant::ZERO,
            synced_packets: 0,
            synced_chunks: 0,
        }
    }

    /// Also write TLS secrets to this file, in the SSLKEYLOGFILE format (`--keylog`).
    pub fn set_keylog_file(&mut self, file: std::fs::File) {
        self.keylog = Some(file);
    }

    /// Records one packet. `notes` are joined with "; " into its comment (empty ones are
    /// skipped; none at all: no comment).
    pub fn record(&mut self, at: Instant, dir: Direction, packet: &[u8], notes: &[&str]) {
        let Some(sink) = self.sink.as_mut() else {
            return;
        };
        self.comment.clear();
        for note in notes.iter().filter(|n| !n.is_empty()) {
            if !self.comment.is_empty() {
                self.comment.push_str("; ");
            }
            self.comment.push_str(note);
        }
        let comment = (!self.comment.is_empty()).then_some(self.comment.as_str());
        if let Err(e) = sink.write_packet(since_epoch(at), dir, packet, comment) {
            self.fail(e);
        }
    }

    /// Records TLS key log lines: into the capture (a Decryption Secrets Block, ahead of
    /// the packets still to come, so a reader has the secrets before the records they
    /// open) and the `--keylog` file.
    pub fn secrets(&mut self, lines: &[String]) {
        if lines.is_empty() {
            return;
        }
        let mut text = lines.join("\n");
        text.push('\n');
        if let Some(file) = self.keylog.as_mut()
            && let Err(e) = std::io::Write::write_all(file, text.as_bytes())
        {
            log::warn!("--keylog: cannot write: {e}");
        }
        if let Some(sink) = self.sink.as_mut()
            && let Err(e) = sink.write_secrets(&text)
        {
            self.fail(e);
        }
    }

    /// The capture cannot go on (disk full, file gone): say so once and stop capturing.
    fn fail(&mut self, e: io::Error) {
        if let Some(sink) = self.sink.take() {
            log::error!("capture {} stopped: {e}", sink.path().display());
        }
        self.failure = Some(e);
    }

    /// When the file should next catch up: [`SYNC_INTERVAL`] after it last moved, if
    /// anything was captured since. The driver wakes up for it.
    pub fn sync_deadline(&self) -> Option<Instant> {
        let sink = self.sink.as_ref()?;
        (sink.packets() != self.synced_packets).then(|| self.last_sync + SYNC_INTERVAL)
    }

    /// Lets the file catch up with what is captured, once the capture has been quiet for
    /// [`SYNC_INTERVAL`]. While chunks flow to the writer the file is catching up anyway,
    /// and a sync (which rewrites the partial last block) would only slow a transfer.
    pub fn idle(&mut self, now: Instant) {
        let Some(sink) = self.sink.as_mut() else {
            return;
        };
        if sink.chunks_sent() != self.synced_chunks {
            self.synced_chunks = sink.chunks_sent();
            self.last_sync = now;
            return;
        }
        if sink.packets() == self.synced_packets || now < self.last_sync + SYNC_INTERVAL {
            return;
        }
        self.last_sync = now;
        self.synced_packets = sink.packets();
        if let Err(e) = sink.flush() {
            self.fail(e);
        }
    }

    /// Writes out everything and pushes the file to disk; returns the path and the
    /// number of packets written.
    pub fn finish(&mut self) -> io::Result<(PathBuf, u64)> {
        if let Some(e) = self.failure.take() {
            return Err(e);
        }
        let sink = self
            .sink
            .as_mut()
            .ok_or_else(|| io::Error::other("the capture was already finished"))?;
        sink.finish()?;
        Ok((sink.path().to_owned(), sink.packets()))
    }
}

fn since_epoch(at: Instant) -> std::time::Duration {
    std::time::Duration::from_micros(at.total_micros().max(0) as u64)
}
