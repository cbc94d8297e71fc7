//! A connection: its own one-socket smoltcp `SocketSet`, its buffers, its conversation,
//! and what the node tracks of its sequence space; and the table that finds one by its
//! 4-tuple in constant time.

use std::collections::HashMap;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;

use super::buffers::Region;
use crate::journey::ConnId;
use crate::observe::{FourTuple, Segment, Track, seq_ge};
use crate::session::Conversation;

/// How the connection began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// A peer's SYN to one of our listening ports.
    Passive { port: u16 },
    /// Our SYN (`fetch`, the demo's client).
    Active,
}

/// Where a passive connection stands with its listener's two queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// SYN-RECEIVED: counted against `--syn-backlog`.
    Syn,
    /// Established and waiting for the application: counted against `--backlog`.
    Accept,
    /// Taken by the application (or never queued: our own connections).
    None,
}

/// What the node knows of the connection's sequence space from the segments it saw,
/// which smoltcp keeps private: enough to check a RST or SYN against RCV.NXT and the
/// window (RFC 5961), to answer with a challenge ACK, and to keep TIME-WAIT after the
/// socket is gone.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqTrack {
    /// The peer's initial sequence number, from its SYN or SYN-ACK.
    pub irs: Option<u32>,
    /// One past the highest sequence number we have sent.
    pub snd_nxt: Option<u32>,
    /// The ACK number and window field of our last segment.
    pub last_ack: Option<u32>,
    pub last_window: u16,
    /// Our window scale (what we offered, if the peer offered one too).
    pub our_wscale: u8,
    /// The scale our SYN offered, until the peer's SYN-ACK says whether it applies.
    pub offered_wscale: Option<u8>,
    /// Bytes the application has read.
    pub read: u64,
    /// When we last sent a challenge ACK on this connection (see
    /// `guard::per_connection_allows`).
    pub last_challenge: Option<Instant>,
}

impl SeqTrack {
    /// RCV.NXT as smoltcp has it: the peer's ISN, its SYN, every in-order byte (read by
    /// the application or still in the buffer), and its FIN once processed.
    pub fn rcv_nxt(&self, sock: &tcp::Socket<'_>) -> Option<u32> {
        let fin_processed = matches!(
            sock.state(),
            tcp::State::CloseWait
                | tcp::State::LastAck
                | tcp::State::Closing
                | tcp::State::TimeWait
        );
        let fin = u32::from(fin_processed);
        Some(
            self.irs?
                .wrapping_add(1)
                .wrapping_add(self.read as u32)
                .wrapping_add(sock.recv_queue() as u32)
                .wrapping_add(fin),
        )
    }

    /// RCV.WND in bytes: the last window we advertised, scaled.
    pub fn rcv_wnd(&self) -> u32 {
        u32::from(self.last_window) << self.our_wscale
    }

    /// Takes note of a segment we sent.
    pub fn sent(&mut self, s: &Segment) {
        let end = s.seq.wrapping_add(s.seq_len());
        if self.snd_nxt.is_none_or(|n| seq_ge(end, n)) {
            self.snd_nxt = Some(end);
        }
        if s.ack_flag {
            self.last_ack = Some(s.ack);
        }
        if s.syn && s.ack_flag {
            // Our SYN-ACK offers a scale only if the peer's SYN did (RFC 7323 §2.2).
            self.our_wscale = s.options.window_scale.unwrap_or(0);
        } else if s.syn {
            self.offered_wscale = s.options.window_scale;
        }
        // A SYN's window is never scaled (RFC 7323 §2.2); keep it in the form the
        // segments after it carry, so that a challenge ACK sent in SYN-RECEIVED does not
        // offer 65535 << scale.
        self.last_window = if s.syn {
            (u32::from(s.window) >> self.our_wscale) as u16
        } else {
            s.window
        };
    }

    /// Takes note of a segment the peer sent, before smoltcp judges it: only what smoltcp
    /// will accept too is kept.
    pub fn received(&mut self, s: &Segment) {
        // The first SYN the connection takes sets IRS: a SYN, or a SYN-ACK acknowledging
        // our SYN exactly (RFC 9293 §3.10.7.3). A later SYN with another sequence number
        // is one smoltcp refuses (a challenge ACK), and must not move RCV.NXT.
        let acceptable = !s.ack_flag || Some(s.ack) == self.snd_nxt;
        if s.syn && self.irs.is_none() && acceptable {
            self.irs = Some(s.seq);
            if s.ack_flag {
                // Our SYN's scale applies only if the peer's SYN-ACK offers one too.
                self.our_wscale = match s.options.window_scale {
                    Some(_) => self.offered_wscale.unwrap_or(0),
                    None => 0,
                };
            }
        }
    }
}

