//! The stack itself: a server node (HTTP on 80, HTTPS on 443, DNS on 53) fed packets from
//! a few peers on a virtual clock that the input also moves.
//!
//! Most packets are built from the input with right checksums and sequence numbers that
//! follow what the node sent (so the fuzzer reaches established connections, requests,
//! responses and teardown, not only the checksum check); some are raw bytes, mangled
//! segments with their checksum fixed, or IPv4 fragments. What must hold:
//! - every packet the node sends is IPv4 carrying TCP, UDP or ICMP, with right checksums
//!   and lengths, from the node's address, within the MTU (checked with etherparse and a
//!   checksum written here, not with smoltcp);
//! - the node never serves more connections than `max_conns`, nor keeps more TIME-WAIT
//!   entries than `max_time_wait`;
//! - a SYN to a listening port is answered, dropped or challenged, never refused with RST;
//! - no packet makes it send an unbounded number of packets, and no timer spins;
//! - once the peers fall silent, every connection and TIME-WAIT entry ends and every buffer
//!   goes back to its pool: nothing leaks.

#![no_main]

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use smoltcp::time::{Duration, Instant};
use synack::app::App;
use synack::journey::Journal;
use synack::node::{Config, Congestion, Node, TcpKnobs};
use synack_fuzz::build::{self, Ip, Tcp, TcpOpt, flags};
use synack_fuzz::check::{self, Carried};

const NODE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

/// Packets one input packet or one timer may make the node send, at most: a full send
/// window of small segments is far below it; a storm is far above.
const MAX_SENT_PER_EVENT: usize = 20_000;

/// Timer rounds in one wait: each round moves the clock or ends the wait.
const MAX_TIMER_ROUNDS: usize = 200_000;

/// Silence long enough for everything to end: the idle timeout (30 s), the FIN timeout
/// (60 s), the dead-peer timeout (60 s), TIME-WAIT (60 s), queued connections taking
/// their turn, with room to spare.
const SILENCE: Duration = Duration::from_secs(3000);

const REQUESTS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: synack.test\r\n\r\n",
    b"GET /bytes/100000 HTTP/1.1\r\nHost: synack.test\r\n\r\n",
    b"POST /json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"a\": [1, 2]}",
    b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /journey HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HEAD / HTTP/1.0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET /bytes/2000000 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /echo HTTP/1.1\r\nHost: x\r\n\r\n",
];

