//! Sockets for an application other than the HTTP server: listen, accept, connect, send,
//! receive, shut down, close, as a program does with the kernel's sockets. `synack
//! script --against smoltcp` maps a packetdrill script's calls onto these.
//!
//! smoltcp has no listen backlog (one socket is one connection); the node's listeners
//! with their SYN and accept queues stand in for it, so a script's `listen(fd, N)` gets
//! Linux's behaviour. Everything is non-blocking: a call that cannot finish now says
//! [`SockError::WouldBlock`], and the caller asks again once time or packets have passed.

use std::net::SocketAddrV4;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::{Socket, tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::IpAddress;

use super::conn::{Opened, Queue};
use super::turn::Cause;
use super::{ConnStatus, Listener, Node, NodeError, SocketOptions};
use crate::journey::ConnId;
use crate::observe::FourTuple;

/// Why a socket call cannot be done (Linux's errno in words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SockError {
    #[error("the call would block (EAGAIN)")]
    WouldBlock,
    #[error("not connected (ENOTCONN)")]
    NotConnected,
    #[error("connection refused (ECONNREFUSED)")]
    Refused,
    #[error("connection reset by peer (ECONNRESET)")]
    Reset,
    #[error("connection timed out (ETIMEDOUT)")]
    TimedOut,
    #[error("the sending side is shut down (EPIPE)")]
    Pipe,
    #[error("the port is in use (EADDRINUSE)")]
    InUse,
}

/// Datagrams an application's UDP socket holds each way, and the bytes they may take.
const UDP_DATAGRAMS: usize = 64;
const UDP_BYTES: usize = 64 * 1024;

/// An application's UDP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpId(SocketHandle);

/// Where an application's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppState {
    /// Its TCP state; `None` once the connection is gone (closed, reset, timed out).
    pub state: Option<tcp::State>,
    /// Bytes waiting to be read.
    pub readable: usize,
    /// The peer has closed its side and everything has been read.
    pub eof: bool,
    /// Room in the send buffer.
    pub writable: usize,
    /// What ended it, for SO_ERROR and the next call.
    pub error: Option<SockError>,
}

impl Node {
    /// Listens on `port` for the application (`listen(fd, backlog)`): connections wait in
    /// its accept queue until [`app_accept`](Self::app_accept) takes them.
    pub fn app_listen(
        &mut self,
        port: u16,
        backlog: usize,
        opts: SocketOptions,
    ) -> Result<(), SockError> {
        if self.listeners.iter().any(|l| l.port == port) {
            return Err(SockError::InUse);
        }
        self.listeners.push(Listener {
            port,
            tls: false,
            app: true,
            // Linux caps listen()'s backlog at somaxconn.
            backlog: backlog.clamp(1, self.cfg.backlog),
            syn_backlog: self.cfg.syn_backlog,
            opts,
            half_open: 0,
            accept: Default::default(),
            last_cookie: None,
        });
        Ok(())
    }

    /// Stops listening on `port` (closing the listening socket): connections still in
    /// its queues are reset, as Linux resets a closed listener's children.
    pub fn app_unlisten(&mut self, now: Instant, port: u16) {
        let Some(l) = self.listeners.iter().position(|l| l.port == port && l.app) else {
            return;
        };
        self.listeners.remove(l);
        for slot in self.conns.slots() {
            let Some(conn) = self.conns.get_mut(slot) else {
                continue;
            };
            if conn.opened_by == (Opened::Passive { port }) && conn.queue != Queue::None {
                conn.queue = Queue::None;
                conn.socket_mut().abort();
                self.turn(now, slot, Cause::App);
            }
        }
    }

    /// The oldest established connection waiting on `port`, taken (`accept`).
    pub fn app_accept(&mut self, port: u16) -> Option<ConnId> {
        let l = self
            .listeners
            .iter()
            .position(|l| l.port == port && l.app)?;
        while let Some((slot, generation)) = self.listeners[l].accept.pop_front() {
            if self.conns.generation(slot) != generation {
                continue;
            }
            if let Some(conn) = self.conns.get_mut(slot)
                && conn.queue == Queue::Accept
            {
                conn.queue = Queue::None;
                return Some(conn.id);
            }
        }
        None
    }

