//! An in-memory link: two ports joined by a pair of queues, for the simulation that runs
//! a client stack and a server stack in one process (`synack demo`). What one port sends
//! the other receives, in order; faults, if any, come from the middleware above.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use super::{DeviceCounters, DeviceError, Link};

/// Packets in flight one way before the link drops more, as a full device queue would.
const QUEUE: usize = 1024;

#[derive(Default)]
struct Wire {
    /// `queues[i]`: packets on their way to port `i`.
    queues: [VecDeque<Vec<u8>>; 2],
    /// Buffers of delivered packets, for reuse.
    spare: Vec<Vec<u8>>,
}

/// One end of the link.
pub struct MemoryPort {
    wire: Rc<RefCell<Wire>>,
    side: usize,
    mtu: usize,
    counters: DeviceCounters,
}

/// Two ports joined to each other, with room for `mtu`-byte packets.
pub fn pair(mtu: usize) -> (MemoryPort, MemoryPort) {
    let wire = Rc::new(RefCell::new(Wire::default()));
    let port = |side| MemoryPort {
        wire: Rc::clone(&wire),
        side,
        mtu,
        counters: DeviceCounters::default(),
    };
    (port(0), port(1))
}

/// A view of the link that stays with the simulation after the ports go into stacks.
pub struct Watch(Rc<RefCell<Wire>>);

impl Watch {
    /// Whether any packet is on the link, either way.
    pub fn busy(&self) -> bool {
        self.0.borrow().queues.iter().any(|q| !q.is_empty())
    }
}

impl MemoryPort {
    pub fn watch(&self) -> Watch {
        Watch(Rc::clone(&self.wire))
    }
}

impl Device for MemoryPort {
    type RxToken<'a> = MemoryRx<'a>;
    type TxToken<'a> = MemoryTx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let packet = self.wire.borrow_mut().queues[self.side].pop_front()?;
        self.counters.rx_packets += 1;
        self.counters.rx_bytes += packet.len() as u64;
        let wire = &self.wire;
        Some((
            MemoryRx { wire, packet },
            MemoryTx {
                wire,
                to: 1 - self.side,
                counters: &mut self.counters,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Self::TxToken<'_>> {
        Some(MemoryTx {
            wire: &self.wire,
            to: 1 - self.side,
            counters: &mut self.counters,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

impl Link for MemoryPort {
    /// The simulation never sleeps: its clock jumps to the next deadline instead.
    fn wait(&mut self, _timeout: Option<std::time::Duration>) -> io::Result<()> {
        Ok(())
    }
    fn take_error(&mut self) -> Option<DeviceError> {
        None
    }
    fn counters(&self) -> DeviceCounters {
        self.counters
    }
}

pub struct MemoryRx<'a> {
    wire: &'a RefCell<Wire>,
    packet: Vec<u8>,
}

impl phy::RxToken for MemoryRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let result = f(&self.packet);
        self.wire.borrow_mut().spare.push(self.packet);
        result
    }
}

pub struct MemoryTx<'a> {
    wire: &'a RefCell<Wire>,
    to: usize,
    counters: &'a mut DeviceCounters,
}

impl phy::TxToken for MemoryTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = self.wire.borrow_mut().spare.pop().unwrap_or_default();
        packet.clear();
        packet.resize(len, 0);
        let result = f(&mut packet);
        let mut wire = self.wire.borrow_mut();
        if wire.queues[self.to].len() < QUEUE {
            self.counters.tx_packets += 1;
            self.counters.tx_bytes += len as u64;
            wire.queues[self.to].push_back(packet);
        } else {
            self.counters.tx_errors += 1;
            wire.spare.push(packet);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::{RxToken, TxToken};

    #[test]
    fn what_one_side_sends_the_other_receives_in_order() {
        let (mut a, mut b) = pair(1500);
        for n in 1..=3u8 {
            a.transmit(Instant::ZERO)
                .unwrap()
                .consume(usize::from(n), |buf| buf.fill(n));
        }
        assert!(b.watch().busy());
        for n in 1..=3u8 {
            let (rx, _) = b.receive(Instant::ZERO).unwrap();
            rx.consume(|p| assert_eq!(p, vec![n; usize::from(n)].as_slice()));
        }
        assert!(b.receive(Instant::ZERO).is_none());
        assert!(a.receive(Instant::ZERO).is_none(), "nothing came back");
        assert_eq!((a.counters().tx_packets, b.counters().rx_packets), (3, 3));
    }
}
