//! synack's own stack as the stack under test: the sans-IO node (smoltcp behind it, and
//! what the node adds in front: listen queues, TIME-WAIT, RFC 5961) run in process, on a
//! virtual clock, with no root, no device and no namespace.
//!
//! - The clock starts at [`VIRTUAL_EPOCH`] and moves only when the runner lets time
//!   pass: [`wait`](Backend::wait) runs the node's timers in order up to the deadline and
//!   stops at the first one that sends a packet or finishes a blocked call.
//! - The node is as `synack serve` makes it, but for what a script's stack needs: no
//!   HTTP listener, no DNS responder, a fixed seed ([`SEED`]) for its initial sequence
//!   numbers and ports. Its address, buffers and TCP knobs are its defaults (Nagle off,
//!   a 10 ms delayed ACK, a 64 KiB receive buffer ...): a script sees them as they are.
//!   The script's packets come from the node's gateway address.
//! - The calls map onto the node's application sockets (`node::sockets`): a
//!   descriptor is a listening port or a connection; blocking calls wait in virtual time
//!   and finish from [`take_finished`](Backend::take_finished); `O_NONBLOCK` answers
//!   `EAGAIN` / `EINPROGRESS` instead. Errnos are Linux's, as a program on Linux would
//!   see them. A call, flag or option with no counterpart in the node is
//!   [`BackendError::Unsupported`], named.
//! - Each packet the node sends carries its words (the node's notes), and so does each
//!   packet injected: the capture's comments hold both the script's view and the node's.

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use smoltcp::socket::tcp::State;
use smoltcp::time::Instant;

use super::backend::*;
use super::symbols;
use crate::app::App;
use crate::clock::VIRTUAL_EPOCH;
use crate::journey::{ConnId, Journal, Kept};
use crate::node::{Config, Node, SockError, SocketOptions, UdpId, limits};

/// The node's seed: its initial sequence numbers and ephemeral ports. Fixed, so that a
/// script gives the same capture on every run.
pub const SEED: u64 = 1;

/// Linux's defaults for the keep-alive timers (tcp_keepalive_time, tcp_keepalive_intvl):
/// what `SO_KEEPALIVE` alone asks for.
const KEEPIDLE_DEFAULT: Duration = Duration::from_secs(7200);
const KEEPINTVL_DEFAULT: Duration = Duration::from_secs(75);

/// The first port `bind(fd, port 0)` or `listen` on an unbound socket gets (Linux's
/// ip_local_port_range starts at 32768).
const FIRST_AUTO_PORT: u16 = 32768;

/// Timer rounds in one [`wait`](Backend::wait) that move nothing before the node's
/// timers count as broken (a timer that keeps falling due without effect).
const MAX_IDLE_ROUNDS: u32 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Made by `socket`, not yet listening or connected.
    Fresh,
    Listening {
        port: u16,
    },
    Conn {
        id: ConnId,
        connecting: bool,
    },
    /// `connect` failed: the socket is spent.
    Spent,
}

/// A descriptor of the script's, and what it stands for in the node.
#[derive(Debug, Clone)]
struct Sock {
    role: Role,
    nonblocking: bool,
    opts: SocketOptions,
    /// What the script asked for with SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL (`None`:
    /// Linux's default).
    keepalive: bool,
    keepidle: Option<Duration>,
    keepintvl: Option<Duration>,
    port: Option<u16>,
    reuseaddr: bool,
    /// SO_LINGER on, with this many seconds.
    linger: Option<u32>,
    shut_rd: bool,
    shut_wr: bool,
    /// The connection's state when last looked at: what it was in when it ended.
    last_state: Option<State>,
    /// An error ended the connection and a call has reported it: later reads see the end
    /// of the stream, as on Linux once `sk_err` is taken.
    error_taken: bool,
    /// TCP knobs set on the connection that the node has not been given yet.
    knobs_pending: bool,
    /// A UDP socket (`SOCK_DGRAM`): its node socket once bound, and its peer once
    /// connected.
    datagram: bool,
    udp: Option<UdpId>,
    peer: Option<SocketAddrV4>,
}

impl Sock {
    fn new(opts: SocketOptions, nonblocking: bool) -> Self {
        Sock {
            role: Role::Fresh,
            nonblocking,
            opts,
            keepalive: false,
            keepidle: None,
            keepintvl: None,
            port: None,
            reuseaddr: false,
            linger: None,
            shut_rd: false,
            shut_wr: false,
            last_state: None,
            error_taken: false,
            knobs_pending: false,
            datagram: false,
            udp: None,
            peer: None,
        }
    }

