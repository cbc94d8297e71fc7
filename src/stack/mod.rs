//! The stack: a smoltcp interface, the listening sockets that make up the accept queue,
//! the connection table, and the event loop that moves bytes between sockets and sessions.
//!
//! One turn of the loop ([`Stack::step`]):
//! 1. ingress, one packet at a time, so each packet's effect on our TCP state is known
//!    before the next and its capture comment can say what it caused;
//! 2. serve: take established connections off the accept queue, move bytes between each
//!    socket and its session, close what is finished;
//! 3. egress: let smoltcp send what is queued (data, ACKs, FINs, retransmissions);
//! 4. reclaim sockets that reached CLOSED, refill the accept queue, arm or disarm the gate.
//!
//! Then [`Stack::run`] sleeps on the device until a packet comes or the next deadline.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use smoltcp::iface::{
    Config as IfaceConfig, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet,
};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint};

use crate::app::App;
use crate::capture::{Attach, Note, Tap};
use crate::clock;
use crate::device::{DeviceCounters, Link};
use crate::http::Limits;
use crate::journey::{ConnId, Journal, Stage, What};
use crate::observe::{Direction, FourTuple, Observed, Role};
use crate::session::{Session, Timeouts};

mod gate;

pub use gate::Gate;

/// Inbound packets handled per turn before the loop serves sessions and sends: a flood
/// of ACKs must not starve the sending side.
const INGRESS_BUDGET: usize = 256;

/// Bounds and defaults for the knobs, each with why.
pub mod limits {
    /// Linux's default `somaxconn` was 128 for decades; 16 is enough for a demo and small
    /// enough that the accept queue filling up is easy to see.
    pub const DEFAULT_BACKLOG: usize = 16;
    pub const MAX_BACKLOG: usize = 4096;
    /// Connections being served at once. Each socket holds its buffers for its whole
    /// life, so with the TIME-WAIT bound below this bounds memory: 2 x 1024 x (64 KiB +
    /// 256 KiB) = 640 MiB of address space at most, far less touched.
    pub const DEFAULT_MAX_CONNS: usize = 1024;
    pub const MAX_MAX_CONNS: usize = 65_536;
    /// Sockets kept in TIME-WAIT (10 s in smoltcp). Past this the oldest is reclaimed
    /// early, as Linux does past `tcp_max_tw_buckets`, so a burst of short connections
    /// cannot hold the table or memory hostage.
    pub const DEFAULT_MAX_TIME_WAIT: usize = 1024;
    /// How long a connection we closed may take to finish closing (FIN-WAIT-1/2,
    /// CLOSING, LAST-ACK) before we reset it: Linux's `tcp_fin_timeout` default. A peer
    /// that never sends its FIN would otherwise hold a socket forever.
    pub const FIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
    /// A peer silent this long while we have unacknowledged data is gone: smoltcp aborts.
    pub const DEAD_PEER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
    /// 64 KiB receive: a request head never needs more. One byte past what 16 bits can
    /// say, so smoltcp offers window scale 1 in the SYN-ACK (RFC 7323 §2.2).
    pub const DEFAULT_RX_BUF: usize = 64 * 1024;
    /// 256 KiB send: about 4 ms at 500 MB/s, enough to keep a local link busy.
    pub const DEFAULT_TX_BUF: usize = 256 * 1024;
    /// Below one full-size segment TCP cannot make progress; above 1 GiB (2^30) the
    /// window scale option (at most 14, RFC 7323 §2.3) cannot describe it.
    pub const MIN_BUF: usize = 1024;
    pub const MAX_BUF: usize = 1 << 30;
}

/// Why the stack stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error(
        "the TUN device is gone ({0}); was it deleted? recreate it (netns-scripts/up.sh) and start again"
    )]
    DeviceGone(String),
    #[error("waiting on the device failed: {0}")]
    Wait(std::io::Error),
}