    /// Opens a connection for the application from `local_port` (or an ephemeral one) to
    /// `remote`; the SYN goes out at once.
    pub fn app_connect(
        &mut self,
        now: Instant,
        local_port: Option<u16>,
        remote: SocketAddrV4,
        opts: SocketOptions,
    ) -> Result<ConnId, NodeError> {
        let port = match local_port {
            Some(p) => p,
            None => self.free_ephemeral_port(remote)?,
        };
        let tuple = FourTuple {
            local: SocketAddrV4::new(self.cfg.addr, port),
            remote,
        };
        if self.tuple_in_use(&tuple) {
            return Err(NodeError::Connect(remote, "the 4-tuple is in use".into()));
        }
        self.open_active(now, tuple, None, None, opts, true)
    }

    /// Writes into the connection's send buffer; returns how much it took.
    pub fn app_send(&mut self, now: Instant, id: ConnId, data: &[u8]) -> Result<usize, SockError> {
        let Some(slot) = self.conns.find_id(id) else {
            return Err(self.ended_error(id).unwrap_or(SockError::Pipe));
        };
        let conn = self.conns.get_mut(slot).expect("found");
        let sock = conn.socket_mut();
        if matches!(sock.state(), tcp::State::SynSent | tcp::State::SynReceived) {
            return Err(SockError::WouldBlock);
        }
        if !sock.may_send() {
            return Err(SockError::Pipe);
        }
        let n = sock.send_slice(data).map_err(|_| SockError::Pipe)?;
        if n == 0 && !data.is_empty() {
            return Err(SockError::WouldBlock);
        }
        self.turn(now, slot, Cause::App);
        Ok(n)
    }

    /// Reads what has arrived; `Ok(0)` is the end of the stream (the peer's FIN).
    pub fn app_recv(
        &mut self,
        now: Instant,
        id: ConnId,
        buf: &mut [u8],
    ) -> Result<usize, SockError> {
        let Some(slot) = self.conns.find_id(id) else {
            if self.time_wait.find_id(id).is_some() {
                return Ok(0);
            }
            return match self.ended_error(id) {
                Some(e) => Err(e),
                None => Ok(0),
            };
        };
        let conn = self.conns.get_mut(slot).expect("found");
        let sock = conn.set.get_mut::<tcp::Socket>(conn.handle);
        if sock.can_recv() {
            let n = sock.recv_slice(buf).unwrap_or(0);
            conn.seq.read += n as u64;
            // Reading makes room: a window update may be due.
            self.turn(now, slot, Cause::App);
            return Ok(n);
        }
        match sock.state() {
            tcp::State::CloseWait
            | tcp::State::LastAck
            | tcp::State::Closing
            | tcp::State::TimeWait => Ok(0),
            _ => Err(SockError::WouldBlock),
        }
    }

    /// Shuts the sending side (`shutdown(SHUT_WR)`): our FIN after what is queued.
    pub fn app_shutdown(&mut self, now: Instant, id: ConnId) -> Result<(), SockError> {
        let slot = self.conns.find_id(id).ok_or(SockError::NotConnected)?;
        let conn = self.conns.get_mut(slot).expect("found");
        conn.socket_mut().close();
        self.turn(now, slot, Cause::App);
        Ok(())
    }

    /// The application closes the connection (`close`). As Linux does, unread data or
    /// `abort` (SO_LINGER with a zero timeout) resets it (RFC 2525 §2.17); otherwise our
    /// FIN goes after what is queued.
    pub fn app_close(&mut self, now: Instant, id: ConnId, abort: bool) {
        let Some(slot) = self.conns.find_id(id) else {
            return;
        };
        let conn = self.conns.get_mut(slot).expect("found");
        conn.app = false;
        if conn.state == tcp::State::FinWait2 {
            // The FIN timeout counts from the close that orphaned it, as in Linux.
            conn.closed_at = Some(now);
        }
        let sock = conn.socket_mut();
        if abort || sock.recv_queue() > 0 {
            sock.abort();
        } else {
            sock.close();
        }
        self.turn(now, slot, Cause::App);
    }

    /// Changes the TCP knobs of a live connection (`setsockopt(TCP_NODELAY)`,
    /// `SO_KEEPALIVE` ... after `accept` or `connect`). The congestion controller stays as
    /// it is: a new one would forget the window the connection has grown.
    pub fn app_set_knobs(
        &mut self,
        now: Instant,
        id: ConnId,
        knobs: super::TcpKnobs,
    ) -> Result<(), SockError> {
        let slot = self.conns.find_id(id).ok_or(SockError::NotConnected)?;
        let conn = self.conns.get_mut(slot).expect("found");
        let sock = conn.socket_mut();
        sock.set_nagle_enabled(knobs.nagle);
        sock.set_ack_delay(knobs.ack_delay.map(Into::into));
        sock.set_keep_alive(knobs.keepalive.map(Into::into));
        sock.set_timeout(Some(knobs.timeout.into()));
        // A keep-alive or a release of held data may be due now, or later than before.
        self.turn(now, slot, Cause::App);
        Ok(())
    }