#[derive(Arbitrary, Debug)]
struct Setup {
    small_queues: bool,
    small_buffers: bool,
    mtu: u8,
    nagle: bool,
    no_ack_delay: bool,
    congestion: u8,
    keepalive: bool,
    short_time_wait: bool,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Port {
    Http,
    Https,
    Closed(u8),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Seq {
    /// Where this peer's sequence space is (its next byte).
    Next,
    Rel(i32),
    Abs(u32),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Ack {
    None,
    /// The node's next byte, give or take.
    Next(i16),
    Abs(u32),
}

#[derive(Arbitrary, Debug, Clone)]
enum Payload {
    None,
    Bytes(Vec<u8>),
    Request(u8),
    /// A part of a request: `REQUESTS[i][from..]`, `len` bytes at most.
    Piece(u8, u8, u8),
    Filler(u16),
}

#[derive(Arbitrary, Debug, Clone)]
struct Seg {
    peer: u8,
    port: Port,
    seq: Seq,
    ack: Ack,
    flags: u8,
    window: u16,
    options: Vec<TcpOpt>,
    payload: Payload,
}

#[derive(Arbitrary, Debug)]
enum Action {
    Tcp(Seg),
    /// A plain ACK of everything the node sent, from every connection of every peer.
    AckAll(u16),
    Udp {
        peer: u8,
        to_dns: bool,
        port: u16,
        payload: Vec<u8>,
    },
    Icmp {
        peer: u8,
        kind: u8,
        code: u8,
        rest: [u8; 4],
        payload: Vec<u8>,
    },
    Raw(Vec<u8>),
    /// The segment in IPv4 fragments of these sizes (8-byte units), delivered in this
    /// order (indices; empty: in order).
    Fragmented {
        seg: Seg,
        id: u16,
        sizes: Vec<u8>,
        order: Vec<u8>,
    },
    /// The segment with one byte changed, then its checksum made right again (in the IPv4
    /// header or in the TCP segment).
    Mangled {
        seg: Seg,
        in_ip: bool,
        at: u16,
        xor: u8,
    },
    WaitMs(u16),
    WaitSecs(u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    setup: Setup,
    actions: Vec<Action>,
}

/// What a peer knows of one of its connections.
#[derive(Debug, Default, Clone, Copy)]
struct Peer {
    /// Our next sequence number.
    snd_nxt: u32,
    /// The node's next sequence number, as far as we have seen.
    rcv_nxt: Option<u32>,
}

struct Harness {
    node: Node,
    now: Instant,
    mtu: usize,
    peers: HashMap<(u8, u16), Peer>,
    cfg: Config,
    /// A SYN to a listening port is being handled: it may be answered, dropped or
    /// challenged, never refused with RST (the peer's address and port, our port).
    syn_to_listener: Option<(Ipv4Addr, u16, u16)>,
}

fn peer_addr(peer: u8) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::new(10, 77, 0, 1 + (peer % 3) * 2),
        40_000 + u16::from(peer % 5),
    )
}

fn port_number(port: Port) -> u16 {
    match port {
        Port::Http => 80,
        Port::Https => 443,
        Port::Closed(p) => 1000 + u16::from(p % 4),
    }
}

fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// The server's TLS: one identity for the whole run (a key takes a while to make), a
/// configuration per input.
fn tls_config() -> std::sync::Arc<rustls::ServerConfig> {
    static ID: OnceLock<synack::tls::Identity> = OnceLock::new();
    let id = ID.get_or_init(|| {
        synack::tls::seeded::identity(1, &["synack.test".into()], NODE).expect("an identity")
    });
    synack::tls::server_config_with(id, None, synack_fuzz::crypto()).expect("a TLS configuration")
}

impl Harness {
    fn new(s: &Setup) -> Self {
        let mtu = [576, 1280, 1500, 9000][usize::from(s.mtu % 4)];
        let mut cfg = Config {
            addr: NODE,
            mtu,
            https_port: Some(443),
            tls: Some(tls_config()),
            seed: 7,
            notes: true,
            knobs: TcpKnobs {
                nagle: s.nagle,
                ack_delay: (!s.no_ack_delay).then(|| std::time::Duration::from_millis(10)),
                keepalive: s.keepalive.then(|| std::time::Duration::from_secs(5)),
                congestion: [Congestion::None, Congestion::Reno, Congestion::Cubic]
                    [usize::from(s.congestion % 3)],
                ..TcpKnobs::default()
            },
            ..Config::default()
        };
        if s.small_queues {
            cfg.backlog = 2;
            cfg.syn_backlog = 2;
            cfg.max_conns = 2;
            cfg.max_time_wait = 2;
        }
        if s.small_buffers {
            cfg.rx_buf = 1024;
            cfg.tx_buf = 2048;
        }
        if s.short_time_wait {
            cfg.time_wait = std::time::Duration::from_secs(1);
        }
        let now = synack::clock::VIRTUAL_EPOCH;
        let node = Node::new(cfg.clone(), App::default(), Journal::silent(), now)
            .expect("a node with this configuration");
        Harness {
            node,
            now,
            mtu,
            peers: HashMap::new(),
            cfg,
            syn_to_listener: None,
        }
    }

    /// Takes what the node sent and checks each packet.
    fn drain(&mut self) {
        let mut n = 0;
        while let Some(out) = self.node.next_transmit() {
            n += 1;
            assert!(
                n <= MAX_SENT_PER_EVENT,
                "the node sent more than {MAX_SENT_PER_EVENT} packets for one event"
            );
            let carried = check::sent(&out.data, NODE, self.mtu)
                .unwrap_or_else(|e| panic!("the node sent a bad packet ({e}): {:02x?}", out.data));
            if let Carried::Tcp {
                src_port,
                dst_port,
                seq,
                syn,
                fin,
                rst,
                payload_len,
                ..
            } = carried
            {
                let dst = etherparse::Ipv4Slice::from_slice(&out.data)
                    .map(|ip| ip.header().destination_addr())
                    .ok();
                assert!(
                    !(rst && self.syn_to_listener == Some((dst.unwrap(), dst_port, src_port))),
                    "a SYN to listening port {src_port} was refused with RST"
                );
                if let Some(peer) = (0..15u8).find(|&p| peer_addr(p) == (dst.unwrap(), dst_port)) {
                    let end = seq
                        .wrapping_add(payload_len as u32)
                        .wrapping_add(u32::from(syn) + u32::from(fin));
                    let p = self.peers.entry((peer % 15, src_port)).or_default();
                    if p.rcv_nxt.is_none_or(|r| seq_after(end, r)) {
                        p.rcv_nxt = Some(end);
                    }
                }
            }
            self.node.recycle(out);
        }
        self.check_bounds();
    }

    fn check_bounds(&self) {
        assert!(
            self.node.active() <= self.cfg.max_conns,
            "{} connections served, max_conns {}",
            self.node.active(),
            self.cfg.max_conns
        );
        let (_, time_wait) = self.node.connections();
        assert!(
            time_wait <= self.cfg.max_time_wait,
            "{time_wait} TIME-WAIT entries, max {}",
            self.cfg.max_time_wait
        );
    }

    fn deliver(&mut self, packet: &[u8]) {
        self.node.handle_packet(self.now, packet);
        let _ = self.node.inbound_note();
        self.drain();
        self.timers();
    }

    /// Runs the timers due now.
    fn timers(&mut self) {
        if self.node.poll_timeout().is_some_and(|t| t <= self.now) {
            self.node.handle_timeout(self.now);
            self.drain();
        }
        assert!(
            self.node.poll_timeout().is_none_or(|t| t > self.now),
            "a timer is still due right after the timers ran"
        );
    }

    /// Moves the clock on by `d`, running every timer on the way.
    fn wait(&mut self, d: Duration) {
        let end = self.now + d;
        let mut rounds = 0;
        while let Some(t) = self.node.poll_timeout().filter(|t| *t <= end) {
            rounds += 1;
            assert!(
                rounds <= MAX_TIMER_ROUNDS,
                "timers keep firing: {rounds} rounds"
            );
            self.now = t.max(self.now);
            self.timers();
        }
        self.now = end;
    }

    /// The bytes of a segment (the TCP part) and the packet's addresses.
    fn segment(&mut self, seg: &Seg) -> (Ip, Vec<u8>) {
        let (addr, sport) = peer_addr(seg.peer);
        let dport = port_number(seg.port);
        let key = (seg.peer % 15, dport);
        let peer = *self.peers.entry(key).or_insert_with(|| Peer {
            snd_nxt: 1000 * u32::from(seg.peer) + u32::from(dport),
            rcv_nxt: None,
        });
        let payload: Vec<u8> = match &seg.payload {
            Payload::None => Vec::new(),
            Payload::Bytes(b) => b.clone(),
            Payload::Request(i) => REQUESTS[usize::from(*i) % REQUESTS.len()].to_vec(),
            Payload::Piece(i, from, len) => {
                let r = REQUESTS[usize::from(*i) % REQUESTS.len()];
                let from = usize::from(*from).min(r.len());
                r[from..(from + usize::from(*len)).min(r.len())].to_vec()
            }
            Payload::Filler(n) => vec![b'x'; usize::from(*n)],
        };
        let seq = match seg.seq {
            Seq::Next => peer.snd_nxt,
            Seq::Rel(d) => peer.snd_nxt.wrapping_add(d as u32),
            Seq::Abs(s) => s,
        };
        let mut fl = seg.flags & 0x3F;
        let ack = match seg.ack {
            Ack::None => {
                fl &= !flags::ACK;
                0
            }
            Ack::Next(d) => {
                fl |= flags::ACK;
                peer.rcv_nxt.unwrap_or(0).wrapping_add(d as i32 as u32)
            }
            Ack::Abs(a) => {
                fl |= flags::ACK;
                a
            }
        };
        if matches!(seg.seq, Seq::Next) {
            let len = payload.len() as u32
                + u32::from(fl & flags::SYN != 0)
                + u32::from(fl & flags::FIN != 0);
            self.peers.get_mut(&key).expect("just made").snd_nxt = seq.wrapping_add(len);
        }
        let options = build::options(&seg.options, ack);
        let tcp = build::tcp_segment(&Tcp {
            src: (addr, sport),
            dst: (NODE, dport),
            seq,
            ack,
            flags: fl,
            window: seg.window,
            urgent: 0,
            options: &options,
            payload: &payload,
        });
        (Ip::new(addr, NODE, 6), tcp)
    }

    fn act(&mut self, action: &Action) {
        match action {
            Action::Tcp(seg) => {
                let (ip, tcp) = self.segment(seg);
                let control = tcp[13] & (flags::SYN | flags::ACK | flags::RST | flags::FIN);
                if control == flags::SYN && !matches!(seg.port, Port::Closed(_)) {
                    let (addr, sport) = peer_addr(seg.peer);
                    self.syn_to_listener = Some((addr, sport, port_number(seg.port)));
                }
                self.deliver(&build::ipv4(&ip, &tcp));
                self.syn_to_listener = None;
            }
            Action::AckAll(window) => {
                let mut keys: Vec<_> = self.peers.keys().copied().collect();
                keys.sort_unstable();
                for (peer, dport) in keys {
                    let p = self.peers[&(peer, dport)];
                    let Some(ack) = p.rcv_nxt else { continue };
                    let (addr, sport) = peer_addr(peer);
                    let tcp = build::tcp_segment(&Tcp {
                        src: (addr, sport),
                        dst: (NODE, dport),
                        seq: p.snd_nxt,
                        ack,
                        flags: flags::ACK,
                        window: *window,
                        urgent: 0,
                        options: &[],
                        payload: &[],
                    });
                    self.deliver(&build::ipv4(&Ip::new(addr, NODE, 6), &tcp));
                }
            }
            Action::Udp {
                peer,
                to_dns,
                port,
                payload,
            } => {
                let (addr, sport) = peer_addr(*peer);
                let dport = if *to_dns { 53 } else { *port };
                let udp = build::udp_datagram((addr, sport), (NODE, dport), payload);
                self.deliver(&build::ipv4(&Ip::new(addr, NODE, 17), &udp));
            }
            Action::Icmp {
                peer,
                kind,
                code,
                rest,
                payload,
            } => {
                let (addr, _) = peer_addr(*peer);
                let icmp = build::icmp_message(*kind, *code, *rest, payload);
                self.deliver(&build::ipv4(&Ip::new(addr, NODE, 1), &icmp));
            }
            Action::Raw(bytes) => self.deliver(bytes),
            Action::Fragmented {
                seg,
                id,
                sizes,
                order,
            } => {
                let (mut ip, tcp) = self.segment(seg);
                ip.id = *id;
                let pieces = build::fragments(&ip, &tcp, sizes);
                if order.is_empty() {
                    for p in &pieces {
                        self.deliver(p);
                    }
                } else {
                    for &i in order.iter().take(64) {
                        self.deliver(&pieces[usize::from(i) % pieces.len()]);
                    }
                }
            }
            Action::Mangled {
                seg,
                in_ip,
                at,
                xor,
            } => {
                let (ip, mut tcp) = self.segment(seg);
                if *in_ip {
                    let mut p = build::ipv4(&ip, &tcp);
                    let i = usize::from(*at) % 20;
                    p[i] ^= xor;
                    p[10..12].fill(0);
                    let c = !check::fold(check::sum(0, &p[..20]));
                    p[10..12].copy_from_slice(&c.to_be_bytes());
                    self.deliver(&p);
                } else {
                    let i = usize::from(*at) % tcp.len();
                    tcp[i] ^= xor;
                    tcp[16..18].fill(0);
                    let c = !check::fold(check::sum(
                        check::pseudo(ip.src, ip.dst, 6, tcp.len()),
                        &tcp,
                    ));
                    tcp[16..18].copy_from_slice(&c.to_be_bytes());
                    self.deliver(&build::ipv4(&ip, &tcp));
                }
            }
            Action::WaitMs(ms) => self.wait(Duration::from_millis(u64::from(*ms))),
            Action::WaitSecs(s) => self.wait(Duration::from_secs(u64::from(*s))),
        }
    }
}

fuzz_target!(|input: Input| {
    let mut h = Harness::new(&input.setup);
    for action in input.actions.iter().take(256) {
        h.act(action);
    }
    // The peers fall silent: everything must end and give its memory back.
    h.wait(SILENCE);
    assert_eq!(
        h.node.connections(),
        (0, 0),
        "connections left after {} s of silence",
        SILENCE.secs()
    );
    assert_eq!(h.node.active(), 0, "connections still counted as served");
    assert_eq!(h.node.buffer_memory().0, 0, "socket buffers still resident");
});
