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
    /// given, is the ISN our SYN-ACK will carry (a SYN into TIME-WAIT: past the old
    /// connection, as Linux's `tcp_timewait_state_process` picks it); otherwise RFC 6528's.
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
        // Never smoltcp's own draw: its generator is one sPCG32 stream, whose state two
        // consecutive ISNs give away (and every ISN after them with it).
        let isn = isn.unwrap_or_else(|| self.cookies.isn(tuple.local, tuple.remote, now));
        let mut cause = Cause::packet(packet, seg);
        cause.set_isn(Some(isn));
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
            // The peer's window scale, which the ACK's window field needs.
            conn.inside.inbound(&s);
            conn.track.classify(crate::observe::Direction::In, &s);
            // Our SYN-ACK (the cookie, sent earlier) taken note of as if it had just left:
            // SND.NXT, our window scale, and its window in the form the segments after it
            // carry, which a challenge ACK sent before our first segment repeats.
            let mut ours = Vec::new();
            self.cookie_syn_ack(&s, cookie).emit(&mut ours);
            if let Some(ours) = Segment::parse(&ours) {
                conn.seq.sent(&ours);
            }
        }
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

#[cfg(test)]
mod tests {
    //! Passive ISNs (RFC 6528), the keys behind them and behind cookies, and the window
    //! of a connection rebuilt from a cookie: a node fed segments built with etherparse,
    //! on a virtual clock, its answers read back with the observer's parser.

    use std::net::SocketAddrV4;

    use etherparse::{PacketBuilder, TcpOptionElement};
    use smoltcp::time::{Duration, Instant};

    use super::super::cookie::{self, Carried, Cookies};
    use super::super::{Config, Node, secs};
    use crate::clock::VIRTUAL_EPOCH;
    use crate::journey::Journal;
    use crate::observe::Segment;

    const SERVER: &str = "10.77.0.2:80";

