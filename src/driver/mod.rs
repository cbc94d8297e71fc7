//! Drivers own what the node does not: the clock, the file descriptor, the link between
//! the wire and the node, and the capture at the node's edge.
//!
//! - [`tun::TunDriver`]: a node on a TUN device, on real time (`serve`, `fetch`);
//! - [`pair::Pair`]: two nodes joined by a link, on a virtual clock (`demo`, the tests),
//!   like quinn-proto's test `Pair`.
//!
//! Both move packets the same way, through an [`Edge`]: a packet delivered to a node is
//! recorded (with the node's words for it) after the node has handled it, so that the TLS
//! secrets it released come first; each packet the node sends is recorded with its words
//! and what the link will do to it, then enters the link.

pub mod pair;
pub mod tun;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use smoltcp::time::Instant;

use crate::capture::Capture;
use crate::link::Link;
use crate::node::Node;
use crate::observe::Direction;

/// A node and the capture at its edge.
pub struct Edge {
    pub node: Node,
    pub capture: Option<Capture>,
}

impl Edge {
    pub fn new(node: Node, capture: Option<Capture>) -> Self {
        Edge { node, capture }
    }

    /// A packet reaches the node. `remark`: what the link did to it on the way.
    pub fn deliver(&mut self, now: Instant, packet: &[u8], remark: Option<&str>) {
        self.node.handle_packet(now, packet);
        if let Some(capture) = self.capture.as_mut() {
            capture.secrets(&self.node.take_secrets());
            let note = self.node.inbound_note();
            capture.record(now, Direction::In, packet, &[note, remark.unwrap_or("")]);
        }
    }

    /// What the node sends, recorded, into the link going `dir` (away from this node).
    pub fn drain(&mut self, now: Instant, link: &mut Link, dir: Direction) {
        if let Some(capture) = self.capture.as_mut() {
            capture.secrets(&self.node.take_secrets());
        }
        while let Some(out) = self.node.next_transmit() {
            let entered = link.enter(dir, now, &out.data);
            if let Some(capture) = self.capture.as_mut() {
                let remark = entered.remark.as_deref().unwrap_or("");
                capture.record(now, Direction::Out, &out.data, &[&out.note, remark]);
            }
            self.node.recycle(out);
        }
    }

    /// What the node sends, recorded, straight to `send` (no link in between).
    pub fn drain_direct(&mut self, now: Instant, mut send: impl FnMut(&[u8])) {
        if let Some(capture) = self.capture.as_mut() {
            capture.secrets(&self.node.take_secrets());
        }
        while let Some(out) = self.node.next_transmit() {
            if let Some(capture) = self.capture.as_mut() {
                capture.record(now, Direction::Out, &out.data, &[&out.note]);
            }
            send(&out.data);
            self.node.recycle(out);
        }
    }

    /// Timers due by `now`.
    pub fn timers(&mut self, now: Instant) {
        if self.node.poll_timeout().is_some_and(|t| t <= now) {
            self.node.handle_timeout(now);
        }
    }

    /// When the edge next needs the clock: the node's timers and the capture's sync.
    pub fn next_deadline(&self) -> Option<Instant> {
        let capture = self.capture.as_ref().and_then(|c| c.sync_deadline());
        [self.node.poll_timeout(), capture]
            .into_iter()
            .flatten()
            .min()
    }

    /// Lets the journal and the capture catch up while nothing else happens.
    pub fn idle(&mut self, now: Instant) {
        self.node.journal_mut().flush();
        if let Some(capture) = self.capture.as_mut() {
            capture.idle(now);
        }
    }

    /// The node stops (open connections are reset: their RSTs are recorded and sent
    /// through `send`), and the capture is finished.
    pub fn shutdown(
        &mut self,
        now: Instant,
        send: impl FnMut(&[u8]),
    ) -> Option<std::io::Result<(std::path::PathBuf, u64)>> {
        self.node.shutdown(now);
        self.drain_direct(now, send);
        self.capture.as_mut().map(|c| c.finish())
    }
}

/// SIGINT and SIGTERM, as a flag and a file descriptor that becomes readable when one
/// arrives: the driver sleeps in poll(2) on it with the TUN device, so a signal that lands
/// between checking the flag and sleeping still wakes it.
pub struct Stop {
    flag: Arc<AtomicBool>,
    wake: UnixStream,
}

impl Stop {
    pub fn install() -> std::io::Result<Stop> {
        let (wake, signal_end) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        signal_end.set_nonblocking(true)?;
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, Arc::clone(&flag))?;
            signal_hook::low_level::pipe::register(signal, signal_end.try_clone()?)?;
        }
        Ok(Stop { flag, wake })
    }

    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    pub fn fd(&self) -> i32 {
        self.wake.as_raw_fd()
    }
}
