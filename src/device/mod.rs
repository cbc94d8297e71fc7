//! Packets in and out, nothing else: the TUN device. A device never panics on I/O; it
//! records the error and the driver decides.

use std::io;

pub mod tun;

pub use tun::TunDevice;

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