    fn addr(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    fn node(f: impl FnOnce(&mut Config)) -> Node {
        let mut cfg = Config {
            dns_port: None,
            seed: 7,
            ..Config::default()
        };
        f(&mut cfg);
        Node::new(
            cfg,
            crate::app::App::default(),
            Journal::silent(),
            VIRTUAL_EPOCH,
        )
        .unwrap()
    }

    /// A segment from `src` to the server: a SYN (with MSS, window scale and
    /// SACK-permitted) when `ack` is `None`, else an ACK (with `flags` "S": a SYN too).
    fn segment(src: SocketAddrV4, seq: u32, ack: Option<u32>, syn: bool) -> Vec<u8> {
        let dst = addr(SERVER);
        let mut b = PacketBuilder::ipv4(src.ip().octets(), dst.ip().octets(), 64).tcp(
            src.port(),
            dst.port(),
            seq,
            64_000,
        );
        if syn {
            b = b.syn();
            b = b
                .options(&[
                    TcpOptionElement::MaximumSegmentSize(1460),
                    TcpOptionElement::WindowScale(7),
                    TcpOptionElement::SelectiveAcknowledgementPermitted,
                ])
                .unwrap();
        }
        if let Some(a) = ack {
            b = b.ack(a);
        }
        let mut out = Vec::new();
        b.write(&mut out, &[]).unwrap();
        out
    }

    /// Hands `packet` to the node at `now`; what it sent back, as bytes.
    fn send(node: &mut Node, now: Instant, packet: &[u8]) -> Vec<Vec<u8>> {
        node.handle_packet(now, packet);
        std::iter::from_fn(|| {
            let out = node.next_transmit()?;
            let bytes = out.data.to_vec();
            node.recycle(out);
            Some(bytes)
        })
        .collect()
    }

    /// The SYN-ACK the node answers a SYN from `client` with at `now`.
    fn syn_ack(node: &mut Node, now: Instant, client: &str) -> Segment {
        let reply = send(node, now, &segment(addr(client), 1000, None, true));
        assert_eq!(reply.len(), 1, "one SYN-ACK");
        let s = Segment::parse(&reply[0]).unwrap();
        assert!(s.syn && s.ack_flag, "{s:?}");
        s
    }

    /// RFC 6528 §3's M: a 4 µs timer.
    fn ticks(now: Instant) -> u32 {
        (now.total_micros() / 4) as u32
    }

    /// RFC 6528 §3's F, SipHash-2-4 of the 4-tuple under the second half of `secret`.
    fn keyed_hash(secret: &[u8; 32], local: SocketAddrV4, remote: SocketAddrV4) -> u32 {
        let word = |i: usize| u64::from_le_bytes(secret[i..i + 8].try_into().unwrap());
        let ips = u64::from(u32::from(*local.ip())) << 32 | u64::from(u32::from(*remote.ip()));
        let ports = u64::from(local.port()) << 16 | u64::from(remote.port());
        cookie::siphash24((word(16), word(24)), &[ips, ports]) as u32
    }

    #[test]
    fn passive_isns_are_a_clock_plus_a_keyed_hash_not_the_generators_draws() {
        let secret: [u8; 32] = std::array::from_fn(|i| i as u8 * 7 + 1);
        let mut n = node(|c| c.secret = Some(secret));
        let t0 = VIRTUAL_EPOCH + Duration::from_micros(1234);
        let t1 = t0 + Duration::from_micros(1003);
        let a = syn_ack(&mut n, t0, "10.77.0.1:40000").seq;
        let b = syn_ack(&mut n, t1, "10.77.0.1:40001").seq;
        // RFC 6528 §3: ISN = M + F(localip, localport, remoteip, remoteport, secretkey).
        let server = addr(SERVER);
        let f_a = keyed_hash(&secret, server, addr("10.77.0.1:40000"));
        let f_b = keyed_hash(&secret, server, addr("10.77.0.1:40001"));
        assert_eq!(a, ticks(t0).wrapping_add(f_a));
        assert_eq!(b, ticks(t1).wrapping_add(f_b));
        assert_eq!(
            b.wrapping_sub(a),
            (ticks(t1) - ticks(t0)).wrapping_add(f_b.wrapping_sub(f_a))
        );
        // smoltcp's sPCG32 stream shows its state in two outputs: no ISN may come from it,
        // keyed or seeded.
        let mut seeded = node(|_| {});
        let c = syn_ack(&mut seeded, t0, "10.77.0.1:40000").seq;
        let d = syn_ack(&mut seeded, t1, "10.77.0.1:40001").seq;
        let draws = cookie::smoltcp_isn_draws(7, 64);
        for isn in [a, b, c, d] {
            assert!(!draws.contains(&isn), "{isn} is a generator draw");
        }
    }

    #[test]
    fn the_generator_draws_of_the_test_above_are_smoltcps() {
        // What the test above rules out is what a listener's own socket draws when the
        // node does not choose: a socket listening on a fresh interface seeded with 7.
        let n = node(|_| {});
        let mut iface = super::super::interface(&n.cfg, 7, VIRTUAL_EPOCH);
        let mut set = smoltcp::iface::SocketSet::new(Vec::new());
        let mut socket = smoltcp::socket::tcp::Socket::new(
            smoltcp::socket::tcp::SocketBuffer::new(vec![0; 1024]),
            smoltcp::socket::tcp::SocketBuffer::new(vec![0; 1024]),
        );
        socket.listen(80).unwrap();
        set.add(socket);
        let syn = segment(addr("10.77.0.1:40000"), 1000, None, true);
        let mut out = super::super::device::Output::default();
        let mut dev = super::OnePacket::with(&syn, &mut out, 1500);
        iface.poll_ingress_single(VIRTUAL_EPOCH, &mut dev, &mut set);
        let mut dev = super::OnePacket::empty(&mut out, 1500);
        iface.poll_egress(VIRTUAL_EPOCH, &mut dev, &mut set);
        let sent = out.pop().expect("a SYN-ACK");
        let seq = Segment::parse(&sent.data).unwrap().seq;
        assert_eq!(seq, cookie::smoltcp_isn_draws(7, 1)[0]);
    }

    #[test]
    fn a_seeded_node_repeats_its_isns_whatever_came_before() {
        let t0 = VIRTUAL_EPOCH + Duration::from_millis(5);
        let first = |n: &mut Node| send(n, t0, &segment(addr("10.77.0.1:40000"), 1000, None, true));
        let (mut a, mut b) = (node(|_| {}), node(|_| {}));
        let reply = first(&mut a);
        assert_eq!(reply, first(&mut b), "the same seed, the same bytes");
        let isn = Segment::parse(&reply[0]).unwrap().seq;
        // Another connection first, then the same 4-tuple 1 ms later: only the clock
        // moved (250 ticks of 4 µs), whatever the node drew before.
        let mut c = node(|_| {});
        syn_ack(&mut c, t0, "10.77.0.1:41000");
        let later = syn_ack(&mut c, t0 + Duration::from_millis(1), "10.77.0.1:40000").seq;
        assert_eq!(later.wrapping_sub(isn), 250);
        // Another seed, another key.
        let mut d = node(|c| c.seed = 8);
        assert_ne!(syn_ack(&mut d, t0, "10.77.0.1:40000").seq, isn);
    }

    #[test]
    fn an_unseeded_nodes_keys_owe_nothing_to_its_seed() {
        let secret = cookie::os_secret().unwrap();
        assert_ne!(
            secret,
            cookie::os_secret().unwrap(),
            "fresh bytes each time"
        );
        let t0 = VIRTUAL_EPOCH + Duration::from_secs(100);
        let mut seeded = node(|c| c.syn_backlog = 0);
        let mut keyed = node(|c| {
            c.syn_backlog = 0;
            c.secret = Some(secret);
        });
        assert_ne!(
            keyed.cookies.cookie_key(),
            Cookies::new(7, None).cookie_key()
        );
        // An attacker who walked smoltcp's generator back to the seed forges a cookie with
        // the key it derives: only the seeded node takes it.
        let spoofed = addr("10.77.0.99:5555");
        let carried = Carried::from_syn(&Default::default());
        let forged = Cookies::new(7, None).make(addr(SERVER), spoofed, 4000, secs(t0), carried);
        let ack = segment(spoofed, 4001, Some(forged.wrapping_add(1)), false);
        for (n, taken) in [(&mut seeded, true), (&mut keyed, false)] {
            // Some SYN got a cookie lately: an ACK may be a cookie's answer.
            syn_ack(n, t0, "10.77.0.1:40000");
            let reply = send(n, t0, &ack);
            assert_eq!(n.counters().syn_cookies_validated, u64::from(taken));
            assert_eq!(n.connections().0, usize::from(taken));
            assert_eq!(
                reply
                    .iter()
                    .any(|p| Segment::parse(p).is_some_and(|s| s.rst)),
                !taken
            );
        }
        // And its passive ISNs are not the seeded node's.
        let (mut a, mut b) = (node(|_| {}), node(|c| c.secret = Some(secret)));
        assert_ne!(
            syn_ack(&mut a, t0, "10.77.0.1:40000").seq,
            syn_ack(&mut b, t0, "10.77.0.1:40000").seq
        );
    }

    #[test]
    fn a_connection_rebuilt_from_a_cookie_challenges_with_the_window_it_offered() {
        let mut n = node(|c| c.syn_backlog = 0);
        let client = addr("10.77.0.1:40000");
        let synack = syn_ack(&mut n, VIRTUAL_EPOCH, "10.77.0.1:40000");
        assert_eq!(n.counters().syn_cookies_sent, 1);
        let scale = synack.options.window_scale.expect("we offer a scale");
        let ack = segment(client, 1001, Some(synack.seq.wrapping_add(1)), false);
        let reply = send(&mut n, VIRTUAL_EPOCH, &ack);
        assert_eq!(n.counters().syn_cookies_validated, 1);
        assert!(reply.is_empty(), "nothing to say yet: {reply:?}");
        // RFC 5961 §4.2: a SYN on the synchronized connection, before we have sent
        // anything on it, gets a challenge ACK with the window the SYN-ACK offered.
        let reply = send(&mut n, VIRTUAL_EPOCH, &segment(client, 77, None, true));
        assert_eq!(reply.len(), 1);
        let c = Segment::parse(&reply[0]).unwrap();
        assert!(c.ack_flag && !c.syn && !c.rst, "{c:?}");
        assert_eq!(n.counters().challenge_acks, 1);
        assert_eq!(c.window, synack.window >> scale, "RFC 7323 §2.2");
        assert_ne!(c.window, 0);
    }
}
