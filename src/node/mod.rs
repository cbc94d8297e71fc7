//! The node: synack's TCP/IP stack as a sans-IO state machine. Packets and `now` go in;
//! packets (each with a serial number and, when asked, words that explain it), journey
//! events and the next deadline come out. It never touches a file descriptor or a clock:
//! drivers do (`driver::tun` on a TUN device, `driver::pair` for two nodes on a virtual
//! clock), as quinn-proto's `Connection` and rustls's `Connection` leave I/O to theirs.
//!
//! smoltcp does the TCP (handshake, sequence numbers, retransmission, teardown), one
//! connection at a time: each connection has its own one-socket `SocketSet` behind one
//! shared `Interface`, and a packet reaches smoltcp only after the node has found its
//! connection by 4-tuple. smoltcp scans every socket of a set for every packet; with one
//! socket per set, the cost per packet no longer depends on how many connections exist.
//!
//! What the node adds in front of smoltcp, as Linux does it:
//! - a listener's two queues: `--syn-backlog` half-open connections, then SYN cookies;
//!   `--backlog` established connections not yet taken, past which a SYN is dropped
//!   (never answered with RST);
//! - TIME-WAIT as a compact entry, 60 s by default, capped by `--max-time-wait`;
//! - RFC 5961's checks on RST and SYN, with rate-limited challenge ACKs;
//! - RFC 9293 §3.10.7.1 resets for closed ports; IPv4 reassembly.

use std::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::iface::{Config as IfaceConfig, Interface, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint};

use crate::app::App;
use crate::journey::{ConnId, Journal};

mod admission;
mod buffers;
mod client;
mod config;
mod conn;
mod cookie;
mod device;
mod drive;
mod fragments;
mod guard;
mod inside;
mod misc;
mod record;
mod resolver;
mod sockets;
mod tcp_in;
#[cfg(test)]
mod tests;
mod time_wait;
mod timers;
mod turn;
mod wire;

pub use client::{ConnStatus, Ended, LookupError, LookupId};
pub use config::{Config, Congestion, Counters, TcpKnobs, limits};
pub use cookie::os_secret;
pub use device::Outgoing;
pub use sockets::{AppState, SockError, UdpId};

use conn::Table;
use timers::{Owner, Timers};

/// Why a node could not be made or a connection opened.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen for DNS on UDP port {0}")]
    DnsPort(u16),
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddrV4, String),
    #[error("no memory for a connection's buffers")]
    NoMemory,
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

/// What a socket is made with: its buffers and TCP's knobs (an application sets them
/// with setsockopt before it listens or connects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOptions {
    pub rx_buf: usize,
    pub tx_buf: usize,
    pub knobs: TcpKnobs,
}

/// One listening port and its two queues (Linux's SYN queue and accept queue).
#[derive(Debug)]
struct Listener {
    port: u16,
    /// TLS is spoken on this port.
    tls: bool,
    /// The application takes connections itself (`app_accept`), rather than the HTTP
    /// server.
    app: bool,
    /// Its accept queue's bound (`--backlog`, or listen()'s backlog) and its SYN queue's.
    backlog: usize,
    syn_backlog: usize,
    /// What its connections' sockets are made with.
    opts: SocketOptions,
    /// Connections in SYN-RECEIVED.
    half_open: usize,
    /// Established connections waiting for the application, oldest first (slots).
    accept: std::collections::VecDeque<(u32, u32)>,
    /// When this port last answered a SYN with a cookie: only then may a bare ACK be a
    /// cookie's answer (Linux's `tcp_synq_no_recent_overflow`).
    last_cookie: Option<Instant>,
}

