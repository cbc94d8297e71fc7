//! What smoltcp sees as its device during one poll of one socket set: the one packet the
//! node is handling (if any), and the node's output queue for whatever smoltcp sends.
//!
//! This is how the node polls one connection at a time with smoltcp's public API
//! (`poll_ingress_single` / `poll_egress` on a one-socket set): smoltcp never reads the
//! wire itself, so it never sees a packet that is not for the set it is given.

use std::collections::VecDeque;

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// A packet the node has sent, waiting for the driver; the buffers are reused.
#[derive(Debug, Default)]
pub struct Outgoing {
    /// Which packet this is: the capture's notes and the journey name it by this.
    pub serial: u64,
    pub data: Vec<u8>,
    /// What the node says about it (empty: nothing); the capture's comment.
    pub note: String,
}

/// The node's packets to send, in order, and the serial numbers of every packet.
#[derive(Debug, Default)]
pub struct Output {
    queue: VecDeque<Outgoing>,
    spare: Vec<Outgoing>,
    next_serial: u64,
    /// Where discarded packets are written (see [`OnePacket::discarding`]).
    discard: Vec<u8>,
}

/// Buffers kept for reuse at most: a burst of a full send window is about this many
/// segments, and more than that would only hold memory.
const MAX_SPARE: usize = 1024;

impl Output {
    /// A serial number for a packet (inbound ones get theirs from here too, so the two
    /// directions never share one).
    pub fn serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial
    }

    /// A packet buffer of `len` bytes at the back of the queue.
    fn push(&mut self, len: usize) -> &mut Outgoing {
        let serial = self.serial();
        let mut out = self.spare.pop().unwrap_or_default();
        out.serial = serial;
        out.data.clear();
        out.data.resize(len, 0);
        out.note.clear();
        self.queue.push_back(out);
        self.queue.back_mut().expect("just pushed")
    }

    /// Queues a packet the node built itself; returns it, to note what it is.
    pub fn push_built(&mut self, build: impl FnOnce(&mut Vec<u8>)) -> &mut Outgoing {
        let out = self.push(0);
        build(&mut out.data);
        out
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut Outgoing> {
        self.queue.get_mut(i)
    }

    pub fn pop(&mut self) -> Option<Outgoing> {
        self.queue.pop_front()
    }

    /// Takes a sent packet's buffers back.
    pub fn recycle(&mut self, out: Outgoing) {
        if self.spare.len() < MAX_SPARE {
            self.spare.push(out);
        }
    }
}

/// Where the packets smoltcp sends during one poll go.
enum Sink<'a> {
    /// The node's output queue.
    Queue(&'a mut Output),
    /// Nowhere (one scratch buffer): the SYN-ACK of a handshake rebuilt from a SYN
    /// cookie, which the peer has had already.
    Discard(&'a mut Vec<u8>),
}

/// The device for one poll.
pub struct OnePacket<'a> {
    rx: Option<&'a [u8]>,
    sink: Sink<'a>,
    mtu: usize,
}

impl<'a> OnePacket<'a> {
    /// A device that hands smoltcp `packet` once, then nothing.
    pub fn with(packet: &'a [u8], out: &'a mut Output, mtu: usize) -> Self {
        OnePacket {
            rx: Some(packet),
            sink: Sink::Queue(out),
            mtu,
        }
    }

    /// A device with nothing to read: for egress and timers.
    pub fn empty(out: &'a mut Output, mtu: usize) -> Self {
        OnePacket {
            rx: None,
            sink: Sink::Queue(out),
            mtu,
        }
    }

    /// A device whose sends go nowhere (see [`Sink::Discard`]).
    pub fn discarding(packet: Option<&'a [u8]>, out: &'a mut Output, mtu: usize) -> Self {
        OnePacket {
            rx: packet,
            sink: Sink::Discard(&mut out.discard),
            mtu,
        }
    }

    fn tx(&mut self) -> Tx<'_> {
        match &mut self.sink {
            Sink::Queue(out) => Tx::Queue(out),
            Sink::Discard(buf) => Tx::Discard(buf),
        }
    }
}

impl Device for OnePacket<'_> {
    type RxToken<'b>
        = Rx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = Tx<'b>
    where
        Self: 'b;

    fn receive(&mut self, _now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let packet = self.rx.take()?;
        Some((Rx(packet), self.tx()))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Self::TxToken<'_>> {
        Some(self.tx())
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        // The node verifies IPv4 and TCP checksums before anything acts on a packet (see
        // `wire::ipv4_admit`, `Node::tcp_in`), to count and say what it drops; smoltcp
        // computes them on the way out only. UDP and ICMP it still checks.
        caps.checksum.ipv4 = smoltcp::phy::Checksum::Tx;
        caps.checksum.tcp = smoltcp::phy::Checksum::Tx;
        caps
    }
}

pub struct Rx<'a>(&'a [u8]);

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

pub enum Tx<'a> {
    Queue(&'a mut Output),
    Discard(&'a mut Vec<u8>),
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        match self {
            Tx::Queue(out) => f(&mut out.push(len).data),
            Tx::Discard(buf) => {
                buf.clear();
                buf.resize(len, 0);
                f(buf)
            }
        }
    }
}
