//! The TUN device, opened through tun-tap with IFF_NO_PI and made non-blocking.
//!
//! Unlike smoltcp's own `TunTapInterface`, this one allocates its packet buffer once, reads
//! the MTU when asked (`--mtu` may change it), and turns I/O errors into counters and a
//! [`DeviceError`] for the driver instead of panicking. It is not a smoltcp device: the
//! driver reads packets from it and hands them to the node.

use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use super::{DeviceCounters, DeviceError};

/// Why a TUN device could not be opened or configured, worded for the user.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    #[error(
        "cannot open /dev/net/tun for {name}: permission denied; run as root (sudo) or grant \
         the binary CAP_NET_ADMIN (sudo setcap cap_net_admin+ep $(which synack))"
    )]
    Permission { name: String },
    #[error("cannot open /dev/net/tun: it does not exist; load the tun module (sudo modprobe tun)")]
    NoTunDriver,
    #[error(
        "cannot attach to {name}: it is in use by another process or is not a TUN device \
         ({source}); stop the other synack or pick another --tun name"
    )]
    Busy { name: String, source: io::Error },
    #[error("cannot open TUN device {name}: {source}")]
    Open { name: String, source: io::Error },
    #[error("cannot configure {name}: {what}: {source}")]
    Configure {
        name: String,
        what: &'static str,
        source: io::Error,
    },
    #[error("TUN device name {0:?} is not valid: at most 15 bytes, no '/' or spaces")]
    BadName(String),
}

/// How the device came to be, for the log and for what we configure on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// It existed (for example `ip tuntap add dev tun0 mode tun`); its address is the
    /// kernel's business and we leave it alone.
    Attached,
    /// We created it: it lives as long as this process, and we bring it up ourselves.
    Created,
}

pub struct TunDevice {
    iface: tun_tap::Iface,
    origin: Origin,
    mtu: usize,
    counters: DeviceCounters,
    error: Option<DeviceError>,
}

impl TunDevice {
    /// Opens `name`, attaching to it if it exists and creating it if not.
    pub fn open(name: &str) -> Result<Self, TunError> {
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
            return Err(TunError::BadName(name.to_owned()));
        }
        if !Path::new("/dev/net/tun").exists() {
            return Err(TunError::NoTunDriver);
        }
        let existed = Path::new("/sys/class/net").join(name).exists();
        let iface =
            tun_tap::Iface::without_packet_info(name, tun_tap::Mode::Tun).map_err(|source| {
                match source.raw_os_error() {
                    Some(libc::EPERM | libc::EACCES) => TunError::Permission { name: name.into() },
                    Some(libc::EBUSY | libc::EINVAL) => TunError::Busy {
                        name: name.into(),
                        source,
                    },
                    _ => TunError::Open {
                        name: name.into(),
                        source,
                    },
                }
            })?;
        iface
            .set_non_blocking()
            .map_err(|source| TunError::Configure {
                name: name.into(),
                what: "set non-blocking",
                source,
            })?;
        let mtu = if_mtu(name).map_err(|source| TunError::Configure {
            name: name.into(),
            what: "read MTU",
            source,
        })?;
        Ok(TunDevice {
            iface,
            origin: if existed {
                Origin::Attached
            } else {
                Origin::Created
            },
            mtu,
            counters: DeviceCounters::default(),
            error: None,
        })
    }

    pub fn name(&self) -> &str {
        self.iface.name()
    }

    pub fn origin(&self) -> Origin {
        self.origin
    }

    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// Sets the device's MTU (both ends of a TUN share it: the kernel must not send us
    /// bigger packets than we expect, nor we it).
    pub fn set_mtu(&mut self, mtu: usize) -> Result<(), TunError> {
        set_if_mtu(self.name(), mtu).map_err(|source| TunError::Configure {
            name: self.name().into(),
            what: "set MTU",
            source,
        })?;
        self.mtu = mtu;
        Ok(())
    }

    /// The kernel side's IPv4 address and prefix length, if the device has one.
    pub fn kernel_side(&self) -> Option<(Ipv4Addr, u8)> {
        let addr = with_ifreq(self.name(), |fd, req| {
            ioctl(fd, libc::SIOCGIFADDR, req)?;
            Ok(sockaddr_v4(req))
        })
        .ok()?;
        let mask = with_ifreq(self.name(), |fd, req| {
            ioctl(fd, libc::SIOCGIFNETMASK, req)?;
            Ok(sockaddr_v4(req))
        })
        .ok()?;
        Some((addr, u32::from(mask).count_ones() as u8))
    }

    /// Gives the kernel side of a device we created an address and brings it up, so that
    /// `synack serve --tun tunX` works on its own. An existing device is left as it is.
    pub fn configure_kernel_side(&self, addr: Ipv4Addr, prefix: u8) -> Result<(), TunError> {
        let name = self.name();
        let err = |what| {
            move |source| TunError::Configure {
                name: name.into(),
                what,
                source,
            }
        };
        set_if_addr(name, addr, prefix).map_err(err("set kernel-side address"))?;
        set_if_up(name).map_err(err("bring the device up"))
    }

    fn record(&mut self, op: &'static str, error: io::Error) {
        if self.error.is_none() {
            self.error = Some(DeviceError { op, error });
        }
    }
}