    fn conn(&self) -> Option<ConnId> {
        match self.role {
            Role::Conn { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// A call that waits.
struct Blocked {
    id: CallId,
    call: Call,
    /// Bytes a blocking write has queued so far.
    sent: usize,
    /// A lingering close: the connection it waits for and when it gives up.
    linger: Option<(ConnId, Duration)>,
}

/// The node behind the [`Backend`] trait. See the module's documentation.
pub struct SmoltcpBackend {
    node: Node,
    now: Duration,
    emitted: VecDeque<Emitted>,
    finished: VecDeque<Finished>,
    socks: BTreeMap<SocketId, Sock>,
    blocked: Vec<Blocked>,
    next_call: CallId,
    next_auto_port: u16,
    /// Zeros for writes, and room for reads: grown to the largest call, then reused.
    zeros: Vec<u8>,
    scratch: Vec<u8>,
    note: String,
    /// A close that lingers, between [`attempt`](Self::attempt) and its [`Blocked`].
    pending_linger: Option<(ConnId, Duration)>,
}

/// The node's configuration for a script: see the module's documentation.
pub fn config() -> Config {
    Config {
        listen: false,
        dns_port: None,
        dns_names: Vec::new(),
        seed: SEED,
        notes: true,
        ..Config::default()
    }
}

impl SmoltcpBackend {
    /// A node with a journal that keeps nothing.
    pub fn new() -> Result<Self, BackendError> {
        Self::with_journal(Journal::silent())
    }

    /// A node whose journey goes to `journal` (`Journal::keeping` for `synack demo
    /// --scenario`).
    pub fn with_journal(journal: Journal) -> Result<Self, BackendError> {
        Self::with_config(config(), journal)
    }

    /// A node made with `cfg` (see [`config`]; `internals` is the one knob worth
    /// turning: the node then explains each segment it sends).
    pub fn with_config(cfg: Config, journal: Journal) -> Result<Self, BackendError> {
        let node = Node::new(cfg, App::default(), journal, VIRTUAL_EPOCH)
            .map_err(|e| BackendError::Failed(format!("cannot make synack's node: {e}")))?;
        Ok(SmoltcpBackend {
            node,
            now: Duration::ZERO,
            emitted: VecDeque::new(),
            finished: VecDeque::new(),
            socks: BTreeMap::new(),
            blocked: Vec::new(),
            next_call: 1,
            next_auto_port: FIRST_AUTO_PORT,
            zeros: Vec::new(),
            scratch: Vec::new(),
            note: String::new(),
            pending_linger: None,
        })
    }

    /// The journey so far (with `Journal::keeping`), every connection's record.
    pub fn take_journey(&mut self) -> Kept {
        self.node.journal_mut().take_kept()
    }

    fn instant(&self) -> Instant {
        VIRTUAL_EPOCH + smoltcp::time::Duration::from_micros(self.now.as_micros() as u64)
    }

    fn since_start(t: Instant) -> Duration {
        Duration::from_micros((t - VIRTUAL_EPOCH).total_micros())
    }

    /// After anything the node did: what it sent, blocked calls that can finish now, and
    /// the state of every connection.
    fn settle(&mut self) -> Result<(), BackendError> {
        // A finished call can make the node send (a read opens the window), and what it
        // sends can finish nothing else: two rounds settle it.
        for _ in 0..2 {
            self.drain();
            self.retry_blocked()?;
        }
        self.drain();
        let node = &self.node;
        for s in self.socks.values_mut() {
            if let Some(id) = s.conn()
                && let Some(state) = node.app_state(id).state
            {
                s.last_state = Some(state);
            }
        }
        Ok(())
    }

    fn drain(&mut self) {
        while let Some(out) = self.node.next_transmit() {
            self.emitted.push_back(Emitted {
                at: self.now,
                bytes: out.data.clone(),
                note: out.note.clone(),
            });
            self.node.recycle(out);
        }
    }

    fn retry_blocked(&mut self) -> Result<(), BackendError> {
        let mut waiting = std::mem::take(&mut self.blocked).into_iter();
        while let Some(mut b) = waiting.next() {
            let done = match b.linger {
                Some((conn, until)) => Ok(self.linger_done(conn, until)),
                None => self.attempt(&b.call, true, &mut b.sent),
            };
            match done {
                Ok(Some(result)) => self.finished.push_back(Finished {
                    id: b.id,
                    at: self.now,
                    result,
                }),
                Ok(None) => self.blocked.push(b),
                Err(e) => {
                    self.blocked.push(b);
                    self.blocked.extend(waiting);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// A lingering close is over once our FIN is acknowledged (or the connection is
    /// gone), or when its time is up (Linux's SO_LINGER: close returns either way).
    fn linger_done(&self, conn: ConnId, until: Duration) -> Option<CallResult> {
        let done = match self.node.app_state(conn).state {
            None => true,
            Some(s) => matches!(s, State::FinWait2 | State::TimeWait | State::Closed),
        };
        (done || self.now >= until).then(|| CallResult::ok(0))
    }

    fn sock(&mut self, fd: SocketId) -> Result<&mut Sock, CallResult> {
        self.socks.get_mut(&fd).ok_or(CallResult::err(libc::EBADF))
    }

    /// The lowest descriptor free, from 3 (0, 1 and 2 are a process's standard streams).
    fn new_fd(&self) -> SocketId {
        let mut fd = 3;
        while self.socks.contains_key(&fd) {
            fd += 1;
        }
        fd
    }

    /// The next port no descriptor holds, from [`FIRST_AUTO_PORT`] on (after a whole
    /// round, any: the node then says the port is in use).
    fn auto_port(&mut self) -> u16 {
        for _ in FIRST_AUTO_PORT..=u16::MAX {
            let p = self.next_auto_port;
            self.next_auto_port = self
                .next_auto_port
                .checked_add(1)
                .unwrap_or(FIRST_AUTO_PORT);
            // One round for both protocols: simpler than Linux's two, as good for a script.
            if !self.socks.values().any(|s| s.port == Some(p)) {
                return p;
            }
        }
        self.next_auto_port
    }

    /// A call, now. `Ok(None)`: it must wait (a blocking socket). `retry`: a blocked
    /// call trying again.
    fn attempt(
        &mut self,
        call: &Call,
        retry: bool,
        sent: &mut usize,
    ) -> Result<Option<CallResult>, BackendError> {
        let now = self.instant();
        Ok(Some(match call {
            Call::Socket {
                domain,
                ty,
                protocol,
            } => {
                if *domain != libc::AF_INET {
                    return Ok(Some(CallResult::err(libc::EAFNOSUPPORT)));
                }
                let datagram = match (ty & 0xF, *protocol) {
                    (libc::SOCK_STREAM, 0 | libc::IPPROTO_TCP) => false,
                    (libc::SOCK_DGRAM, 0 | libc::IPPROTO_UDP) => true,
                    (libc::SOCK_STREAM | libc::SOCK_DGRAM, _) => {
                        return Ok(Some(CallResult::err(libc::EPROTONOSUPPORT)));
                    }
                    _ => return Ok(Some(CallResult::err(libc::ESOCKTNOSUPPORT))),
                };
                let fd = self.new_fd();
                let nonblocking = ty & libc::SOCK_NONBLOCK != 0;
                let opts = self.node.config().socket_options();
                let mut sock = Sock::new(opts, nonblocking);
                sock.datagram = datagram;
                self.socks.insert(fd, sock);
                CallResult::ok(i64::from(fd))
            }
            Call::Bind { fd, .. }
            | Call::Listen { fd, .. }
            | Call::Accept { fd }
            | Call::Connect { fd, .. }
            | Call::Recv { fd, .. }
            | Call::Send { fd, .. }
            | Call::Shutdown { fd, .. }
            | Call::Close { fd }
                if self.socks.get(fd).is_some_and(|s| s.datagram) =>
            {
                return self.attempt_udp(call);
            }
            Call::Bind { fd, addr } => {
                let local = self.local_addr();
                if !addr.ip().is_unspecified() && *addr.ip() != local {
                    return Ok(Some(CallResult::err(libc::EADDRNOTAVAIL)));
                }
                let port = if addr.port() == 0 {
                    self.auto_port()
                } else {
                    addr.port()
                };
                let reuse = match self.socks.get(fd) {
                    None => return Ok(Some(CallResult::err(libc::EBADF))),
                    Some(s) if s.port.is_some() || s.role != Role::Fresh => {
                        return Ok(Some(CallResult::err(libc::EINVAL)));
                    }
                    Some(s) => s.reuseaddr,
                };
                // Two TCP sockets share a port only if both said SO_REUSEADDR and neither
                // listens (Linux's inet_csk_bind_conflict, simplified).
                let clash = self.socks.iter().any(|(other, s)| {
                    other != fd
                        && !s.datagram
                        && s.port == Some(port)
                        && (!reuse || !s.reuseaddr || matches!(s.role, Role::Listening { .. }))
                });
                if clash {
                    return Ok(Some(CallResult::err(libc::EADDRINUSE)));
                }
                self.socks.get_mut(fd).expect("checked").port = Some(port);
                CallResult::ok(0)
            }
            Call::Listen { fd, backlog } => {
                let (role, port, opts) = match self.sock(*fd) {
                    Ok(s) => (s.role, s.port, s.opts),
                    Err(e) => return Ok(Some(e)),
                };
                match role {
                    // listen() again only changes the backlog on Linux; the node's queue
                    // keeps the one it has.
                    Role::Listening { .. } => CallResult::ok(0),
                    Role::Fresh => {
                        let port = match port {
                            Some(p) => p,
                            None => self.auto_port(),
                        };
                        let backlog = usize::try_from(*backlog).unwrap_or(0);
                        match self.node.app_listen(port, backlog, opts) {
                            Ok(()) => {
                                let s = self.socks.get_mut(fd).expect("checked");
                                s.port = Some(port);
                                s.role = Role::Listening { port };
                                CallResult::ok(0)
                            }
                            Err(e) => CallResult::err(errno(e)),
                        }
                    }
                    _ => CallResult::err(libc::EINVAL),
                }
            }
            Call::Accept { fd } => {
                let (role, nonblocking, parent) = match self.sock(*fd) {
                    Ok(s) => (s.role, s.nonblocking, s.clone()),
                    Err(e) => return Ok(Some(e)),
                };
                let Role::Listening { port } = role else {
                    return Ok(Some(CallResult::err(libc::EINVAL)));
                };
                match self.node.app_accept(port) {
                    Some(id) => {
                        let new = self.new_fd();
                        let mut child = Sock::new(parent.opts, false);
                        child.role = Role::Conn {
                            id,
                            connecting: false,
                        };
                        child.keepalive = parent.keepalive;
                        child.keepidle = parent.keepidle;
                        child.keepintvl = parent.keepintvl;
                        child.linger = parent.linger;
                        child.reuseaddr = parent.reuseaddr;
                        child.port = Some(port);
                        child.last_state = self.node.app_state(id).state;
                        self.socks.insert(new, child);
                        CallResult::ok(i64::from(new))
                    }
                    None if nonblocking => CallResult::err(libc::EAGAIN),
                    None => return Ok(None),
                }
            }
            Call::Connect { fd, addr } => {
                let s = match self.sock(*fd) {
                    Ok(s) => s.clone(),
                    Err(e) => return Ok(Some(e)),
                };
                match s.role {
                    Role::Fresh if !retry => {
                        let id = match self.node.app_connect(now, s.port, *addr, s.opts) {
                            Ok(id) => id,
                            Err(crate::node::NodeError::NoMemory) => {
                                return Ok(Some(CallResult::err(libc::ENOBUFS)));
                            }
                            Err(_) => return Ok(Some(CallResult::err(libc::EADDRNOTAVAIL))),
                        };
                        let sock = self.socks.get_mut(fd).expect("checked");
                        sock.role = Role::Conn {
                            id,
                            connecting: true,
                        };
                        if s.nonblocking {
                            CallResult::err(libc::EINPROGRESS)
                        } else {
                            match self.connect_progress(*fd) {
                                Some(r) => r,
                                None => return Ok(None),
                            }
                        }
                    }
                    Role::Conn {
                        connecting: true, ..
                    } => match self.connect_progress(*fd) {
                        Some(r) if retry => r,
                        // A second connect() on a non-blocking socket: still going, or
                        // done (Linux says EISCONN once connected).
                        Some(r) if r.ret == 0 => CallResult::err(libc::EISCONN),
                        Some(r) => r,
                        None if retry => return Ok(None),
                        None if s.nonblocking => CallResult::err(libc::EALREADY),
                        None => return Ok(None),
                    },
                    Role::Conn { .. } => CallResult::err(libc::EISCONN),
                    Role::Listening { .. } | Role::Spent | Role::Fresh => {
                        CallResult::err(libc::EINVAL)
                    }
                }
            }
            Call::Recv { fd, len, flags } => {
                let unknown = flags & !libc::MSG_DONTWAIT;
                if unknown != 0 {
                    return Err(unsupported_flags("recv", unknown));
                }
                let s = match self.sock(*fd) {
                    Ok(s) => s.clone(),
                    Err(e) => return Ok(Some(e)),
                };
                let nonblocking = s.nonblocking || flags & libc::MSG_DONTWAIT != 0;
                let Some(id) = s.conn() else {
                    return Ok(Some(CallResult::err(libc::ENOTCONN)));
                };
                if s.shut_rd || *len == 0 {
                    return Ok(Some(CallResult::ok(0)));
                }
                if self.scratch.len() < *len {
                    self.scratch.resize(*len, 0);
                }
                let got = self.node.app_recv(now, id, &mut self.scratch[..*len]);
                match got {
                    Ok(n) => CallResult::ok(n as i64),
                    Err(SockError::WouldBlock) if nonblocking => CallResult::err(libc::EAGAIN),
                    Err(SockError::WouldBlock) => return Ok(None),
                    Err(e) => self.ended(*fd, e, false),
                }
            }
            Call::Send { fd, len, flags } => {
                let unknown = flags & !(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
                if unknown != 0 {
                    return Err(unsupported_flags("send", unknown));
                }
                let s = match self.sock(*fd) {
                    Ok(s) => s.clone(),
                    Err(e) => return Ok(Some(e)),
                };
                let nonblocking = s.nonblocking || flags & libc::MSG_DONTWAIT != 0;
                let Some(id) = s.conn() else {
                    return Ok(Some(CallResult::err(libc::EPIPE)));
                };
                if s.shut_wr {
                    return Ok(Some(CallResult::err(libc::EPIPE)));
                }
                if *len == 0 {
                    return Ok(Some(CallResult::ok(0)));
                }
                if self.zeros.len() < *len {
                    self.zeros.resize(*len, 0);
                }
                // Linux's blocking write queues everything before it returns; a
                // non-blocking one returns what fitted.
                loop {
                    let left = &self.zeros[*sent..*len];
                    match self.node.app_send(now, id, left) {
                        Ok(n) => {
                            *sent += n;
                            if *sent == *len {
                                break CallResult::ok(*len as i64);
                            }
                        }
                        Err(SockError::WouldBlock) if *sent > 0 && nonblocking => {
                            break CallResult::ok(*sent as i64);
                        }
                        Err(SockError::WouldBlock) if nonblocking => {
                            break CallResult::err(libc::EAGAIN);
                        }
                        Err(SockError::WouldBlock) => return Ok(None),
                        Err(_) if *sent > 0 => break CallResult::ok(*sent as i64),
                        Err(e) => break self.ended(*fd, e, true),
                    }
                }
            }
            Call::Shutdown { fd, how } => {
                let s = match self.sock(*fd) {
                    Ok(s) => s.clone(),
                    Err(e) => return Ok(Some(e)),
                };
                let Some(id) = s.conn() else {
                    return Ok(Some(CallResult::err(libc::ENOTCONN)));
                };
                let (rd, wr) = match *how {
                    libc::SHUT_RD => (true, false),
                    libc::SHUT_WR => (false, true),
                    libc::SHUT_RDWR => (true, true),
                    _ => return Ok(Some(CallResult::err(libc::EINVAL))),
                };
                if wr && !s.shut_wr {
                    if let Err(e) = self.node.app_shutdown(now, id) {
                        return Ok(Some(CallResult::err(errno(e))));
                    }
                }
                let sock = self.socks.get_mut(fd).expect("checked");
                sock.shut_rd |= rd;
                sock.shut_wr |= wr;
                CallResult::ok(0)
            }
            Call::Close { fd } => {
                let Some(s) = self.socks.remove(fd) else {
                    return Ok(Some(CallResult::err(libc::EBADF)));
                };
                match s.role {
                    Role::Listening { port } => self.node.app_unlisten(now, port),
                    Role::Conn { id, .. } => {
                        // SO_LINGER with a zero timeout: an abortive close (RST).
                        self.node.app_close(now, id, s.linger == Some(0));
                        if let Some(secs) = s.linger.filter(|&t| t > 0 && !s.nonblocking) {
                            let until = self.now + Duration::from_secs(u64::from(secs));
                            if self.linger_done(id, until).is_none() {
                                // The caller records it as blocked (see start_call).
                                self.pending_linger = Some((id, until));
                                return Ok(None);
                            }
                        }
                    }
                    Role::Fresh | Role::Spent => {}
                }
                CallResult::ok(0)
            }
            Call::Fcntl { fd, cmd, arg } => {
                let s = match self.sock(*fd) {
                    Ok(s) => s,
                    Err(e) => return Ok(Some(e)),
                };
                match (*cmd, arg) {
                    (libc::F_GETFL, _) => CallResult::ok(i64::from(
                        libc::O_RDWR | if s.nonblocking { libc::O_NONBLOCK } else { 0 },
                    )),
                    (libc::F_SETFL, Some(flags)) => {
                        s.nonblocking = flags & i64::from(libc::O_NONBLOCK) != 0;
                        CallResult::ok(0)
                    }
                    _ => {
                        return Err(BackendError::Unsupported(format!(
                            "fcntl command {cmd}: the smoltcp backend knows F_GETFL and F_SETFL (O_NONBLOCK)"
                        )));
                    }
                }
            }
            Call::SetSockOpt {
                fd,
                level,
                name,
                value,
            } => self.setsockopt(*fd, *level, *name, *value)?,
            Call::GetSockOpt { fd, level, name } => self.getsockopt(*fd, *level, *name)?,
        }))
    }

    /// A call on a UDP socket (the descriptor is known to be one).
    fn attempt_udp(&mut self, call: &Call) -> Result<Option<CallResult>, BackendError> {
        let now = self.instant();
        let local = self.local_addr();
        let fd = match call {
            Call::Bind { fd, .. }
            | Call::Listen { fd, .. }
            | Call::Accept { fd }
            | Call::Connect { fd, .. }
            | Call::Recv { fd, .. }
            | Call::Send { fd, .. }
            | Call::Shutdown { fd, .. }
            | Call::Close { fd } => *fd,
            _ => return Ok(Some(CallResult::err(libc::EINVAL))),
        };
        let s = self.socks.get(&fd).cloned().expect("a UDP socket");
        // A UDP socket gets its port when bound, or at its first connect or send.
        let bind = |this: &mut Self, port: Option<u16>| -> Result<UdpId, CallResult> {
            if let Some(id) = this.socks.get(&fd).and_then(|s| s.udp) {
                return Ok(id);
            }
            let port = match port {
                Some(p) => p,
                None => this.auto_port(),
            };
            let id = this
                .node
                .app_udp_bind(port)
                .map_err(|e| CallResult::err(errno(e)))?;
            let sock = this.socks.get_mut(&fd).expect("checked");
            sock.udp = Some(id);
            sock.port = Some(port);
            Ok(id)
        };
        Ok(Some(match call {
            Call::Bind { addr, .. } => {
                if !addr.ip().is_unspecified() && *addr.ip() != local {
                    CallResult::err(libc::EADDRNOTAVAIL)
                } else if s.udp.is_some() {
                    CallResult::err(libc::EINVAL)
                } else {
                    let port = (addr.port() != 0).then_some(addr.port());
                    match bind(self, port) {
                        Ok(_) => CallResult::ok(0),
                        Err(e) => e,
                    }
                }
            }
            Call::Connect { addr, .. } => match bind(self, s.port) {
                Ok(_) => {
                    self.socks.get_mut(&fd).expect("checked").peer = Some(*addr);
                    CallResult::ok(0)
                }
                Err(e) => e,
            },
            Call::Send { len, flags, .. } => {
                let unknown = flags & !(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
                if unknown != 0 {
                    return Err(unsupported_flags("send", unknown));
                }
                let Some(peer) = s.peer else {
                    return Ok(Some(CallResult::err(libc::EDESTADDRREQ)));
                };
                let id = match bind(self, s.port) {
                    Ok(id) => id,
                    Err(e) => return Ok(Some(e)),
                };
                if self.zeros.len() < *len {
                    self.zeros.resize(*len, 0);
                }
                match self.node.app_udp_send(now, id, peer, &self.zeros[..*len]) {
                    Ok(n) => CallResult::ok(n as i64),
                    Err(SockError::WouldBlock)
                        if !s.nonblocking && flags & libc::MSG_DONTWAIT == 0 =>
                    {
                        return Ok(None);
                    }
                    Err(e) => CallResult::err(errno(e)),
                }
            }
            Call::Recv { len, flags, .. } => {
                let unknown = flags & !libc::MSG_DONTWAIT;
                if unknown != 0 {
                    return Err(unsupported_flags("recv", unknown));
                }
                let nonblocking = s.nonblocking || flags & libc::MSG_DONTWAIT != 0;
                if self.scratch.len() < *len {
                    self.scratch.resize(*len, 0);
                }
                let got = loop {
                    let Some(id) = s.udp else {
                        break Err(SockError::WouldBlock);
                    };
                    match self.node.app_udp_recv(id, &mut self.scratch[..*len]) {
                        // A connected UDP socket hears its peer alone (Linux drops the
                        // rest, udp_v4_lookup).
                        Ok((_, from)) if s.peer.is_some_and(|p| p != from) => continue,
                        r => break r,
                    }
                };
                match got {
                    Ok((n, _)) => CallResult::ok(n as i64),
                    Err(SockError::WouldBlock) if nonblocking => CallResult::err(libc::EAGAIN),
                    Err(SockError::WouldBlock) => return Ok(None),
                    Err(e) => CallResult::err(errno(e)),
                }
            }
            Call::Close { .. } => {
                if let Some(id) = s.udp {
                    self.node.app_udp_close(id);
                }
                self.socks.remove(&fd);
                CallResult::ok(0)
            }
            Call::Shutdown { .. } if s.peer.is_some() => CallResult::ok(0),
            Call::Shutdown { .. } => CallResult::err(libc::ENOTCONN),
            Call::Listen { .. } | Call::Accept { .. } => CallResult::err(libc::EOPNOTSUPP),
            _ => CallResult::err(libc::EINVAL),
        }))
    }

    /// Where a connect stands: `None` while the handshake goes on.
    fn connect_progress(&mut self, fd: SocketId) -> Option<CallResult> {
        let id = self.socks.get(&fd)?.conn()?;
        let st = self.node.app_state(id);
        match st.state {
            Some(State::SynSent | State::SynReceived) => None,
            Some(_) => {
                if let Some(s) = self.socks.get_mut(&fd) {
                    s.role = Role::Conn {
                        id,
                        connecting: false,
                    };
                }
                Some(CallResult::ok(0))
            }
            None => {
                let e = st.error.unwrap_or(SockError::Refused);
                if let Some(s) = self.socks.get_mut(&fd) {
                    s.role = Role::Spent;
                    s.error_taken = true;
                }
                Some(CallResult::err(errno(e)))
            }
        }
    }

    /// A read or write on a connection that has ended: its error once (with Linux's
    /// EPIPE for a reset in CLOSE-WAIT, `tcp_reset`), then the end of the stream for a
    /// read and EPIPE for a write.
    fn ended(&mut self, fd: SocketId, e: SockError, write: bool) -> CallResult {
        let Some(s) = self.socks.get_mut(&fd) else {
            return CallResult::err(libc::EBADF);
        };
        if s.error_taken {
            return if write {
                CallResult::err(libc::EPIPE)
            } else {
                CallResult::ok(0)
            };
        }
        s.error_taken = true;
        let errno = match (e, s.last_state) {
            (SockError::Reset, Some(State::CloseWait | State::LastAck)) => libc::EPIPE,
            (e, _) => errno(e),
        };
        CallResult::err(errno)
    }

    fn setsockopt(
        &mut self,
        fd: SocketId,
        level: i32,
        name: i32,
        value: OptValue,
    ) -> Result<CallResult, BackendError> {
        let int = match value {
            OptValue::Int(v) => Some(v),
            OptValue::Linger { .. } => None,
        };
        let Some(s) = self.socks.get_mut(&fd) else {
            return Ok(CallResult::err(libc::EBADF));
        };
        let mut knobs_changed = false;
        let mut bufs_changed = false;
        match (level, name, value) {
            (libc::SOL_SOCKET, libc::SO_REUSEADDR, _) => s.reuseaddr = int.unwrap_or(0) != 0,
            (libc::SOL_SOCKET, libc::SO_LINGER, OptValue::Linger { onoff, linger }) => {
                s.linger = (onoff != 0).then_some(linger.max(0) as u32);
            }
            (libc::SOL_SOCKET, libc::SO_RCVBUF | libc::SO_SNDBUF, OptValue::Int(v)) => {
                // smoltcp's buffer is the window: the size asked for, within the node's
                // bounds (Linux doubles it for its bookkeeping; see getsockopt).
                let size = usize::try_from(v)
                    .unwrap_or(0)
                    .clamp(limits::MIN_BUF, limits::MAX_BUF);
                if name == libc::SO_RCVBUF {
                    s.opts.rx_buf = size;
                } else {
                    s.opts.tx_buf = size;
                }
                bufs_changed = true;
            }
            (libc::SOL_SOCKET, libc::SO_KEEPALIVE, OptValue::Int(v)) => {
                s.keepalive = v != 0;
                knobs_changed = true;
            }
            (libc::IPPROTO_TCP, libc::TCP_NODELAY, OptValue::Int(v)) => {
                s.opts.knobs.nagle = v == 0;
                knobs_changed = true;
            }
            (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE | libc::TCP_KEEPINTVL, OptValue::Int(v)) => {
                if v < 1 {
                    return Ok(CallResult::err(libc::EINVAL));
                }
                let d = Some(Duration::from_secs(v as u64));
                if name == libc::TCP_KEEPIDLE {
                    s.keepidle = d;
                } else {
                    s.keepintvl = d;
                }
                // smoltcp keeps one keep-alive interval: after that much idle time, and
                // again after as much while unanswered. Both set must agree.
                if let (Some(idle), Some(intvl)) = (s.keepidle, s.keepintvl)
                    && idle != intvl
                {
                    return Err(BackendError::Unsupported(format!(
                        "TCP_KEEPIDLE {} s with TCP_KEEPINTVL {} s: smoltcp has one keep-alive interval for both",
                        idle.as_secs(),
                        intvl.as_secs()
                    )));
                }
                knobs_changed = true;
            }
            _ => {
                return Err(BackendError::Unsupported(format!(
                    "setsockopt {}: synack's node has no counterpart for it (the smoltcp backend knows SO_REUSEADDR, SO_LINGER, SO_RCVBUF, SO_SNDBUF, SO_KEEPALIVE, TCP_NODELAY, TCP_KEEPIDLE, TCP_KEEPINTVL)",
                    symbols::option_name(level, name)
                )));
            }
        }
        if knobs_changed {
            let interval = s.keepidle.unwrap_or(KEEPIDLE_DEFAULT);
            s.opts.knobs.keepalive = s.keepalive.then_some(interval);
        }
        let (role, opts) = (s.role, s.opts);
        match role {
            Role::Conn { .. } if bufs_changed => Err(BackendError::Unsupported(format!(
                "setsockopt {} on a connected socket: smoltcp's buffers are fixed when its socket is made",
                symbols::option_name(level, name)
            ))),
            Role::Conn { .. } if knobs_changed => {
                // Given to the node before anything else happens (see flush_knobs).
                s.knobs_pending = true;
                Ok(CallResult::ok(0))
            }
            Role::Listening { port } => {
                self.node.app_set_listen_options(port, opts);
                Ok(CallResult::ok(0))
            }
            _ => Ok(CallResult::ok(0)),
        }
    }

    /// Gives the node the knobs set since it last acted, at this same instant. Options
    /// set together (SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL) reach it as one change:
    /// smoltcp schedules its next keep-alive when keep-alives are switched on, and does
    /// not move it when the interval changes afterwards, so each option on its own would
    /// leave the first interval standing (7200 s) whatever the script sets next.
    fn flush_knobs(&mut self) -> Result<(), BackendError> {
        let now = self.instant();
        let mut any = false;
        for s in self.socks.values_mut().filter(|s| s.knobs_pending) {
            s.knobs_pending = false;
            // An interval given with keep-alives on and no idle time: smoltcp would wait
            // Linux's 7200 s between probes, not the interval asked for.
            if let (true, None, Some(intvl)) = (s.keepalive, s.keepidle, s.keepintvl)
                && intvl != KEEPIDLE_DEFAULT
            {
                return Err(BackendError::Unsupported(format!(
                    "TCP_KEEPINTVL {} s without TCP_KEEPIDLE: smoltcp has one keep-alive interval, the idle time (7200 s unless TCP_KEEPIDLE says)",
                    intvl.as_secs()
                )));
            }
            if let Some(id) = s.conn() {
                // The connection may have ended: nothing left to change.
                let _ = self.node.app_set_knobs(now, id, s.opts.knobs);
                any = true;
            }
        }
        if any {
            self.settle()?;
        }
        Ok(())
    }

    fn getsockopt(
        &mut self,
        fd: SocketId,
        level: i32,
        name: i32,
    ) -> Result<CallResult, BackendError> {
        let Some(s) = self.socks.get(&fd).cloned() else {
            return Ok(CallResult::err(libc::EBADF));
        };
        let value: i64 = match (level, name) {
            (libc::SOL_SOCKET, libc::SO_ERROR) => {
                // The connection's error, taken once (Linux's sock_error).
                let e = match s.role {
                    Role::Conn { id, .. } if !s.error_taken => self.node.app_state(id).error,
                    _ => None,
                };
                match e {
                    Some(e) => {
                        let errno = errno(e);
                        if let Some(s) = self.socks.get_mut(&fd) {
                            s.error_taken = true;
                        }
                        i64::from(errno)
                    }
                    None => 0,
                }
            }
            (libc::SOL_SOCKET, libc::SO_RCVBUF) => s.opts.rx_buf as i64,
            (libc::SOL_SOCKET, libc::SO_SNDBUF) => s.opts.tx_buf as i64,
            (libc::SOL_SOCKET, libc::SO_REUSEADDR) => i64::from(s.reuseaddr),
            (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => i64::from(s.keepalive),
            (libc::SOL_SOCKET, libc::SO_TYPE) => i64::from(libc::SOCK_STREAM),
            (libc::IPPROTO_TCP, libc::TCP_NODELAY) => i64::from(!s.opts.knobs.nagle),
            (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE) => {
                s.keepidle.unwrap_or(KEEPIDLE_DEFAULT).as_secs() as i64
            }
            (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL) => {
                s.keepintvl.unwrap_or(KEEPINTVL_DEFAULT).as_secs() as i64
            }
            _ => {
                return Err(BackendError::Unsupported(format!(
                    "getsockopt {}: synack's node has no counterpart for it",
                    symbols::option_name(level, name)
                )));
            }
        };
        Ok(CallResult {
            ret: 0,
            errno: 0,
            value: Some(value),
        })
    }
}

/// Linux's errno for what the node says.
fn errno(e: SockError) -> i32 {
    match e {
        SockError::WouldBlock => libc::EAGAIN,
        SockError::NotConnected => libc::ENOTCONN,
        SockError::Refused => libc::ECONNREFUSED,
        SockError::Reset => libc::ECONNRESET,
        SockError::TimedOut => libc::ETIMEDOUT,
        SockError::Pipe => libc::EPIPE,
        SockError::InUse => libc::EADDRINUSE,
    }
}

fn unsupported_flags(call: &str, flags: i32) -> BackendError {
    BackendError::Unsupported(format!(
        "{call} flags {}: the smoltcp backend knows MSG_DONTWAIT{}",
        symbols::flag_names(flags),
        if call == "send" {
            " and MSG_NOSIGNAL"
        } else {
            ""
        }
    ))
}

impl Backend for SmoltcpBackend {
    fn name(&self) -> &str {
        "smoltcp"
    }

    fn local_addr(&self) -> Ipv4Addr {
        self.node.config().addr
    }

    fn remote_addr(&self) -> Ipv4Addr {
        self.node.config().gateway
    }

    fn epoch(&self) -> Duration {
        Duration::from_micros(VIRTUAL_EPOCH.total_micros() as u64)
    }

    fn now(&self) -> Duration {
        self.now
    }

    fn wait(&mut self, deadline: Duration) -> Result<(), BackendError> {
        self.flush_knobs()?;
        let mut idle = 0;
        loop {
            if !self.emitted.is_empty() || !self.finished.is_empty() {
                return Ok(());
            }
            let node = self.node.poll_timeout().map(Self::since_start);
            let linger = self
                .blocked
                .iter()
                .filter_map(|b| b.linger)
                .map(|l| l.1)
                .min();
            match [node, linger].into_iter().flatten().min() {
                Some(t) if t <= deadline => {
                    self.now = self.now.max(t);
                    let at = self.instant();
                    self.node.handle_timeout(at);
                    self.settle()?;
                    idle += 1;
                    if idle > MAX_IDLE_ROUNDS {
                        return Err(BackendError::Failed(format!(
                            "synack's node keeps a timer due at {:?} that does nothing",
                            self.now
                        )));
                    }
                }
                _ => {
                    self.now = self.now.max(deadline);
                    return self.settle();
                }
            }
        }
    }

    fn inject(&mut self, packet: &[u8]) -> Result<(), BackendError> {
        self.flush_knobs()?;
        let now = self.instant();
        self.node.handle_packet(now, packet);
        self.note.clear();
        self.note.push_str(self.node.inbound_note());
        self.settle()
    }

    fn take_emitted(&mut self) -> Option<Emitted> {
        self.emitted.pop_front()
    }

    fn start_call(&mut self, call: &Call) -> Result<Started, BackendError> {
        if !matches!(call, Call::SetSockOpt { .. }) {
            self.flush_knobs()?;
        }
        let mut sent = 0;
        self.pending_linger = None;
        let done = self.attempt(call, false, &mut sent)?;
        let started = match done {
            Some(r) => Started::Done(r),
            None => {
                let id = self.next_call;
                self.next_call += 1;
                self.blocked.push(Blocked {
                    id,
                    call: call.clone(),
                    sent,
                    linger: self.pending_linger.take(),
                });
                Started::Blocked(id)
            }
        };
        self.settle()?;
        // A call that blocked may have finished while the node settled (its own packets
        // answered nothing yet, but a retry sees the same state): hand it over at once.
        if let Started::Blocked(id) = started
            && let Some(i) = self.finished.iter().position(|f| f.id == id)
        {
            let f = self.finished.remove(i).expect("found");
            return Ok(Started::Done(f.result));
        }
        Ok(started)
    }

    fn take_finished(&mut self) -> Option<Finished> {
        self.finished.pop_front()
    }

    fn inbound_note(&self) -> &str {
        &self.note
    }
}