/// The node. See the module's documentation.
pub struct Node {
    cfg: Config,
    iface: Interface,
    app: App,
    journal: Journal,
    out: device::Output,
    conns: Table,
    listeners: Vec<Listener>,
    time_wait: time_wait::Table,
    timers: Timers,
    /// Sockets that are not TCP connections: the DNS responder and the DNS client.
    misc: SocketSet<'static>,
    misc_scheduled: Option<Instant>,
    resolver: Option<resolver::Resolver>,
    lookups: Option<client::Lookups>,
    /// How the connections we opened ended, for their openers.
    ended: Vec<(ConnId, Ended)>,
    /// After `conns`, whose sockets borrow its regions: fields drop in order (see the
    /// `Drop` below).
    pools: buffers::Pools,
    cookies: cookie::Cookies,
    reassembly: fragments::Reassembly,
    challenges: guard::RateLimit,
    counters: Counters,
    /// Words for the inbound packet being handled (the capture's comment).
    in_note: String,
    /// A copy of an inbound packet that smoltcp must see changed (kept for its capacity).
    scratch: Vec<u8>,
    /// Connections being served (taken by the application, not yet closed by us).
    active: usize,
    /// Connections we closed that still send (FIN-WAIT-1, FIN-WAIT-2, CLOSING, LAST-ACK):
    /// Linux's orphans, at most `max_closing` of them.
    orphans: usize,
    /// What smoltcp said while each packet of the current turn left (with internals on).
    heard: Vec<(usize, inside::Heard)>,
    /// Ephemeral ports handed out so far (the next derives from the seed and this).
    ports_used: u32,
    /// The accept queues are not to be drained now: [`Node::pop_accept`] is already
    /// draining them further up the stack (serving one connection can free a place and
    /// settle it, which would otherwise recurse once per queued connection), or the node
    /// is shutting down.
    accept_held: bool,
    /// The listener whose accept queue is served first next time (they take turns).
    accept_turn: usize,
}

impl Node {
    pub fn new(cfg: Config, app: App, journal: Journal, now: Instant) -> Result<Self, NodeError> {
        let iface = interface(&cfg, cfg.seed, now);
        let opts = cfg.socket_options();
        let listeners = cfg
            .listening_ports()
            .map(|port| Listener {
                port,
                tls: cfg.https_port == Some(port),
                app: false,
                backlog: cfg.backlog,
                syn_backlog: cfg.syn_backlog,
                opts,
                half_open: 0,
                accept: Default::default(),
                last_cookie: None,
            })
            .collect();
        let mut node = Node {
            pools: buffers::Pools::default(),
            cookies: cookie::Cookies::new(cfg.seed, cfg.secret),
            challenges: guard::RateLimit::new(limits::CHALLENGE_ACKS_PER_SEC),
            cfg,
            iface,
            app,
            journal,
            out: device::Output::default(),
            conns: Table::default(),
            listeners,
            time_wait: time_wait::Table::default(),
            timers: Timers::default(),
            misc: SocketSet::new(Vec::new()),
            misc_scheduled: None,
            resolver: None,
            lookups: None,
            ended: Vec::new(),
            reassembly: fragments::Reassembly::default(),
            counters: Counters::default(),
            in_note: String::new(),
            scratch: Vec::new(),
            active: 0,
            orphans: 0,
            accept_held: false,
            accept_turn: 0,
            heard: Vec::new(),
            ports_used: 0,
        };
        if node.cfg.internals {
            crate::internals::enable();
        }
        if let Some(port) = node.cfg.dns_port {
            let zone = crate::dns::Zone::new(node.cfg.dns_names.clone(), node.cfg.addr);
            let resolver = resolver::Resolver::new(&mut node.misc, port, zone);
            node.resolver = Some(resolver.map_err(|_| NodeError::DnsPort(port))?);
        }
        Ok(node)
    }

    /// Takes one packet off the wire. Returns its serial number; what the node has to say
    /// about it is in [`inbound_note`](Self::inbound_note) until the next packet.
    pub fn handle_packet(&mut self, now: Instant, packet: &[u8]) -> u64 {
        let serial = self.out.serial();
        self.in_note.clear();
        self.counters.packets_in += 1;
        self.counters.bytes_in += packet.len() as u64;
        if let Err(refused) = self.ip_in(packet) {
            self.refuse_ip(refused);
        } else if fragments::Reassembly::is_fragment(packet) {
            self.fragment_in(now, packet);
        } else {
            self.dispatch(now, packet);
        }
        self.sweep_timers();
        serial
    }

    /// What every packet must be before anything acts on it, fragments included (so that
    /// fragments not for us take no place in reassembly): a whole IPv4 header whose
    /// checksum is right (RFC 791), for our address, from a source that can be a peer.
    fn ip_in(&self, packet: &[u8]) -> Result<(), wire::IpRefused> {
        let (src, _dst) = wire::ipv4_admit(packet, self.cfg.addr)?;
        wire::martian_source(src, self.cfg.addr, self.cfg.prefix)
    }

    fn refuse_ip(&mut self, refused: wire::IpRefused) {
        use wire::IpRefused::*;
        match refused {
            Malformed(_) => self.counters.dropped_malformed += 1,
            Checksum => self.counters.dropped_checksum += 1,
            NotForUs(_) => self.counters.dropped_not_for_us += 1,
            Martian(..) => self.counters.dropped_martian += 1,
        }
        self.note_in(format_args!("dropped: {refused}"));
    }

