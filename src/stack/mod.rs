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

use std::net::SocketAddrV4;
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
use crate::device::Link;
use crate::faults::Faults;
use crate::journey::{ConnId, Journal, Stage, What};
use crate::observe::{FourTuple, Observed};
use crate::session::{Conversation, ServerSession};

mod client;
mod config;
mod drive;
mod gate;
mod record;
mod resolver;
mod table;

pub use config::{Config, Congestion, Counters, TcpKnobs, limits};
use drive::{Drive, drive};

pub use client::{ConnStatus, Ended, LookupId};
pub use gate::Gate;

/// Inbound packets handled per turn before the loop serves sessions and sends: a flood
/// of ACKs must not starve the sending side.
const INGRESS_BUDGET: usize = 256;

/// Why the stack stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error(
        "the TUN device is gone ({0}); was it deleted? recreate it (netns-scripts/up.sh) and start again"
    )]
    DeviceGone(String),
    #[error("waiting on the device failed: {0}")]
    Wait(std::io::Error),
    #[error("cannot listen for DNS on UDP port {0}")]
    DnsPort(u16),
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddrV4, String),
}

/// One smoltcp socket and what it carries.
struct Slot {
    handle: SocketHandle,
    /// The port it listened on: which accept queue it belongs to.
    port: u16,
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
    session: Option<Box<dyn Conversation>>,
    /// It reached ESTABLISHED; the peer reset it (for the opener of a client connection).
    established: bool,
    reset_by_peer: bool,
}

