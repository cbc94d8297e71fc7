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
    /// Packets discarded instead of queued (see [`OnePacket::discarding`]).
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

/// The device for one poll.
pub struct OnePacket<'a> {
    rx: Option<&'a [u8]>,
    out: &'a mut Output,
    mtu: usize,
}

impl<'a> OnePacket<'a> {
    /// A device that hands smoltcp `packet` once, then nothing.
    pub fn with(packet: &'a [u8], out: &'a mut Output, mtu: usize) -> Self {
        OnePacket {
            rx: Some(packet),
            out,
            mtu,
        }
    }

    /// A device with nothing to read: for egress and timers.
    pub fn empty(out: &'a mut Output, mtu: usize) -> Self {
        OnePacket { rx: None, out, mtu }
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
        Some((Rx(packet), Tx(self.out)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Self::TxToken<'_>> {
        Some(Tx(self.out))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

pub struct Rx<'a>(&'a [u8]);

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

pub struct Tx<'a>(&'a mut Output);

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        f(&mut self.0.push(len).data)
    }
}

/// A device whose sends go nowhere: for the SYN-ACK of a handshake the node rebuilds from
/// a SYN cookie (the peer has had it already).
pub struct Discard<'a> {
    rx: Option<&'a [u8]>,
    buf: &'a mut Vec<u8>,
    mtu: usize,
}

impl<'a> Discard<'a> {
    pub fn with(packet: &'a [u8], out: &'a mut Output, mtu: usize) -> Self {
        Discard {
            rx: Some(packet),
            buf: &mut out.discard,
            mtu,
        }
    }

    pub fn empty(out: &'a mut Output, mtu: usize) -> Self {
        Discard {
            rx: None,
            buf: &mut out.discard,
            mtu,
        }
    }
}

impl Device for Discard<'_> {
    type RxToken<'b>
        = Rx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = DiscardTx<'b>
    where
        Self: 'b;

    fn receive(&mut self, _now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let packet = self.rx.take()?;
        Some((Rx(packet), DiscardTx(self.buf)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Self::TxToken<'_>> {
        Some(DiscardTx(self.buf))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

pub struct DiscardTx<'a>(&'a mut Vec<u8>);

impl phy::TxToken for DiscardTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        self.0.clear();
        self.0.resize(len, 0);
        f(self.0)
    }
}