/// What the stack is configured to be.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub http_port: u16,
    pub backlog: usize,
    pub max_conns: usize,
    pub max_time_wait: usize,
    pub rx_buf: usize,
    pub tx_buf: usize,
    pub limits: Limits,
    pub timeouts: Timeouts,
    /// Seeds smoltcp's generator: initial sequence numbers and ephemeral ports.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: Ipv4Addr::new(10, 77, 0, 2),
            prefix: 24,
            gateway: Ipv4Addr::new(10, 77, 0, 1),
            http_port: 80,
            backlog: limits::DEFAULT_BACKLOG,
            max_conns: limits::DEFAULT_MAX_CONNS,
            max_time_wait: limits::DEFAULT_MAX_TIME_WAIT,
            rx_buf: limits::DEFAULT_RX_BUF,
            tx_buf: limits::DEFAULT_TX_BUF,
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            seed: 0,
        }
    }
}

/// What the stack counted over its life.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Counters {
    pub connections: u64,
    pub syn_dropped: u64,
    pub time_wait_cut: u64,
    pub fin_timeouts: u64,
    pub aborted_streams: u64,
    pub device: DeviceCounters,
    pub device_errors: u64,
}

/// One smoltcp socket and what it carries.
struct Slot {
    handle: SocketHandle,
    /// The state as of our last look, to see transitions.
    state: tcp::State,
    conn: Option<Conn>,
}

/// A connection: from the SYN that reached a listener until its socket is reclaimed.
struct Conn {
    id: ConnId,
    tuple: FourTuple,
    opened: Instant,
    /// When our side entered TIME-WAIT, if it has.
    time_wait_since: Option<Instant>,
    /// When we sent our FIN (entered FIN-WAIT-1 or LAST-ACK), if we have.
    closed_at: Option<Instant>,
    /// `None` while the connection waits in the accept queue.
    session: Option<Session>,
}

pub struct Stack<L: Link> {
    cfg: Config,
    iface: Interface,
    sockets: SocketSet<'static>,
    dev: Gate<Tap<L>>,
    slots: Vec<Slot>,
    app: App,
    journal: Journal,
    notes: Vec<Note>,
    observed: Vec<Observed>,
    dropped: Vec<FourTuple>,
    /// CLOSED sockets kept for reuse as listeners (at most `backlog`).
    spare: Vec<SocketHandle>,
    counters: Counters,
    last_error_log: Option<Instant>,
}

/// smoltcp's state names as the RFC writes them, for the journal.
pub fn state_name(s: tcp::State) -> &'static str {
    match s {
        tcp::State::Closed => "CLOSED",
        tcp::State::Listen => "LISTEN",
        tcp::State::SynSent => "SYN-SENT",
        tcp::State::SynReceived => "SYN-RECEIVED",
        tcp::State::Established => "ESTABLISHED",
        tcp::State::FinWait1 => "FIN-WAIT-1",
        tcp::State::FinWait2 => "FIN-WAIT-2",
        tcp::State::CloseWait => "CLOSE-WAIT",
        tcp::State::Closing => "CLOSING",
        tcp::State::LastAck => "LAST-ACK",
        tcp::State::TimeWait => "TIME-WAIT",
    }
}

fn endpoint_v4(e: IpEndpoint) -> Option<SocketAddrV4> {
    match e.addr {
        IpAddress::Ipv4(a) => Some(SocketAddrV4::new(a, e.port)),
    }
}

impl<L: Link> Stack<L> {
    pub fn new(cfg: Config, link: Tap<L>, app: App, journal: Journal) -> Self {
        let mut dev = Gate::new(link);
        let mut iface_cfg = IfaceConfig::new(HardwareAddress::Ip);
        iface_cfg.random_seed = cfg.seed;
        let mut iface = Interface::new(iface_cfg, &mut dev, clock::now());
        iface.update_ip_addrs(|addrs| {
            let cidr = IpCidr::new(IpAddress::Ipv4(cfg.addr), cfg.prefix);
            // The interface has room for one address; a fresh one is empty.
            let _ = addrs.push(cidr);
        });
        let _ = iface.routes_mut().add_default_ipv4_route(cfg.gateway);
        let mut stack = Stack {
            cfg,
            iface,
            sockets: SocketSet::new(Vec::new()),
            dev,
            slots: Vec::new(),
            app,
            journal,
            notes: Vec::new(),
            observed: Vec::with_capacity(64),
            dropped: Vec::new(),
            spare: Vec::new(),
            counters: Counters::default(),
            last_error_log: None,
        };
        stack.refill();
        stack
    }

