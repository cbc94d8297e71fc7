//! A node on a TUN device, on real time: `synack serve` and `synack fetch`.
//!
//! Each turn reads what the device has (one packet at a time, each handled whole before
//! the next: its connection's ACK or response goes out at once), runs the link's and the
//! node's timers, then sleeps in poll(2) until a packet, a deadline or a stop signal.

use std::time::Duration;

use smoltcp::time::Instant;

use super::{Edge, Stop};
use crate::device::{DeviceError, TunDevice};
use crate::link::Link;
use crate::observe::Direction;

/// Inbound packets handled per turn before timers run: a flood must not starve them.
const INGRESS_BUDGET: usize = 256;

/// The largest IPv4 packet: a read buffer this big never truncates one.
const MAX_PACKET: usize = 65_535;

/// Why the driver stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(
        "the TUN device is gone ({0}); was it deleted? recreate it (netns-scripts/up.sh) and start again"
    )]
    DeviceGone(String),
    #[error("waiting on the device failed: {0}")]
    Wait(std::io::Error),
}

pub struct TunDriver {
    pub tun: TunDevice,
    pub link: Link,
    pub edge: Edge,
    stop: Stop,
    rx: Box<[u8]>,
    last_error_log: Option<Instant>,
    pub device_errors: u64,
    /// The most connections the node held since memory was last given back.
    peak: usize,
}

/// Connections that must have gone since the last trim before the heap is trimmed: a
/// load ended.
const TRIM_AFTER: usize = 1000;

impl TunDriver {
    pub fn new(tun: TunDevice, link: Link, edge: Edge, stop: Stop) -> Self {
        TunDriver {
            tun,
            link,
            edge,
            stop,
            rx: vec![0; MAX_PACKET].into_boxed_slice(),
            last_error_log: None,
            device_errors: 0,
            peak: 0,
        }
    }

    pub fn stopped(&self) -> bool {
        self.stop.requested()
    }

    /// Runs until SIGINT or SIGTERM, or the device goes away.
    pub fn run(&mut self) -> Result<(), DriverError> {
        while !self.stopped() {
            self.turn(None)?;
        }
        Ok(())
    }

    /// Lets the application act on the node (open a connection, look a name up); what
    /// that sends goes out at once.
    pub fn with_node<R>(&mut self, f: impl FnOnce(&mut crate::node::Node, Instant) -> R) -> R {
        let now = crate::clock::now();
        let r = f(&mut self.edge.node, now);
        self.send_all(now);
        r
    }

    /// One turn: sleep (at most `at_most`) until a packet, a deadline or a stop signal,
    /// then take what the device has and what is due. Sleeping first means that what a
    /// turn changed is seen by the caller before the next sleep: a fetch whose last ACK
    /// just arrived ends now, not a poll timeout later.
    pub fn turn(&mut self, at_most: Option<Duration>) -> Result<(), DriverError> {
        if self.stopped() {
            return Ok(());
        }
        let next = [self.edge.next_deadline(), self.link.next_due()]
            .into_iter()
            .flatten()
            .min()
            .map(|t| {
                let now = crate::clock::now();
                Duration::from_micros(if t > now { (t - now).total_micros() } else { 0 })
            });
        let wait = match (next, at_most) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        crate::device::tun::poll_readable(&[self.tun.fd(), self.stop.fd()], wait)
            .map_err(DriverError::Wait)?;
        let mut now;
        for _ in 0..INGRESS_BUDGET {
            let Some(len) = self.tun.recv_into(&mut self.rx) else {
                break;
            };
            now = crate::clock::now();
            if self.link.is_transparent() {
                self.edge.deliver(now, &self.rx[..len], None);
                self.send_all(now);
            } else {
                let _ = self.link.enter(Direction::In, now, &self.rx[..len]);
                self.arrivals(now);
            }
        }
        now = crate::clock::now();
        self.arrivals(now);
        self.edge.timers(now);
        self.send_all(now);
        self.check_device(now)?;
        self.edge.idle(now);
        self.give_back_memory();
        Ok(())
    }

    /// Packets the link lets through by `now`, either way.
    fn arrivals(&mut self, now: Instant) {
        while let Some(a) = self.link.take_due(Direction::In, now) {
            self.edge.deliver(now, &a.data, a.remark.as_deref());
            self.link.recycle(a);
            self.send_all(now);
        }
        while let Some(a) = self.link.take_due(Direction::Out, now) {
            self.tun.send(&a.data);
            self.link.recycle(a);
        }
    }

    /// Everything the node has to send, recorded, through the link (or straight to the
    /// device when the link does nothing).
    fn send_all(&mut self, now: Instant) {
        if self.link.is_transparent() {
            let tun = &mut self.tun;
            self.edge.drain_direct(now, |p| tun.send(p));
        } else {
            self.edge.drain(now, &mut self.link, Direction::Out);
            while let Some(a) = self.link.take_due(Direction::Out, now) {
                self.tun.send(&a.data);
                self.link.recycle(a);
            }
        }
    }

    /// Once a load has ended (a thousand connections and more gone since the peak), the
    /// heap's free pages go back to the kernel. Socket buffers go back on their own when
    /// each connection closes; what glibc's allocator keeps of the rest (sockets,
    /// sessions, journeys) only `malloc_trim` returns, so that RSS falls after a load.
    fn give_back_memory(&mut self) {
        let (conns, time_wait) = self.edge.node.connections();
        let held = conns + time_wait;
        if held > self.peak {
            self.peak = held;
        } else if self.peak - held >= TRIM_AFTER {
            self.peak = held;
            // SAFETY: malloc_trim only releases free memory of the allocator's arenas.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }

    fn check_device(&mut self, now: Instant) -> Result<(), DriverError> {
        let Some(e) = self.tun.take_error() else {
            return Ok(());
        };
        self.device_errors += 1;
        if e.is_fatal() {
            return Err(DriverError::DeviceGone(e.to_string()));
        }
        self.log_device_error(now, &e);
        Ok(())
    }

    /// A device that is down fails every write; say so once a second, not per packet.
    fn log_device_error(&mut self, now: Instant, e: &DeviceError) {
        if self
            .last_error_log
            .is_none_or(|t| now - t >= smoltcp::time::Duration::from_secs(1))
        {
            log::warn!(
                "{e} (is the device down? `ip link set <dev> up` brings it back); packets are dropped meanwhile"
            );
            self.last_error_log = Some(now);
        }
    }

    /// Stops: reads what the device still holds (replies in flight), resets what is open,
    /// and finishes the capture.
    pub fn shutdown(&mut self) -> Option<std::io::Result<(std::path::PathBuf, u64)>> {
        let now = crate::clock::now();
        for _ in 0..INGRESS_BUDGET {
            let Some(len) = self.tun.recv_into(&mut self.rx) else {
                break;
            };
            self.edge.deliver(now, &self.rx[..len], None);
            self.send_all(now);
        }
        let tun = &mut self.tun;
        self.edge.shutdown(now, |p| tun.send(p))
    }
}
