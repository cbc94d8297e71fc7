//! Packets in and out, nothing else.
//!
//! Every device here is a smoltcp [`Device`](smoltcp::phy::Device) plus [`Link`], the little
//! the event loop needs besides: a way to sleep until a packet may be waiting, and the I/O
//! errors the device met (a device never panics on I/O; it records and the loop decides).

use std::io;
use std::time::Duration;

pub mod memory;
pub mod tun;

pub use tun::TunDevice;

/// What the event loop needs from a device besides smoltcp's token interface.
pub trait Link: smoltcp::phy::Device {
    /// Sleeps until the device may have a packet to read, or `timeout` passes
    /// (`None`: no deadline). Returns early when a signal arrives.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()>;

    /// The first I/O error met since the last call, if any. Reads and writes that fail are
    /// dropped (and counted); this is how the loop learns about them.
    fn take_error(&mut self) -> Option<DeviceError>;

    /// Counters of what crossed the device.
    fn counters(&self) -> DeviceCounters;
}

/// What went wrong on a device, and whether the run can go on.
#[derive(Debug)]
pub struct DeviceError {
    pub op: &'static str,
    pub error: io::Error,
}

impl DeviceError {
    /// A device that is gone (deleted, detached) will not come back: the run must end.
    /// A device that is down (EIO on write) may be brought up again: the run goes on.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self.error.raw_os_error(),
            Some(libc::EBADFD | libc::EBADF | libc::ENODEV | libc::ENXIO | libc::EFAULT)
        )
    }
}

impl std::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed: {}", self.op, self.error)
    }
}

/// Packets and bytes that crossed a device, and the ones it had to drop.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DeviceCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
}