    pub fn tap(&self) -> &Tap<L> {
        self.dev.inner()
    }

    pub fn journal_mut(&mut self) -> &mut Journal {
        &mut self.journal
    }

    pub fn counters(&self) -> Counters {
        Counters {
            device: self.dev.counters(),
            ..self.counters
        }
    }

    /// Connections being served: taken off the accept queue and not yet closed by us.
    /// Closing ones are bounded by their own timers (FIN_TIMEOUT, --max-time-wait).
    pub fn active(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s.state, tcp::State::Established | tcp::State::CloseWait))
            .filter(|s| s.conn.as_ref().is_some_and(|c| c.session.is_some()))
            .count()
    }

    /// Connections that reached a listener and are not taken yet, and the free listeners.
    fn queue(&self) -> (usize, usize) {
        let waiting = self
            .slots
            .iter()
            .filter(|s| s.conn.as_ref().is_some_and(|c| c.session.is_none()))
            .count();
        let free = self.slots.iter().filter(|s| s.conn.is_none()).count();
        (waiting, free)
    }

    /// Runs until `stop` is set (SIGINT / SIGTERM) or the device goes away.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), StackError> {
        while !stop.load(Ordering::Relaxed) {
            self.step()?;
            let now = clock::now();
            // Both are cheap when there is nothing to write; the capture rate-limits itself.
            self.journal.flush();
            self.dev.inner_mut().idle(now);
            let wait = self.next_wait(now);
            if stop.load(Ordering::Relaxed) {
                break;
            }
            self.dev.wait(wait).map_err(StackError::Wait)?;
        }
        Ok(())
    }

    /// One turn of the loop, without sleeping.
    pub fn step(&mut self) -> Result<(), StackError> {
        for _ in 0..INGRESS_BUDGET {
            let now = clock::now();
            let result = self
                .iface
                .poll_ingress_single(now, &mut self.dev, &mut self.sockets);
            if result == PollIngressSingleResult::None && !self.dev.has_dropped() {
                break;
            }
            self.after_ingress(now);
        }
        let now = clock::now();
        self.serve(now);
        // Transitions seen now were caused by the application (close): they show on the
        // FIN or RST that tells the peer.
        self.scan_states(now, Some(Attach::NextFinOrRst));
        loop {
            let now = clock::now();
            let result = self
                .iface
                .poll_egress(now, &mut self.dev, &mut self.sockets);
            self.absorb_observed(now);
            self.flush_capture();
            if result == PollResult::None {
                break;
            }
        }
        let now = clock::now();
        // Transitions seen now were caused by timers (TIME-WAIT expiring, retransmissions
        // given up): no packet carries them, the journal does.
        self.scan_states(now, None);
        self.reclaim(now);
        self.refill();
        self.check_device(now)
    }

    /// How long the loop may sleep: until smoltcp's next timer or a session's deadline.
    pub fn next_wait(&mut self, now: Instant) -> Option<Duration> {
        let smoltcp = self.iface.poll_at(now, &self.sockets);
        let conns = self.slots.iter().filter_map(|s| s.conn.as_ref());
        let sessions = conns.clone().filter_map(|c| c.session.as_ref()?.deadline());
        let fin_timers = conns.filter_map(|c| Some(c.closed_at? + limits::FIN_TIMEOUT.into()));
        let capture = self.dev.inner().sync_deadline();
        let next = smoltcp
            .into_iter()
            .chain(sessions)
            .chain(fin_timers)
            .chain(capture)
            .min()?;
        Some(if next > now {
            Duration::from_micros((next - now).total_micros())
        } else {
            Duration::ZERO
        })
    }

    fn after_ingress(&mut self, now: Instant) {
        self.dev.take_dropped(&mut self.dropped);
        for i in 0..self.dropped.len() {
            let tuple = self.dropped[i];
            self.counters.syn_dropped += 1;
            let backlog = self.cfg.backlog;
            self.journal.record(
                None,
                now.total_micros(),
                Stage::Connect,
                What::SynDropped {
                    remote: tuple.remote,
                    backlog,
                },
            );
            self.notes.push(Note {
                tuple,
                attach: Attach::Inbound,
                text: format!(
                    "dropped: accept queue full ({backlog}/{backlog}), the client will retransmit"
                ),
            });
        }
        self.absorb_observed(now);
        if let Some(segment) = self.dev.inner_mut().take_last_inbound() {
            self.scan_states_of(now, Some(Attach::Inbound), Some(segment));
        }
        self.flush_capture();
    }

    fn flush_capture(&mut self) {
        self.dev.inner_mut().flush(&mut self.notes);
    }

    /// Turns the segments the observer found meaningful into journey events.
    fn absorb_observed(&mut self, now: Instant) {
        self.dev.inner_mut().take_observed(&mut self.observed);
        for i in 0..self.observed.len() {
            let o = self.observed[i];
            let tuple = o.tuple();
            let s = o.segment;
            let t = now.total_micros();
            if o.role == Role::Syn && o.dir == Direction::In {
                let Some(id) = self.conn_for_syn(tuple, now) else {
                    continue;
                };
                let (waiting, free) = self.queue();
                if let Some(rec) = self.journal.get_mut(id) {
                    rec.handshake.client_isn = Some(s.seq);
                    rec.handshake.client_window = Some(s.window);
                    rec.handshake.client_options = s.options;
                }
                self.journal.record(
                    Some(id),
                    t,
                    Stage::Connect,
                    What::Syn {
                        remote: tuple.remote,
                        local: tuple.local,
                        isn: s.seq,
                        window: s.window,
                        options: s.options,
                        queue_depth: waiting,
                        backlog: waiting + free,
                    },
                );
                continue;
            }
            let Some(id) = self.conn_id(tuple) else {
                continue;
            };
            let what = match (o.role, o.dir) {
                (Role::SynAck, Direction::Out) => {
                    if let Some(rec) = self.journal.get_mut(id) {
                        rec.handshake.server_isn = Some(s.seq);
                        rec.handshake.server_window = Some(s.window);
                        rec.handshake.server_options = s.options;
                    }
                    What::SynAck {
                        isn: s.seq,
                        ack: s.ack,
                        window: s.window,
                        options: s.options,
                    }
                }
                (Role::HandshakeAck, Direction::In) => What::HandshakeAck {
                    seq: s.seq,
                    ack: s.ack,
                },
                (Role::Fin, dir) => What::Fin {
                    dir,
                    seq: s.seq.wrapping_add(s.payload_len),
                    ack: s.ack,
                },
                (Role::FinAckOfFin, dir) => {
                    self.journal.record(
                        Some(id),
                        t,
                        Stage::Close,
                        What::FinAcked { dir, ack: s.ack },
                    );
                    What::Fin {
                        dir,
                        seq: s.seq.wrapping_add(s.payload_len),
                        ack: s.ack,
                    }
                }
                (Role::AckOfFin, dir) => What::FinAcked { dir, ack: s.ack },
                (Role::Rst, dir) => What::Rst { dir, seq: s.seq },
                _ => continue,
            };
            let stage = if matches!(what, What::SynAck { .. } | What::HandshakeAck { .. }) {
                Stage::Connect
            } else {
                Stage::Close
            };
            self.journal.record(Some(id), t, stage, what);
        }
    }

    fn conn_id(&self, tuple: FourTuple) -> Option<ConnId> {
        self.slots
            .iter()
            .filter_map(|s| s.conn.as_ref())
            .find(|c| c.tuple == tuple)
            .map(|c| c.id)
    }

    /// The connection a SYN opened: the listener that took it is now SYN-RECEIVED with
    /// that peer as its remote end. Opens the journey record on first sight.
    fn conn_for_syn(&mut self, tuple: FourTuple, now: Instant) -> Option<ConnId> {
        if let Some(id) = self.conn_id(tuple) {
            return Some(id);
        }
        let idx = self.slots.iter().position(|slot| {
            slot.conn.is_none() && {
                let sock = self.sockets.get::<tcp::Socket>(slot.handle);
                sock.state() != tcp::State::Listen
                    && sock.remote_endpoint().and_then(endpoint_v4) == Some(tuple.remote)
            }
        })?;
        Some(self.open_conn(idx, tuple, now))
    }

    fn open_conn(&mut self, idx: usize, tuple: FourTuple, now: Instant) -> ConnId {
        let id = self
            .journal
            .open(tuple.local, tuple.remote, now.total_micros());
        self.counters.connections += 1;
        self.slots[idx].conn = Some(Conn {
            id,
            tuple,
            opened: now,
            time_wait_since: None,
            closed_at: None,
            session: None,
        });
        id
    }

    /// Compares every socket's state with the last one seen and records transitions.
    /// `attach` says which packet, if any, the capture should show each one on.
    fn scan_states(&mut self, now: Instant, attach: Option<Attach>) {
        self.scan_states_of(now, attach, None);
    }

    /// As [`scan_states`](Self::scan_states), for the sockets one inbound segment can have
    /// changed: its connection's, and the listeners' if it was a SYN. With thousands of
    /// sockets (TIME-WAIT after a burst) a full scan per packet would dominate the loop.
    fn scan_states_of(
        &mut self,
        now: Instant,
        attach: Option<Attach>,
        only: Option<(FourTuple, bool)>,
    ) {
        for idx in 0..self.slots.len() {
            if let Some((tuple, syn)) = only {
                let mine = match &self.slots[idx].conn {
                    Some(conn) => conn.tuple == tuple,
                    None => syn,
                };
                if !mine {
                    continue;
                }
            }
            let handle = self.slots[idx].handle;
            let sock = self.sockets.get::<tcp::Socket>(handle);
            let (new, old) = (sock.state(), self.slots[idx].state);
            if new == old {
                continue;
            }
            let remote = sock.remote_endpoint().and_then(endpoint_v4);
            let local = sock.local_endpoint().and_then(endpoint_v4);
            self.slots[idx].state = new;
            if self.slots[idx].conn.is_none()
                && let (Some(remote), Some(local)) = (remote, local)
            {
                self.open_conn(idx, FourTuple { local, remote }, now);
            }
            let Some(conn) = self.slots[idx].conn.as_mut() else {
                continue;
            };
            match new {
                tcp::State::TimeWait => conn.time_wait_since = Some(now),
                tcp::State::FinWait1 | tcp::State::LastAck => conn.closed_at = Some(now),
                _ => {}
            }
            let (id, tuple) = (conn.id, conn.tuple);
            let (from, to) = (state_name(old), state_name(new));
            let stage = match new {
                tcp::State::SynReceived | tcp::State::Established
                    if old != tcp::State::CloseWait =>
                {
                    Stage::Connect
                }
                _ => Stage::Close,
            };
            self.journal.record(
                Some(id),
                now.total_micros(),
                stage,
                What::State { from, to },
            );
            if let Some(attach) = attach {
                let mut text = format!("our side: {from} -> {to}");
                if new == tcp::State::SynReceived {
                    let (waiting, free) = self.queue();
                    text += &format!(" (accept queue {waiting}/{})", waiting + free);
                }
                self.notes.push(Note {
                    tuple,
                    attach,
                    text,
                });
            }
            // RFC 9293 §3.10.7.3: a RST in SYN-RECEIVED returns a passively opened
            // connection to LISTEN. The socket is a free listener again; the connection
            // that was forming is over.
            if new == tcp::State::Listen {
                self.end_conn(idx, now);
            }
        }
    }

    /// Closes a connection's journey record and detaches it from its socket.
    fn end_conn(&mut self, idx: usize, now: Instant) {
        let Some(conn) = self.slots[idx].conn.take() else {
            return;
        };
        let (bytes_in, bytes_out, requests) = self
            .journal
            .get(conn.id)
            .map_or((0, 0, 0), |r| (r.bytes_in, r.bytes_out, r.requests));
        self.journal.record(
            Some(conn.id),
            now.total_micros(),
            Stage::Close,
            What::Closed {
                bytes_in,
                bytes_out,
                requests,
                duration_us: (now - conn.opened).total_micros(),
            },
        );
        self.journal.close(conn.id);
    }

    /// Takes connections off the accept queue and moves bytes for every session.
    fn serve(&mut self, now: Instant) {
        let mut active = self.active();
        for idx in 0..self.slots.len() {
            // Nothing left to serve in these; after a burst they are most of the table.
            if matches!(
                self.slots[idx].state,
                tcp::State::TimeWait | tcp::State::Closed
            ) {
                continue;
            }
            let handle = self.slots[idx].handle;
            let sock = self.sockets.get_mut::<tcp::Socket>(handle);
            let Some(conn) = self.slots[idx].conn.as_mut() else {
                continue;
            };
            if conn.session.is_none() {
                // Taken once the handshake is done (the peer may already have sent its FIN).
                let ready = matches!(
                    sock.state(),
                    tcp::State::Established | tcp::State::CloseWait
                );
                if !ready || active >= self.cfg.max_conns {
                    continue;
                }
                active += 1;
                conn.session = Some(Session::new(
                    conn.id,
                    self.cfg.limits,
                    self.cfg.timeouts,
                    now,
                ));
                sock.set_timeout(Some(limits::DEAD_PEER_TIMEOUT.into()));
                let id = conn.id;
                let (waiting, free) = self.queue();
                self.journal.record(
                    Some(id),
                    now.total_micros(),
                    Stage::Connect,
                    What::Accepted {
                        queue_depth: waiting,
                        backlog: waiting + free,
                        active,
                    },
                );
            }
            let sock = self.sockets.get_mut::<tcp::Socket>(handle);
            let Some(conn) = self.slots[idx].conn.as_mut() else {
                continue;
            };
            let Some(session) = conn.session.as_mut() else {
                continue;
            };
            if drive(sock, session, now, &self.app, &mut self.journal) == Drive::Aborted {
                self.counters.aborted_streams += 1;
            }
        }
        self.expire_closing(now);
        // Time-outs: a separate pass so that a session that just got bytes is not timed out.
        for slot in &mut self.slots {
            if let Some(session) = slot.conn.as_mut().and_then(|c| c.session.as_mut())
                && session.deadline().is_some_and(|d| d <= now)
            {
                session.poll_timeout(now, &mut self.journal);
                let sock = self.sockets.get_mut::<tcp::Socket>(slot.handle);
                drive(sock, session, now, &self.app, &mut self.journal);
            }
        }
    }

    /// Removes sockets that reached CLOSED and ends their connections' records.
    fn reclaim(&mut self, now: Instant) {
        self.cut_time_wait(now);
        let mut idx = 0;
        while idx < self.slots.len() {
            if self.slots[idx].state == tcp::State::Closed {
                self.end_conn(idx, now);
                let slot = self.slots.swap_remove(idx);
                // A CLOSED socket keeps its buffers: the next listener reuses them rather
                // than allocating and zeroing rx + tx bytes again.
                if self.spare.len() < self.cfg.backlog {
                    self.spare.push(slot.handle);
                } else {
                    self.sockets.remove(slot.handle);
                }
            } else {
                idx += 1;
            }
        }
    }

    /// Resets connections that we closed more than FIN_TIMEOUT ago and that are still not
    /// closed (the peer never sent its FIN, or never acknowledged ours).
    fn expire_closing(&mut self, now: Instant) {
        let closing = |s: tcp::State| {
            matches!(
                s,
                tcp::State::FinWait1
                    | tcp::State::FinWait2
                    | tcp::State::Closing
                    | tcp::State::LastAck
            )
        };
        for slot in &mut self.slots {
            let Some(conn) = slot.conn.as_mut() else {
                continue;
            };
            let expired = conn
                .closed_at
                .is_some_and(|t| now - t >= limits::FIN_TIMEOUT.into());
            if !expired || !closing(slot.state) {
                continue;
            }
            conn.closed_at = None;
            self.counters.fin_timeouts += 1;
            let state = state_name(slot.state);
            let secs = limits::FIN_TIMEOUT.as_secs();
            self.journal.record(
                Some(conn.id),
                now.total_micros(),
                Stage::Close,
                What::FinTimeout { state, secs },
            );
            self.notes.push(Note {
                tuple: conn.tuple,
                attach: Attach::NextFinOrRst,
                text: format!("reset: still {state} {secs} s after our FIN (tcp_fin_timeout)"),
            });
            self.sockets.get_mut::<tcp::Socket>(slot.handle).abort();
        }
    }

    /// Past `--max-time-wait` sockets in TIME-WAIT, marks the oldest for reclaiming now.
    fn cut_time_wait(&mut self, now: Instant) {
        let limit = self.cfg.max_time_wait;
        let in_time_wait = self
            .slots
            .iter()
            .filter(|s| s.state == tcp::State::TimeWait)
            .count();
        if in_time_wait <= limit {
            return;
        }
        let mut oldest: Vec<(Instant, usize)> = (self.slots.iter().enumerate())
            .filter(|(_, s)| s.state == tcp::State::TimeWait)
            .filter_map(|(i, s)| Some((s.conn.as_ref()?.time_wait_since?, i)))
            .collect();
        oldest.sort_unstable();
        for &(_, idx) in oldest.iter().take(in_time_wait - limit) {
            if let Some(id) = self.slots[idx].conn.as_ref().map(|c| c.id) {
                let t = now.total_micros();
                self.journal
                    .record(Some(id), t, Stage::Close, What::TimeWaitCut { limit });
            }
            self.counters.time_wait_cut += 1;
            // Removed without a RST, as Linux drops a TIME-WAIT bucket: a late segment
            // from the peer gets smoltcp's RST for an unknown connection.
            self.slots[idx].state = tcp::State::Closed;
        }
    }

    /// Keeps `backlog` sockets in the accept queue (listening or holding a connection not
    /// yet taken), then arms the gate if none of them is free to take a new SYN.
    fn refill(&mut self) {
        let (waiting, free) = self.queue();
        for _ in waiting + free..self.cfg.backlog {
            let handle = self.spare.pop().unwrap_or_else(|| {
                self.sockets.add(tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0; self.cfg.rx_buf]),
                    tcp::SocketBuffer::new(vec![0; self.cfg.tx_buf]),
                ))
            });
            // listen() resets the socket: state, buffers, timers, sequence numbers.
            if self
                .sockets
                .get_mut::<tcp::Socket>(handle)
                .listen(self.cfg.http_port)
                .is_err()
            {
                log::error!("cannot listen on port {}", self.cfg.http_port);
                return;
            }
            self.slots.push(Slot {
                handle,
                state: tcp::State::Listen,
                conn: None,
            });
        }
        let (_, free) = self.queue();
        if free == 0 {
            let queued = self
                .slots
                .iter()
                .filter_map(|s| s.conn.as_ref())
                .filter(|c| c.session.is_none());
            self.dev
                .arm(self.cfg.http_port, queued.map(|c| c.tuple.remote));
        } else if self.dev.is_armed() {
            self.dev.disarm();
        }
    }

    fn check_device(&mut self, now: Instant) -> Result<(), StackError> {
        if let Some(e) = self.dev.take_error() {
            self.counters.device_errors += 1;
            if e.is_fatal() {
                return Err(StackError::DeviceGone(e.to_string()));
            }
            // A device that is down fails every write; say so once a second, not per packet.
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
        Ok(())
    }

    /// Stops serving: resets every open connection so peers are not left waiting (the RSTs
    /// are captured), writes what is held, and closes the journey of each connection.
    pub fn shutdown(&mut self) -> std::io::Result<Option<(std::path::PathBuf, u64)>> {
        let now = clock::now();
        for slot in &self.slots {
            let sock = self.sockets.get_mut::<tcp::Socket>(slot.handle);
            if slot.conn.is_some()
                && !matches!(sock.state(), tcp::State::TimeWait | tcp::State::Closed)
            {
                sock.abort();
            }
        }
        self.scan_states(now, Some(Attach::NextFinOrRst));
        while self
            .iface
            .poll_egress(now, &mut self.dev, &mut self.sockets)
            != PollResult::None
        {
            self.absorb_observed(now);
            self.flush_capture();
        }
        self.absorb_observed(now);
        self.flush_capture();
        for idx in 0..self.slots.len() {
            self.end_conn(idx, now);
        }
        self.journal.close_all();
        self.dev.inner_mut().finish()
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Drive {
    Ok,
    Aborted,
}

/// Moves bytes between one socket and its session: request bytes in, response bytes out,
/// and our FIN once the session is done.
fn drive(
    sock: &mut tcp::Socket<'_>,
    session: &mut Session,
    now: Instant,
    app: &App,
    journal: &mut Journal,
) -> Drive {
    let id = session.id();
    let t = now.total_micros();
    // Receive: copy out what the session has room for; the rest waits in the socket
    // and the advertised window shrinks until the session catches up.
    while sock.can_recv() && session.room() > 0 {
        let queued = sock.recv_queue();
        let Ok(n) = sock.recv(|buf| {
            let n = session.input(buf, now);
            (n, n)
        }) else {
            break;
        };
        if n == 0 {
            break;
        }
        let rx_capacity = sock.recv_capacity();
        let window = rx_capacity - sock.recv_queue();
        journal.record(
            Some(id),
            t,
            Stage::Receive,
            What::Received {
                bytes: n,
                rx_fill: queued,
                rx_capacity,
                window,
            },
        );
        if let Some(rec) = journal.get_mut(id) {
            rec.bytes_in += n as u64;
        }
    }
    if !sock.may_recv() && sock.recv_queue() == 0 {
        session.peer_closed();
    }
    session.process(now, app, journal);
    // Send: fill the send buffer straight from the response, answering pipelined
    // requests one after another while there is room.
    while session.has_output() && sock.can_send() {
        let mut failed = false;
        let sent = sock.send(|buf| match session.output(buf, now) {
            Ok(n) => (n, n),
            Err(_) => {
                failed = true;
                (0, 0)
            }
        });
        if failed {
            log::warn!("connection #{id}: a streamed body failed mid-way; aborting the connection");
            sock.abort();
            return Drive::Aborted;
        }
        let n = sent.unwrap_or(0);
        if let Some(rec) = journal.get_mut(id) {
            rec.bytes_out += n as u64;
        }
        if let Some(done) = session.take_finished() {
            journal.record(
                Some(id),
                t,
                Stage::Send,
                What::Sent {
                    bytes: done.wire_bytes,
                    tx_fill: sock.send_queue(),
                    tx_capacity: sock.send_capacity(),
                },
            );
            session.process(now, app, journal);
        } else if n == 0 {
            break;
        }
    }
    if session.wants_close() && sock.may_send() {
        // RFC 9112 §9.6: the server initiates the close after the final response.
        sock.close();
    }
    Drive::Ok
}
