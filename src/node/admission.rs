//! How connections come to be and reach the application: a socket of their own for each
//! (buffers from the pools), the SYN queue and the accept queue of each listener, and the
//! handshake rebuilt from a SYN cookie.

use smoltcp::iface::SocketSet;
use smoltcp::socket::tcp;
use smoltcp::time::Instant;

use super::conn::{Conn, Opened, Queue, SeqTrack};
use super::cookie::{Carried, interface_seed_for_isn};
use super::device::OnePacket;
use super::turn::Cause;
use super::{Node, NodeError, SocketOptions, interface, wire};
use crate::journey::{ConnId, Stage, What};
use crate::observe::{FourTuple, Segment, Track};
use crate::session::{Conversation, ServerSession};

impl Node {
    /// A connection with a fresh socket in its own set, in the table (not yet polled).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new_conn(
        &mut self,
        now: Instant,
        tuple: FourTuple,
        opened_by: Opened,
        session: Option<Box<dyn Conversation>>,
        id: Option<ConnId>,
        opts: SocketOptions,
        app: bool,
    ) -> Result<u32, NodeError> {
        let rx = self.pools.take(opts.rx_buf).ok_or(NodeError::NoMemory)?;
        let Some(tx) = self.pools.take(opts.tx_buf) else {
            self.pools.put(rx);
            return Err(NodeError::NoMemory);
        };
        // SAFETY: each region goes to this socket alone, and `remove_conn` drops the
        // socket set before the regions go back to their pools.
        let (rx_buf, tx_buf) = unsafe { (rx.lend(), tx.lend()) };
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(rx_buf),
            tcp::SocketBuffer::new(tx_buf),
        );
        opts.knobs.apply(&mut socket);
        let mut set = SocketSet::new(Vec::with_capacity(1));
        let handle = set.add(socket);
        let id = id.unwrap_or_else(|| {
            self.journal
                .open(tuple.local, tuple.remote, now.total_micros())
        });
        self.counters.connections += 1;
        let (slot, generation) = self.conns.reserve();
        self.conns.put(
            slot,
            Conn {
                id,
                tuple,
                generation,
                set,
                handle,
                rx: Some(rx),
                tx: Some(tx),
                state: tcp::State::Closed,
                opened_by,
                queue: Queue::None,
                session,
                opened: now,
                closed_at: None,
                established: false,
                reset_by_peer: false,
                seq: SeqTrack::default(),
                track: Track::default(),
                scheduled: None,
                note: String::new(),
                peak_rx: 0,
                peak_tx: 0,
                counted_active: false,
                inside: Default::default(),
                app,
                stalled: None,
                orphan: false,
            },
        );
        Ok(slot)
    }

    /// A SYN that the queues admit: a listening socket of its own takes it. `isn`, if
    /// given, is the ISN our SYN-ACK will carry (a SYN into TIME-WAIT).
    pub(super) fn open_passive(
        &mut self,
        now: Instant,
        port: u16,
        packet: &[u8],
        seg: Segment,
        isn: Option<u32>,
    ) -> Result<(), NodeError> {
        let tuple = seg.tuple(crate::observe::Direction::In);
        let (opts, app) = self.listener_options(port);
        let slot = self.new_conn(now, tuple, Opened::Passive { port }, None, None, opts, app)?;
        let conn = self.conns.get_mut(slot).expect("just made");
        conn.state = tcp::State::Listen;
        if conn.socket_mut().listen(port).is_err() {
            return Err(NodeError::Connect(tuple.remote, "cannot listen".into()));
        }
        let mut cause = Cause::packet(packet, seg);
        cause.set_isn(isn);
        self.turn(now, slot, cause);
        Ok(())
    }

    /// The SYN-ACK smoltcp would write for `syn` from a fresh listening socket whose ISN
    /// is `isn` (its `dispatch` in SYN-RECEIVED): the window unscaled (RFC 7323 §2.2), our
    /// MSS, our window scale and SACK-permitted if the SYN offered them. Written here so a
    /// cookie costs no socket; a test checks it against smoltcp's own, byte for byte.
    pub(super) fn cookie_syn_ack(&self, syn: &Segment, isn: u32) -> wire::Bare {
        let rx_buf = self.listener_options(syn.dst.port()).0.rx_buf;
        wire::Bare {
            src: syn.dst,
            dst: syn.src,
            seq: isn,
            ack: Some(syn.seq.wrapping_add(1)),
            rst: false,
            window: u16::try_from(rx_buf).unwrap_or(u16::MAX),
            syn: Some(wire::SynOptions {
                mss: (self.cfg.mtu - 40) as u16,
                window_scale: syn.options.window_scale.map(|_| wscale_for(rx_buf)),
                sack_permitted: syn.options.sack_permitted,
            }),
        }
    }

    /// The ACK of a cookie's SYN-ACK: the connection is rebuilt as if its SYN had been
    /// kept (a synthetic SYN with what the cookie carried, into a socket whose ISN is the
    /// cookie), then the ACK completes the handshake.
    pub(super) fn open_from_cookie(
        &mut self,
        now: Instant,
        l: usize,
        packet: &[u8],
        ack: Segment,
        carried: Carried,
        cookie: u32,
    ) -> Result<(), NodeError> {
        let port = self.listeners[l].port;
        let tuple = ack.tuple(crate::observe::Direction::In);
        let (opts, app) = (self.listeners[l].opts, self.listeners[l].app);
        let slot = self.new_conn(now, tuple, Opened::Passive { port }, None, None, opts, app)?;
        let mtu = self.cfg.mtu;
        let syn = synthetic_syn(&ack, carried);
        let mut iface = interface(&self.cfg, interface_seed_for_isn(cookie), now);
        let mut conn = self.conns.take(slot).expect("just made");
        conn.state = tcp::State::Listen;
        if conn.socket_mut().listen(port).is_err() {
            self.conns.put(slot, conn);
            return Err(NodeError::Connect(tuple.remote, "cannot listen".into()));
        }
        // Its SYN-ACK goes nowhere: the peer has had it (as the cookie).
        let mut dev = OnePacket::discarding(Some(&syn), &mut self.out, mtu);
        iface.poll_ingress_single(now, &mut dev, &mut conn.set);
        let mut dev = OnePacket::discarding(None, &mut self.out, mtu);
        while iface.poll_egress(now, &mut dev, &mut conn.set) != smoltcp::iface::PollResult::None {}
        if let Some(s) = Segment::parse(&syn) {
            conn.seq.received(&s);
            conn.track.classify(crate::observe::Direction::In, &s);
        }
        // What the SYN-ACK said, as smoltcp wrote it: the window field and our scale.
        conn.seq.snd_nxt = Some(cookie.wrapping_add(1));
        conn.seq.our_wscale = if carried.window_scale.is_some() {
            wscale_for(opts.rx_buf)
        } else {
            0
        };
        conn.state = conn.socket().state();
        conn.queue = Queue::Syn;
        self.listeners[l].half_open += 1;
        let id = conn.id;
        self.journal.record(
            Some(id),
            now.total_micros(),
            Stage::Connect,
            What::CookieValidated {
                remote: tuple.remote,
                mss: carried.mss,
                window_scale: carried.window_scale,
                sack_permitted: carried.sack_permitted,
            },
        );
        self.conns.put(slot, conn);
        self.turn(now, slot, Cause::packet(packet, ack));
        Ok(())
    }

    /// Hands an established connection to the application if there is room for it;
    /// otherwise it waits in its listener's accept queue.
    pub(super) fn offer_to_app(&mut self, now: Instant, slot: u32, conn: &mut Conn) {
        let Opened::Passive { port } = conn.opened_by else {
            return;
        };
        let Some(l) = self.listeners.iter().position(|l| l.port == port) else {
            return;
        };
        if self.listeners[l].app {
            // The application takes it with app_accept.
            conn.queue = Queue::Accept;
            self.listeners[l].accept.push_back((slot, conn.generation));
            return;
        }
        if self.active < self.cfg.max_conns && self.listeners[l].accept.is_empty() {
            self.accept(now, l, conn);
        } else {
            conn.queue = Queue::Accept;
            self.listeners[l].accept.push_back((slot, conn.generation));
        }
    }

    /// Gives the connection its conversation: the application has taken it.
    fn accept(&mut self, now: Instant, l: usize, conn: &mut Conn) {
        let waiting = self.listeners[l].accept.len();
        conn.queue = Queue::None;
        self.active += 1;
        conn.counted_active = true;
        let (limits, timeouts) = (self.cfg.limits, self.cfg.timeouts);
        let session = match self.cfg.tls.as_ref().filter(|_| self.listeners[l].tls) {
            Some(config) => ServerSession::with_tls(conn.id, limits, timeouts, now, config.clone()),
            None => ServerSession::new(conn.id, limits, timeouts, now),
        };
        conn.session = Some(Box::new(session));
        self.journal.record(
            Some(conn.id),
            now.total_micros(),
            Stage::Connect,
            What::Accepted {
                queue_depth: waiting,
                backlog: self.cfg.backlog,
                active: self.active,
            },
        );
    }

    /// What sockets on `port` are made with, and whether the application takes them.
    pub(super) fn listener_options(&self, port: u16) -> (SocketOptions, bool) {
        self.listeners
            .iter()
            .find(|l| l.port == port)
            .map_or((self.cfg.socket_options(), false), |l| (l.opts, l.app))
    }

    /// A place among the served connections is free: the oldest connection waiting in an
    /// accept queue takes it.
    pub(super) fn pop_accept(&mut self, now: Instant) {
        if self.accept_held {
            return;
        }
        self.accept_held = true;
        self.drain_accept_queues(now);
        self.accept_held = false;
    }

    fn drain_accept_queues(&mut self, now: Instant) {
        while self.active < self.cfg.max_conns {
            // The listeners take turns (HTTP, HTTPS), so that one's queue cannot keep the
            // other's waiting.
            let n = self.listeners.len();
            let start = self.accept_turn % n.max(1);
            let listeners = &mut self.listeners;
            let Some((l, (slot, generation))) = (0..n).map(|k| (start + k) % n).find_map(|i| {
                let l = &mut listeners[i];
                if l.app {
                    return None;
                }
                Some((i, l.accept.pop_front()?))
            }) else {
                return;
            };
            self.accept_turn = l + 1;
            if self.conns.generation(slot) != generation {
                continue;
            }
            let Some(mut conn) = self.conns.take(slot) else {
                continue;
            };
            if conn.queue != Queue::Accept {
                self.conns.put(slot, conn);
                continue;
            }
            self.accept(now, l, &mut conn);
            self.conns.put(slot, conn);
            // The request may be in its buffer already.
            self.turn(now, slot, Cause::App);
        }
    }
}

/// smoltcp's window scale for a receive buffer of `rx` bytes (RFC 7323 §2.2: the shift
/// that makes the buffer fit in 16 bits), as `tcp::Socket::new` computes it.
pub(super) fn wscale_for(rx: usize) -> u8 {
    let log2 = usize::BITS as usize - rx.leading_zeros() as usize;
    log2.saturating_sub(16) as u8
}

/// The SYN a cookie stands for: from the ACK's sender, with the ACK's sequence number
/// minus one and the options the cookie carried.
fn synthetic_syn(ack: &Segment, carried: Carried) -> Vec<u8> {
    let syn = wire::Bare {
        src: ack.src,
        dst: ack.dst,
        seq: ack.seq.wrapping_sub(1),
        ack: None,
        rst: false,
        window: ack.window,
        syn: Some(wire::SynOptions {
            mss: carried.mss,
            window_scale: carried.window_scale,
            sack_permitted: carried.sack_permitted,
        }),
    };
    let mut out = Vec::new();
    syn.emit(&mut out);
    out
}
