//! The accept gate: a device middleware that drops new SYNs while the accept queue is full.
//!
//! smoltcp answers a SYN that no socket takes with a RST, which tells the client "nothing
//! listens here". Linux, by default (`tcp_abort_on_overflow = 0`), drops a SYN that finds
//! the accept queue full instead, so the client retransmits it and gets in once there is
//! room. The gate does that: while armed it reads each inbound segment (only then; an
//! unarmed gate costs nothing) and drops SYNs for the listening port from peers that have
//! no socket yet. The tap sits outside the gate, so the dropped SYN is still captured.

use std::net::SocketAddrV4;

use smoltcp::phy::{self, Device, DeviceCapabilities};
use smoltcp::time::Instant;

use crate::device::{DeviceCounters, DeviceError, Link};
use crate::observe::{Direction, FourTuple, Segment};

struct Rule {
    port: u16,
    /// Peers that already hold a socket: their SYN retransmissions must get through.
    admitted: Vec<SocketAddrV4>,
}

pub struct Gate<D> {
    inner: D,
    /// One rule per listening port whose accept queue is full.
    rules: Vec<Rule>,
    /// The packet read while armed, handed to smoltcp from here.
    held: Vec<u8>,
    dropped: Vec<FourTuple>,
}

impl<D> Gate<D> {
    pub fn new(inner: D) -> Self {
        Gate {
            inner,
            rules: Vec::new(),
            held: Vec::new(),
            dropped: Vec::new(),
        }
    }

    pub fn inner(&self) -> &D {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    /// Drops new SYNs to `port` from anyone not in `admitted`.
    pub fn arm(&mut self, port: u16, admitted: impl Iterator<Item = SocketAddrV4>) {
        let idx = match self.rules.iter().position(|r| r.port == port) {
            Some(i) => i,
            None => {
                self.rules.push(Rule {
                    port,
                    admitted: Vec::new(),
                });
                self.rules.len() - 1
            }
        };
        let rule = &mut self.rules[idx];
        rule.admitted.clear();
        rule.admitted.extend(admitted);
    }

    /// Lets every SYN to `port` through again.
    pub fn disarm(&mut self, port: u16) {
        self.rules.retain(|r| r.port != port);
    }

    /// The connections whose SYNs were dropped since the last call.
    pub fn take_dropped(&mut self, out: &mut Vec<FourTuple>) {
        out.clear();
        std::mem::swap(out, &mut self.dropped);
    }

    pub fn has_dropped(&self) -> bool {
        !self.dropped.is_empty()
    }
}

impl<D: Device> Device for Gate<D> {
    type RxToken<'a>
        = GateRx<'a, D::RxToken<'a>>
    where
        Self: 'a;
    type TxToken<'a>
        = D::TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if self.rules.is_empty() {
            let (rx, tx) = self.inner.receive(timestamp)?;
            return Some((GateRx::Pass(rx), tx));
        }
        let rules = &self.rules;
        let (rx, tx) = self.inner.receive(timestamp)?;
        let held = &mut self.held;
        // The connection of a SYN to drop, if this packet is one.
        let dropped = phy::RxToken::consume(rx, |packet| {
            held.clear();
            held.extend_from_slice(packet);
            let s = Segment::parse(packet)?;
            let rule = rules.iter().find(|r| r.port == s.dst.port())?;
            let new_syn = s.syn && !s.ack_flag;
            (new_syn && !rule.admitted.contains(&s.src)).then(|| s.tuple(Direction::In))
        });
        if let Some(tuple) = dropped {
            self.dropped.push(tuple);
            // Returning no packet ends this ingress round; the stack sees the drop and
            // asks again.
            return None;
        }
        Some((GateRx::Held(&self.held), tx))
    }

    fn transmit(&mut self, timestamp: Instant) -> Option<Self::TxToken<'_>> {
        self.inner.transmit(timestamp)
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.inner.capabilities()
    }
}

impl<D: Link> Link for Gate<D> {
    fn wait(&mut self, timeout: Option<std::time::Duration>) -> std::io::Result<()> {
        self.inner.wait(timeout)
    }
    fn take_error(&mut self) -> Option<DeviceError> {
        self.inner.take_error()
    }
    fn counters(&self) -> DeviceCounters {
        self.inner.counters()
    }
}

pub enum GateRx<'a, T> {
    Pass(T),
    Held(&'a [u8]),
}

impl<T: phy::RxToken> phy::RxToken for GateRx<'_, T> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        match self {
            GateRx::Pass(t) => t.consume(f),
            GateRx::Held(packet) => f(packet),
        }
    }
}