    /// What connections accepted on `port` from now on are made with (`setsockopt` on a
    /// listening socket: Linux's children inherit the listener's options).
    pub fn app_set_listen_options(&mut self, port: u16, opts: SocketOptions) {
        if let Some(l) = self.listeners.iter_mut().find(|l| l.port == port && l.app) {
            l.opts = opts;
        }
    }

    /// A UDP socket for the application, bound to `port` (`bind` on a `SOCK_DGRAM`
    /// socket). It sits with the node's other datagram sockets; a datagram to a port
    /// nobody holds gets ICMP port unreachable from smoltcp.
    pub fn app_udp_bind(&mut self, port: u16) -> Result<UdpId, SockError> {
        if port == 0 || self.udp_port_held(port) {
            return Err(SockError::InUse);
        }
        let buffer = || {
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; UDP_DATAGRAMS],
                vec![0; UDP_BYTES],
            )
        };
        let mut socket = udp::Socket::new(buffer(), buffer());
        socket.bind(port).map_err(|_| SockError::InUse)?;
        Ok(UdpId(self.misc.add(socket)))
    }

    /// Sends one datagram to `to`; it leaves at once.
    pub fn app_udp_send(
        &mut self,
        now: Instant,
        id: UdpId,
        to: SocketAddrV4,
        data: &[u8],
    ) -> Result<usize, SockError> {
        self.app_udp(id)?
            .send_slice(data, (IpAddress::Ipv4(*to.ip()), to.port()))
            .map_err(|e| match e {
                udp::SendError::BufferFull => SockError::WouldBlock,
                udp::SendError::Unaddressable => SockError::NotConnected,
            })?;
        self.misc_turn(now);
        Ok(data.len())
    }

    /// The oldest datagram received, cut to `buf` as Linux cuts it, and who sent it.
    pub fn app_udp_recv(
        &mut self,
        id: UdpId,
        buf: &mut [u8],
    ) -> Result<(usize, SocketAddrV4), SockError> {
        let (data, meta) = self
            .app_udp(id)?
            .recv()
            .map_err(|_| SockError::WouldBlock)?;
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        let IpAddress::Ipv4(ip) = meta.endpoint.addr;
        Ok((n, SocketAddrV4::new(ip, meta.endpoint.port)))
    }

    /// Closes an application's UDP socket.
    pub fn app_udp_close(&mut self, id: UdpId) {
        if self.app_udp(id).is_ok() {
            self.misc.remove(id.0);
        }
    }

    /// The UDP socket `id` names, if it is still there (smoltcp's own lookup panics on a
    /// handle that is not).
    fn app_udp(&mut self, id: UdpId) -> Result<&mut udp::Socket<'static>, SockError> {
        self.misc
            .iter_mut()
            .find_map(|(h, s)| match s {
                Socket::Udp(u) if h == id.0 => Some(u),
                _ => None,
            })
            .ok_or(SockError::NotConnected)
    }

    /// Where connection `id` stands.
    pub fn app_state(&self, id: ConnId) -> AppState {
        if let Some(conn) = self.conns.find_id(id).and_then(|s| self.conns.get(s)) {
            let sock = conn.socket();
            let state = sock.state();
            let fin = matches!(
                state,
                tcp::State::CloseWait
                    | tcp::State::LastAck
                    | tcp::State::Closing
                    | tcp::State::TimeWait
            );
            return AppState {
                state: Some(state),
                readable: sock.recv_queue(),
                eof: fin && sock.recv_queue() == 0,
                writable: if sock.may_send() {
                    sock.send_capacity() - sock.send_queue()
                } else {
                    0
                },
                error: None,
            };
        }
        if self.time_wait.find_id(id).is_some() {
            return AppState {
                state: Some(tcp::State::TimeWait),
                readable: 0,
                eof: true,
                writable: 0,
                error: None,
            };
        }
        AppState {
            state: None,
            readable: 0,
            eof: true,
            writable: 0,
            error: self.ended_error(id),
        }
    }

    /// What ended a connection the application held, if something went wrong.
    fn ended_error(&self, id: ConnId) -> Option<SockError> {
        match self.conn_status(id)? {
            ConnStatus::Ended(e) if e.reset_by_peer && !e.established => Some(SockError::Refused),
            ConnStatus::Ended(e) if e.reset_by_peer => Some(SockError::Reset),
            ConnStatus::Ended(e) if !e.established => Some(SockError::TimedOut),
            _ => None,
        }
    }
}