pub struct Conn {
    pub id: ConnId,
    pub tuple: FourTuple,
    pub generation: u32,
    pub set: SocketSet<'static>,
    pub handle: SocketHandle,
    /// The socket's buffers, lent from the node's pools (given back when it is removed).
    pub rx: Option<Region>,
    pub tx: Option<Region>,
    /// The socket's state as of our last look, to see transitions.
    pub state: tcp::State,
    pub opened_by: Opened,
    pub queue: Queue,
    pub session: Option<Box<dyn Conversation>>,
    pub opened: Instant,
    /// When the peer acknowledged our FIN and we started waiting for its own (FIN-WAIT-2),
    /// for the FIN timeout.
    pub closed_at: Option<Instant>,
    pub established: bool,
    pub reset_by_peer: bool,
    pub seq: SeqTrack,
    /// The observer's memory of this connection (roles of segments).
    pub track: Track,
    /// Where the timer heap has this connection.
    pub scheduled: Option<Instant>,
    /// Words for our next segment on this connection: a transition the application
    /// caused (a close becomes our FIN) is told on the segment that carries it.
    pub note: String,
    /// Largest receive and send buffer fill seen (for what the connection held).
    pub peak_rx: usize,
    pub peak_tx: usize,
    /// Counted among the node's active connections (taken by the application, not yet
    /// closing).
    pub counted_active: bool,
    /// The sender's inner life (`--internals on`).
    pub inside: super::inside::Inside,
    /// An application owns it through the socket API (not the HTTP server).
    pub app: bool,
    /// Data or our FIN waits for the peer: SND.UNA as it stood, and since when it has
    /// not moved (the send timeout).
    pub stalled: Option<(Option<u32>, Instant)>,
    /// Counted among the node's closing connections (closed by us, not yet gone).
    pub orphan: bool,
}

impl Conn {
    pub fn socket(&self) -> &tcp::Socket<'static> {
        self.set.get::<tcp::Socket>(self.handle)
    }

    pub fn socket_mut(&mut self) -> &mut tcp::Socket<'static> {
        self.set.get_mut::<tcp::Socket>(self.handle)
    }
}

/// The connections, by slot and by 4-tuple.
#[derive(Default)]
pub struct Table {
    slots: Vec<Option<Conn>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    by_tuple: HashMap<FourTuple, u32>,
    by_id: HashMap<ConnId, u32>,
}

impl Table {
    pub fn len(&self) -> usize {
        self.by_tuple.len()
    }

    pub fn find(&self, tuple: &FourTuple) -> Option<u32> {
        self.by_tuple.get(tuple).copied()
    }

    /// A slot and generation for a new connection of `tuple`.
    pub fn reserve(&mut self) -> (u32, u32) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.generations.push(0);
            (self.slots.len() - 1) as u32
        });
        (slot, self.generations[slot as usize])
    }

    /// Puts a connection in its reserved slot (or back after [`take`](Self::take)).
    pub fn put(&mut self, slot: u32, conn: Conn) {
        self.by_tuple.insert(conn.tuple, slot);
        self.by_id.insert(conn.id, slot);
        self.slots[slot as usize] = Some(conn);
    }

    /// Lends a connection out of the table (so it can be worked on while the node's
    /// other parts are borrowed); [`put`](Self::put) it back, or [`free`](Self::free)
    /// the slot.
    pub fn take(&mut self, slot: u32) -> Option<Conn> {
        self.slots.get_mut(slot as usize)?.take()
    }

    /// The slot is empty for good: its tuple is forgotten, its generation moves on.
    pub fn free(&mut self, slot: u32, tuple: &FourTuple, id: ConnId) {
        if self.by_tuple.get(tuple) == Some(&slot) {
            self.by_tuple.remove(tuple);
        }
        if self.by_id.get(&id) == Some(&slot) {
            self.by_id.remove(&id);
        }
        self.generations[slot as usize] = self.generations[slot as usize].wrapping_add(1);
        self.free.push(slot);
    }

    pub fn get(&self, slot: u32) -> Option<&Conn> {
        self.slots.get(slot as usize)?.as_ref()
    }

    pub fn get_mut(&mut self, slot: u32) -> Option<&mut Conn> {
        self.slots.get_mut(slot as usize)?.as_mut()
    }

    pub fn generation(&self, slot: u32) -> u32 {
        self.generations
            .get(slot as usize)
            .copied()
            .unwrap_or(u32::MAX)
    }

    /// Every occupied slot.
    pub fn slots(&self) -> Vec<u32> {
        (0..self.slots.len() as u32)
            .filter(|&s| self.slots[s as usize].is_some())
            .collect()
    }

    /// The slot holding connection `id`.
    pub fn find_id(&self, id: ConnId) -> Option<u32> {
        self.by_id.get(&id).copied()
    }
}