    /// Sends a whole datagram on to what handles it: a connection, TIME-WAIT, a listener,
    /// or the node's other sockets.
    fn dispatch(&mut self, now: Instant, packet: &[u8]) {
        if packet[9] == 6 {
            match crate::observe::Segment::parse(packet) {
                Some(seg) => self.tcp_in(now, packet, seg),
                None => {
                    self.counters.dropped_malformed += 1;
                    self.note_in(format_args!("dropped: malformed TCP segment"));
                }
            }
        } else {
            self.misc_in(now, packet);
        }
    }

    /// What the node has to say about the last packet it took (empty: nothing).
    pub fn inbound_note(&self) -> &str {
        &self.in_note
    }

    /// The next packet to send, if any. Give it back with [`recycle`](Self::recycle) once
    /// sent, so its buffers serve again.
    pub fn next_transmit(&mut self) -> Option<Outgoing> {
        let out = self.out.pop()?;
        self.counters.packets_out += 1;
        self.counters.bytes_out += out.data.len() as u64;
        Some(out)
    }

    pub fn recycle(&mut self, out: Outgoing) {
        self.out.recycle(out);
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Runs the timers due by `now`: retransmissions, delayed ACKs, keep-alives, session
    /// time-outs, the FIN timeout, the end of TIME-WAIT.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, owner)) = self.timers.pop_due(now) {
            match owner {
                Owner::Conn { slot, generation } => {
                    let live = self.conns.generation(slot) == generation
                        && self
                            .conns
                            .get(slot)
                            .is_some_and(|c| c.scheduled == Some(at));
                    if !live {
                        continue;
                    }
                    if let Some(conn) = self.conns.get_mut(slot) {
                        conn.scheduled = None;
                    }
                    self.turn(now, slot, turn::Cause::Timer);
                }
                Owner::TimeWait { slot, generation } => {
                    self.time_wait_timer(now, slot, generation, at);
                }
                Owner::Misc => {
                    if self.misc_scheduled == Some(at) {
                        self.misc_scheduled = None;
                        self.misc_turn(now);
                    }
                }
            }
        }
        self.sweep_timers();
    }

    /// Secrets rustls logged (TLS key log lines) since the last call: the capture writes
    /// them ahead of the packets they decrypt.
    pub fn take_secrets(&mut self) -> Vec<String> {
        self.cfg
            .keylog
            .as_ref()
            .map(|k| k.take())
            .unwrap_or_default()
    }

    /// What the node counted so far.
    pub fn counters(&self) -> Counters {
        let mut c = self.counters;
        c.fragments_expired = self.reassembly.expired;
        c.fragments_discarded = self.reassembly.discarded;
        c.fragments_duplicate = self.reassembly.duplicates;
        c
    }

    /// Connections being served now.
    pub fn active(&self) -> usize {
        self.active
    }

    /// Connections in the table (any state but TIME-WAIT) and TIME-WAIT entries.
    pub fn connections(&self) -> (usize, usize) {
        (self.conns.len(), self.time_wait.len())
    }

    pub fn journal_mut(&mut self) -> &mut Journal {
        &mut self.journal
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Resident bytes of socket buffers now, and the buffers mapped (for `/stats` and
    /// the memory benchmark).
    pub fn buffer_memory(&self) -> (usize, usize) {
        let mapped = self.pools.mapped_bytes();
        let resident = self
            .conns
            .slots()
            .into_iter()
            .filter_map(|s| self.conns.get(s))
            .map(|c| {
                c.rx.as_ref().map_or(0, |r| r.resident())
                    + c.tx.as_ref().map_or(0, |r| r.resident())
            })
            .sum();
        (resident, mapped)
    }

    /// The snapshot `GET /stats` shows.
    fn stats(&self) -> crate::app::Stats {
        let c = self.counters();
        crate::app::Stats {
            connections: c.connections,
            active_connections: self.active,
            packets_in: c.packets_in,
            packets_out: c.packets_out,
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
            syn_dropped: c.syn_dropped,
            time_wait_cut: c.time_wait_skipped,
            fin_timeouts: c.fin_timeouts,
            dns_answered: c.dns_answered,
            dns_dropped: c.dns_dropped,
            device_errors: 0,
            heap_allocations: crate::alloc_count::allocations(),
            node: Some(c),
            time_wait: self.time_wait.len(),
        }
    }

    /// Stops: every open connection is reset (so peers are not left waiting; the RSTs go
    /// out through [`next_transmit`](Self::next_transmit)), TIME-WAIT entries end, and
    /// every journey is closed.
    pub fn shutdown(&mut self, now: Instant) {
        // Each abort frees a place; no queued connection is to be served in it.
        self.accept_held = true;
        for slot in self.conns.slots() {
            if let Some(conn) = self.conns.get_mut(slot)
                && !matches!(conn.state, tcp::State::TimeWait | tcp::State::Closed)
            {
                conn.socket_mut().abort();
            }
            self.turn(now, slot, turn::Cause::Shutdown);
        }
        for slot in self.time_wait.slots().collect::<Vec<_>>() {
            self.end_time_wait(now, slot, record::TimeWaitEnd::Shutdown);
        }
        self.journal.close_all();
    }

    /// Sweeps stale timer entries out once they outnumber the live ones.
    fn sweep_timers(&mut self) {
        let owners = self.conns.len() + self.time_wait.len() + 1;
        if !self.timers.wants_sweep(owners) {
            return;
        }
        let (conns, time_wait, misc) = (&self.conns, &self.time_wait, self.misc_scheduled);
        self.timers.sweep(|at, owner| match owner {
            Owner::Conn { slot, generation } => {
                conns.generation(slot) == generation
                    && conns.get(slot).is_some_and(|c| c.scheduled == Some(at))
            }
            Owner::TimeWait { slot, generation } => time_wait
                .get(slot)
                .is_some_and(|e| e.generation == generation && e.scheduled == Some(at)),
            Owner::Misc => misc == Some(at),
        });
    }

    /// Schedules connection `slot` for `at`.
    fn schedule_conn(&mut self, slot: u32, at: Option<Instant>) {
        let generation = self.conns.generation(slot);
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if let Some(at) = at {
            conn.scheduled = Some(self.timers.schedule(
                Owner::Conn { slot, generation },
                at,
                conn.scheduled,
            ));
        }
    }

    fn schedule_misc(&mut self, at: Option<Instant>) {
        if let Some(at) = at {
            self.misc_scheduled = Some(self.timers.schedule(Owner::Misc, at, self.misc_scheduled));
        }
    }

    /// Adds words to the inbound packet's note.
    fn note_in(&mut self, text: std::fmt::Arguments<'_>) {
        if self.cfg.notes {
            append(&mut self.in_note, text);
        }
    }
}

impl Drop for Node {
    /// Each connection's buffers go back to their pool after its socket, so the pools,
    /// dropped next, unmap every region.
    fn drop(&mut self) {
        for slot in self.conns.slots() {
            let Some(mut conn) = self.conns.take(slot) else {
                continue;
            };
            let (rx, tx) = (conn.rx.take(), conn.tx.take());
            drop(conn);
            for region in [rx, tx].into_iter().flatten() {
                self.pools.put(region);
            }
        }
    }
}

/// Appends `; text` (or `text`) to a note.
fn append(note: &mut String, text: std::fmt::Arguments<'_>) {
    use std::fmt::Write;
    if !note.is_empty() {
        note.push_str("; ");
    }
    let _ = note.write_fmt(text);
}

/// An interface with the node's address and route, drawing from `seed`.
fn interface(cfg: &Config, seed: u64, now: Instant) -> Interface {
    let mut iface_cfg = IfaceConfig::new(HardwareAddress::Ip);
    iface_cfg.random_seed = seed;
    let mut out = device::Output::default();
    let mut dev = device::OnePacket::empty(&mut out, cfg.mtu);
    let mut iface = Interface::new(iface_cfg, &mut dev, now);
    iface.update_ip_addrs(|addrs| {
        let cidr = IpCidr::new(IpAddress::Ipv4(cfg.addr), cfg.prefix);
        // The interface has room for one address; a fresh one is empty.
        let _ = addrs.push(cidr);
    });
    let _ = iface.routes_mut().add_default_ipv4_route(cfg.gateway);
    iface
}

/// Whole seconds on a clock, for cookies.
fn secs(now: Instant) -> u64 {
    (now.total_millis().max(0) / 1000) as u64
}

/// A duration from std's to smoltcp's.
fn dur(d: std::time::Duration) -> Duration {
    Duration::from_micros(d.as_micros() as u64)
}

/// The address a node at `addr` gives the kernel side, for tests.
pub fn first_host(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let mask = u32::MAX << (32 - u32::from(prefix));
    Ipv4Addr::from((u32::from(addr) & mask) + 1)
}