pub struct Stack<L: Link> {
    cfg: Config,
    iface: Interface,
    sockets: SocketSet<'static>,
    dev: Gate<Faults<L>>,
    slots: Vec<Slot>,
    app: App,
    journal: Journal,
    notes: Vec<Note>,
    observed: Vec<Observed>,
    dropped: Vec<FourTuple>,
    /// CLOSED sockets kept for reuse as listeners (at most `backlog`).
    spare: Vec<SocketHandle>,
    resolver: Option<resolver::Resolver>,
    /// The DNS client socket, made on the first lookup (`fetch`).
    lookups: Option<client::Lookups>,
    /// How the connections we opened ended, for their openers.
    ended: Vec<(ConnId, client::Ended)>,
    /// Ephemeral ports handed out so far (the next is derived from the seed and this).
    ports_used: u32,
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
    pub fn new(
        cfg: Config,
        mut link: Tap<L>,
        app: App,
        journal: Journal,
    ) -> Result<Self, StackError> {
        link.set_dns_port(cfg.dns_port);
        let mut dev = Gate::new(Faults::new(link, cfg.faults));
        let mut iface_cfg = IfaceConfig::new(HardwareAddress::Ip);
        iface_cfg.random_seed = cfg.seed;
        let mut iface = Interface::new(iface_cfg, &mut dev, cfg.clock.now());
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
            resolver: None,
            lookups: None,
            ended: Vec::new(),
            ports_used: 0,
            counters: Counters::default(),
            last_error_log: None,
        };
        if let Some(port) = stack.cfg.dns_port {
            let zone = crate::dns::Zone::new(stack.cfg.dns_names.clone(), stack.cfg.addr);
            let resolver = resolver::Resolver::new(&mut stack.sockets, port, zone);
            stack.resolver = Some(resolver.map_err(|_| StackError::DnsPort(port))?);
        }
        stack.refill();
        Ok(stack)
    }

    fn tap_mut(&mut self) -> &mut Tap<L> {
        self.dev.inner_mut().tap_mut()
    }

    /// What the fault injector did so far.
    pub fn fault_counters(&self) -> crate::faults::FaultCounters {
        self.dev.inner().fault_counters()
    }

    /// The snapshot `GET /stats` shows.
    fn stats(&self) -> crate::app::Stats {
        let c = self.counters();
        crate::app::Stats {
            connections: c.connections,
            active_connections: self.active(),
            packets_in: c.device.rx_packets,
            packets_out: c.device.tx_packets,
            bytes_in: c.device.rx_bytes,
            bytes_out: c.device.tx_bytes,
            syn_dropped: c.syn_dropped,
            time_wait_cut: c.time_wait_cut,
            fin_timeouts: c.fin_timeouts,
            dns_answered: c.dns_answered,
            dns_dropped: c.dns_dropped,
            device_errors: c.device_errors,
            heap_allocations: crate::alloc_count::allocations(),
        }
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

    /// Runs until `stop` is set (SIGINT / SIGTERM) or the device goes away.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), StackError> {
        while !stop.load(Ordering::Relaxed) {
            self.step()?;
            if stop.load(Ordering::Relaxed) {
                break;
            }
            self.pause(None)?;
        }
        Ok(())
    }

    /// Between two steps: writes out what the journal and capture hold, then sleeps on
    /// the device until a packet comes or the next deadline.
    /// `at_most` bounds the sleep for a caller with its own deadline.
    pub fn pause(&mut self, at_most: Option<Duration>) -> Result<(), StackError> {
        let now = self.cfg.clock.now();
        self.settle(now);
        let wait = match (self.next_wait(now), at_most) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.dev.wait(wait).map_err(StackError::Wait)
    }

    /// Lets the journal and the capture catch up while the stack has nothing to do.
    pub fn settle(&mut self, now: Instant) {
        // Both are cheap when there is nothing to write; the capture rate-limits itself.
        self.journal.flush();
        self.tap_mut().idle(now);
    }

    /// The journal, for a keeping journal's records once the run is over.
    pub fn journal_mut(&mut self) -> &mut Journal {
        &mut self.journal
    }

    /// One turn of the loop, without sleeping.
    pub fn step(&mut self) -> Result<(), StackError> {
        for _ in 0..INGRESS_BUDGET {
            let now = self.cfg.clock.now();
            let result = self
                .iface
                .poll_ingress_single(now, &mut self.dev, &mut self.sockets);
            let swallowed = self.dev.inner_mut().take_swallowed();
            if result == PollIngressSingleResult::None && !self.dev.has_dropped() && !swallowed {
                break;
            }
            self.after_ingress(now);
        }
        let now = self.cfg.clock.now();
        self.app.set_stats(self.stats());
        self.serve(now);
        if let Some(resolver) = self.resolver.as_mut() {
            resolver.serve(
                &mut self.sockets,
                now,
                &mut self.journal,
                &mut self.counters,
            );
        }
        // Secrets rustls logged while serving go into the capture before the records
        // they decrypt are sent.
        self.write_keylog();
        // Transitions seen now were caused by the application (open, close): they show on
        // the SYN, FIN or RST that tells the peer.
        self.scan_states(now, Some(Attach::NextControl));
        // The inbound packets of this turn go to the file now, their notes attached, so
        // that what egress sends is written straight through rather than queued behind them.
        self.flush_capture();
        self.dev.inner_mut().release(now);
        loop {
            let now = self.cfg.clock.now();
            let result = self
                .iface
                .poll_egress(now, &mut self.dev, &mut self.sockets);
            self.absorb_observed(now);
            self.flush_capture();
            if result == PollResult::None {
                break;
            }
        }
        let now = self.cfg.clock.now();
        // Transitions seen now were caused by timers (TIME-WAIT expiring, retransmissions
        // given up): no packet carries them, the journal does.
        self.scan_states(now, None);
        // After egress: smoltcp's DNS socket gives up while sending (its last retry), and
        // nothing would wake the loop to read that later.
        self.poll_lookups(now);
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
        let capture = self.dev.inner().tap().sync_deadline();
        let faults = self.dev.inner().next_due();
        let next = smoltcp
            .into_iter()
            .chain(sessions)
            .chain(fin_timers)
            .chain(capture)
            .chain(faults)
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
        if let Some(segment) = self.tap_mut().take_last_inbound() {
            self.scan_states_of(now, Some(Attach::Inbound), Some(segment));
        }
        // The packet stays held until the step has served its connection: secrets it
        // gives rustls (a ServerHello's, on the client's side) go in the file ahead of it.
        let notes = &mut self.notes;
        self.dev.inner_mut().tap_mut().annotate(notes);
    }

    /// Secrets rustls has logged go into the capture (and `--keylog`).
    fn write_keylog(&mut self) {
        if let Some(keylog) = &self.cfg.keylog {
            let lines = keylog.take();
            if !lines.is_empty() {
                self.tap_mut().write_secrets(&lines);
            }
        }
    }

    fn flush_capture(&mut self) {
        let notes = &mut self.notes;
        let tap = self.dev.inner_mut().tap_mut();
        tap.annotate(notes);
        tap.flush();
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
            let (handle, port) = (self.slots[idx].handle, self.slots[idx].port);
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
                let (limits, timeouts) = (self.cfg.limits, self.cfg.timeouts);
                let tls = self
                    .cfg
                    .tls
                    .as_ref()
                    .filter(|_| self.cfg.https_port == Some(port));
                let session = match tls {
                    Some(config) => {
                        ServerSession::with_tls(conn.id, limits, timeouts, now, config.clone())
                    }
                    None => ServerSession::new(conn.id, limits, timeouts, now),
                };
                conn.session = Some(Box::new(session));
                let id = conn.id;
                let (waiting, free) = self.queue(self.slots[idx].port);
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
            if drive(sock, session.as_mut(), now, &self.app, &mut self.journal) == Drive::Aborted {
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
                drive(sock, session.as_mut(), now, &self.app, &mut self.journal);
            }
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
        // What the device already holds (an ACK of our last FIN, say) is read first, so
        // the capture and the journal end with the replies that were in flight.
        for _ in 0..INGRESS_BUDGET {
            let now = self.cfg.clock.now();
            let result = self
                .iface
                .poll_ingress_single(now, &mut self.dev, &mut self.sockets);
            if result == PollIngressSingleResult::None {
                break;
            }
            self.after_ingress(now);
        }
        let now = self.cfg.clock.now();
        for slot in &self.slots {
            let sock = self.sockets.get_mut::<tcp::Socket>(slot.handle);
            if slot.conn.is_some()
                && !matches!(sock.state(), tcp::State::TimeWait | tcp::State::Closed)
            {
                sock.abort();
            }
        }
        self.scan_states(now, Some(Attach::NextControl));
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
        self.tap_mut().finish()
    }
}
