//! What a TCP stack under test must offer the runner.
//!
//! The runner owns the script and its time line; a backend owns the stack and its clock.
//! The runner asks the backend to let time pass up to a deadline (a real backend waits, a
//! virtual one jumps and runs its timers), to inject packets, to start socket calls (which
//! may not finish at once), and it collects what the stack sent and which calls finished,
//! each with the time it happened. Both Linux (a kernel behind a TUN device, real time)
//! and an in-process stack on a virtual clock fit this shape.
//!
//! What a backend on a virtual clock (the smoltcp one) has to do:
//! - `now` is its clock; `wait(deadline)` runs the stack's timers that fall due up to
//!   `deadline` in order and returns at the first one that makes the stack send a packet
//!   or finishes a blocked call, with the clock at that timer; with nothing due it jumps
//!   to `deadline`. It must move the clock or have something to hand over.
//! - `inject` processes the packet at `now` and queues what the stack sends in answer,
//!   stamped `now`, for `take_emitted`; it also retries blocked calls.
//! - `start_call` answers at once when it can (`Started::Done`); a call that would block
//!   (accept with nothing queued, read with nothing to read, connect before the
//!   handshake, close with SO_LINGER ...) is `Started::Blocked` and finishes later from
//!   `take_finished`, stamped with the virtual time it completed. A non-blocking socket
//!   (`O_NONBLOCK`) answers `EAGAIN`/`EINPROGRESS` instead.
//! - Results use Linux's numbers: the descriptor a `socket` or `accept` made (any
//!   non-negative number: the runner maps the script's), 0, byte counts, or -1 and an
//!   errno. A call or option the stack has no counterpart for is
//!   `BackendError::Unsupported` naming it.
//! - `epoch` is a fixed time, so that the same script gives the same capture, byte for
//!   byte; every choice the stack makes (initial sequence numbers, ports) comes from a
//!   fixed seed.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// A socket of the stack under test, as the backend names it (Linux: the file
/// descriptor). The runner maps the script's descriptors onto these.
pub type SocketId = i32;

/// A call started with [`Backend::start_call`] that did not finish at once.
pub type CallId = u64;

/// A socket call with its arguments resolved to numbers, as Linux defines them (the
/// script's language is Linux's: `SOCK_STREAM`, `SOL_SOCKET`, `EAGAIN` ... are Linux's
/// values, whatever the stack).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Socket {
        domain: i32,
        ty: i32,
        protocol: i32,
    },
    Bind {
        fd: SocketId,
        addr: SocketAddrV4,
    },
    Listen {
        fd: SocketId,
        backlog: i32,
    },
    Accept {
        fd: SocketId,
    },
    Connect {
        fd: SocketId,
        addr: SocketAddrV4,
    },
    /// `read` and `recv` (flags 0 for read).
    Recv {
        fd: SocketId,
        len: usize,
        flags: i32,
    },
    /// `write` and `send` (flags 0 for write): `len` zero bytes, as packetdrill writes.
    Send {
        fd: SocketId,
        len: usize,
        flags: i32,
    },
    Shutdown {
        fd: SocketId,
        how: i32,
    },
    Close {
        fd: SocketId,
    },
    /// `fcntl(fd, F_GETFL)` (arg `None`) or `fcntl(fd, F_SETFL, flags)`.
    Fcntl {
        fd: SocketId,
        cmd: i32,
        arg: Option<i64>,
    },
    SetSockOpt {
        fd: SocketId,
        level: i32,
        name: i32,
        value: OptValue,
    },
    /// Reads an integer option (SO_ERROR and the like).
    GetSockOpt {
        fd: SocketId,
        level: i32,
        name: i32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptValue {
    Int(i32),
    Linger { onoff: i32, linger: i32 },
}

/// What a call returned: the return value and, when it is -1, the errno (Linux numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallResult {
    pub ret: i64,
    pub errno: i32,
    /// `getsockopt`'s value.
    pub value: Option<i64>,
}

impl CallResult {
    pub fn ok(ret: i64) -> Self {
        CallResult {
            ret,
            errno: 0,
            value: None,
        }
    }

    pub fn err(errno: i32) -> Self {
        CallResult {
            ret: -1,
            errno,
            value: None,
        }
    }
}

/// What [`Backend::start_call`] gives back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// The call finished at once.
    Done(CallResult),
    /// The call blocks; it will come back from [`Backend::take_finished`].
    Blocked(CallId),
}

/// A packet the stack sent, with the time it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    pub at: Duration,
    /// The IPv4 packet (a TSO super-segment is one packet).
    pub bytes: Vec<u8>,
    /// What the stack says about it (synack's node explains its packets; the kernel
    /// says nothing): added to the packet's comment in the capture.
    pub note: String,
}

/// A blocking call that finished, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub id: CallId,
    pub at: Duration,
    pub result: CallResult,
}

/// Why a backend could not do what the runner asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// The backend cannot be used here (no root, no TUN device, not built yet ...):
    /// one sentence saying what to do.
    Unavailable(String),
    /// Something the backend does not do (a call, an option, a shell line).
    Unsupported(String),
    /// The backend broke while running (an I/O error on its device ...).
    Failed(String),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Unavailable(s)
            | BackendError::Unsupported(s)
            | BackendError::Failed(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for BackendError {}

/// A TCP stack under test.
///
/// Times are durations since the backend was made (the start of the run). The runner
/// calls these from one thread, in the script's order.
pub trait Backend {
    /// `linux`, `smoltcp`, ...: what reports and `// synack-expect-fail` directives call it.
    fn name(&self) -> &str;

    /// The stack under test's address (packetdrill's local address, 192.168.0.1).
    fn local_addr(&self) -> Ipv4Addr;

    /// The address the script's packets come from (packetdrill's remote, 192.0.2.1).
    fn remote_addr(&self) -> Ipv4Addr;

    /// Time since the Unix epoch at the start of the run, for the capture's timestamps
    /// (a virtual clock gives a fixed one, so that captures are the same byte for byte).
    fn epoch(&self) -> Duration;

    /// The time now.
    fn now(&self) -> Duration;

    /// Lets time pass until `deadline`, or less if the stack sends a packet or a blocked
    /// call finishes first. A virtual clock jumps; a real one waits.
    fn wait(&mut self, deadline: Duration) -> Result<(), BackendError>;

    /// Hands an IPv4 packet to the stack now, as if it came off the wire.
    fn inject(&mut self, packet: &[u8]) -> Result<(), BackendError>;

    /// The oldest packet the stack sent that the runner has not taken yet.
    fn take_emitted(&mut self) -> Option<Emitted>;

    /// Starts a socket call now.
    fn start_call(&mut self, call: &Call) -> Result<Started, BackendError>;

    /// A blocked call that has finished since last asked.
    fn take_finished(&mut self) -> Option<Finished>;

    /// What the stack said about the packet [`inject`](Self::inject) last handed it
    /// (empty: nothing), for the capture's comment.
    fn inbound_note(&self) -> &str {
        ""
    }

    /// Sets a `net.ipv4.*` style setting for the stack (what a script's shell lines ask
    /// with sysctl); backends without such settings say [`BackendError::Unsupported`].
    fn set_sysctl(&mut self, key: &str, value: &str) -> Result<(), BackendError> {
        Err(BackendError::Unsupported(format!(
            "{} has no setting {key} (asked for {value})",
            self.name()
        )))
    }
}