impl TunDevice {
    /// Reads the next packet the kernel has written into the device into `buf`, if any
    /// (the device is non-blocking); returns its length. A failed read is counted and
    /// kept for [`take_error`](Self::take_error). `buf` should hold 65535 bytes.
    pub fn recv_into(&mut self, buf: &mut [u8]) -> Option<usize> {
        match raw_read(self.iface.as_raw_fd(), buf) {
            Ok(len) => {
                self.counters.rx_packets += 1;
                self.counters.rx_bytes += len as u64;
                Some(len)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(e) => {
                self.counters.rx_errors += 1;
                self.record("read from TUN", e);
                None
            }
        }
    }

    /// Hands a packet to the kernel. A full device queue drops it (TCP retransmits); any
    /// other failure is counted and kept for [`take_error`](Self::take_error).
    pub fn send(&mut self, packet: &[u8]) {
        match raw_write(self.iface.as_raw_fd(), packet) {
            Ok(_) => {
                self.counters.tx_packets += 1;
                self.counters.tx_bytes += packet.len() as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.counters.tx_errors += 1,
            Err(e) => {
                self.counters.tx_errors += 1;
                self.record("write to TUN", e);
            }
        }
    }

    /// The device's file descriptor, to wait on.
    pub fn fd(&self) -> i32 {
        self.iface.as_raw_fd()
    }

    /// The first I/O error met since the last call, if any.
    pub fn take_error(&mut self) -> Option<DeviceError> {
        self.error.take()
    }

    pub fn counters(&self) -> DeviceCounters {
        self.counters
    }
}

/// read(2) as a bare system call. Once the process has a second thread (the capture
/// writer), glibc wraps each read and write as a thread-cancellation point, which cost 4 %
/// of the stack's time on a download; synack never cancels threads, so it skips the wrapper.
fn raw_read(fd: i32, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of buf.len() bytes for the duration of the call.
    let n = unsafe { libc::syscall(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// write(2) as a bare system call; see [`raw_read`].
fn raw_write(fd: i32, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for reads of buf.len() bytes for the duration of the call.
    let n = unsafe { libc::syscall(libc::SYS_write, fd, buf.as_ptr(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Sleeps in poll(2) until one of `fds` is readable or the timeout passes. The stop
/// signals write to a pipe among `fds` (see `driver::Stop`), so a SIGTERM that lands
/// just before the sleep still ends it.
pub fn poll_readable(fds: &[i32], timeout: Option<Duration>) -> io::Result<()> {
    let mut pfds = [libc::pollfd {
        fd: -1,
        events: libc::POLLIN,
        revents: 0,
    }; 4];
    for (p, fd) in pfds.iter_mut().zip(fds) {
        p.fd = *fd;
    }
    let n = fds.len().min(pfds.len());
    let ms = match timeout {
        None => -1,
        // Round up: waking a little late is fine, spinning on a 0 ms timeout is not.
        Some(t) => t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
    };
    // SAFETY: pfds holds n valid pollfds for the duration of the call.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), n as libc::nfds_t, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// An ifreq-based ioctl on a throwaway UDP socket, as `ip` does.
fn with_ifreq<T>(
    name: &str,
    f: impl FnOnce(i32, &mut libc::ifreq) -> io::Result<T>,
) -> io::Result<T> {
    let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: plain socket(2); the fd is closed below on every path.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(cname.as_bytes_with_nul()) {
        *dst = *src as libc::c_char;
    }
    let result = f(fd, &mut req);
    // SAFETY: fd came from socket(2) above.
    unsafe { libc::close(fd) };
    result
}

fn ioctl(fd: i32, request: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: every request used here takes a pointer to an ifreq.
    if unsafe { libc::ioctl(fd, request, req as *mut libc::ifreq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn if_mtu(name: &str) -> io::Result<usize> {
    with_ifreq(name, |fd, req| {
        ioctl(fd, libc::SIOCGIFMTU, req)?;
        // SAFETY: SIOCGIFMTU filled the ifru_mtu member.
        Ok(unsafe { req.ifr_ifru.ifru_mtu } as usize)
    })
}

fn set_if_mtu(name: &str, mtu: usize) -> io::Result<()> {
    with_ifreq(name, |fd, req| {
        req.ifr_ifru.ifru_mtu = mtu as libc::c_int;
        ioctl(fd, libc::SIOCSIFMTU, req)
    })
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; this is how the C API is used.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// The IPv4 address an SIOCGIF* ioctl left in the request.
fn sockaddr_v4(req: &libc::ifreq) -> Ipv4Addr {
    // SAFETY: the address ioctls fill ifru_addr with a sockaddr_in for AF_INET.
    let sin: libc::sockaddr_in =
        unsafe { std::mem::transmute::<libc::sockaddr, libc::sockaddr_in>(req.ifr_ifru.ifru_addr) };
    Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))
}

fn set_if_addr(name: &str, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    with_ifreq(name, |fd, req| {
        req.ifr_ifru.ifru_addr = sockaddr_in(addr);
        ioctl(fd, libc::SIOCSIFADDR, req)?;
        req.ifr_ifru.ifru_netmask = sockaddr_in(Ipv4Addr::from(mask));
        ioctl(fd, libc::SIOCSIFNETMASK, req)
    })
}

fn set_if_up(name: &str) -> io::Result<()> {
    with_ifreq(name, |fd, req| {
        ioctl(fd, libc::SIOCGIFFLAGS, req)?;
        // SAFETY: SIOCGIFFLAGS filled ifru_flags.
        unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
        ioctl(fd, libc::SIOCSIFFLAGS, req)
    })
}
