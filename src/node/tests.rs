//! The node against a scripted peer, on a virtual clock, without root: each test feeds
//! segments built with etherparse and reads what the node answers with etherparse too
//! (smoltcp wrote it; an independent parser checks it), as smoltcp's own TCP tests do.

use std::net::SocketAddrV4;

use etherparse::{PacketBuilder, TcpOptionElement};
use smoltcp::time::{Duration, Instant};

use super::*;
use crate::observe::Segment;

const SERVER: &str = "10.77.0.2:80";

fn addr(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

/// A segment from `src` to `dst`. `flags`: S F R P A (ACK when `ack` is given).
fn tcp(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: Option<u32>,
    flags: &str,
    payload: &[u8],
    options: &[TcpOptionElement],
) -> Vec<u8> {
    tcp_window(src, dst, seq, ack, flags, payload, options, 64_000)
}

/// [`tcp`] with the window field given.
#[allow(clippy::too_many_arguments)]
fn tcp_window(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: Option<u32>,
    flags: &str,
    payload: &[u8],
    options: &[TcpOptionElement],
    window: u16,
) -> Vec<u8> {
    let mut b = PacketBuilder::ipv4(src.ip().octets(), dst.ip().octets(), 64).tcp(
        src.port(),
        dst.port(),
        seq,
        window,
    );
    if flags.contains('S') {
        b = b.syn();
    }
    if flags.contains('F') {
        b = b.fin();
    }
    if flags.contains('R') {
        b = b.rst();
    }
    if flags.contains('P') {
        b = b.psh();
    }
    if flags.contains('U') {
        b = b.urg(0);
    }
    if let Some(a) = ack {
        b = b.ack(a);
    }
    if !options.is_empty() {
        b = b.options(options).unwrap();
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

fn syn_options() -> Vec<TcpOptionElement> {
    vec![
        TcpOptionElement::MaximumSegmentSize(1460),
        TcpOptionElement::WindowScale(7),
        TcpOptionElement::SelectiveAcknowledgementPermitted,
    ]
}

/// A packet the node sent, read back.
#[derive(Debug, Clone)]
struct Sent {
    seg: Option<Segment>,
    note: String,
}

impl Sent {
    fn seg(&self) -> Segment {
        self.seg.expect("a TCP segment")
    }
}

struct Harness {
    node: Node,
    now: Instant,
    in_note: String,
}

impl Harness {
    fn new(f: impl FnOnce(&mut Config)) -> Self {
        let mut cfg = Config {
            dns_port: None,
            seed: 7,
            ..Config::default()
        };
        f(&mut cfg);
        let now = crate::clock::VIRTUAL_EPOCH;
        let node = Node::new(
            cfg,
            crate::app::App::default(),
            Journal::keeping("server"),
            now,
        )
        .unwrap();
        Harness {
            node,
            now,
            in_note: String::new(),
        }
    }

    fn send(&mut self, packet: &[u8]) -> Vec<Sent> {
        self.node.handle_packet(self.now, packet);
        self.in_note = self.node.inbound_note().to_owned();
        self.drain()
    }

    fn drain(&mut self) -> Vec<Sent> {
        std::iter::from_fn(|| {
            let out = self.node.next_transmit()?;
            let sent = Sent {
                seg: Segment::parse(&out.data),
                note: out.note.clone(),
            };
            self.node.recycle(out);
            Some(sent)
        })
        .collect()
    }

    /// Moves time on by `d`, running every timer on the way.
    fn advance(&mut self, d: Duration) -> Vec<Sent> {
        let end = self.now + d;
        let mut sent = Vec::new();
        while let Some(t) = self.node.poll_timeout().filter(|t| *t <= end) {
            self.now = t.max(self.now);
            self.node.handle_timeout(self.now);
            sent.extend(self.drain());
        }
        self.now = end;
        sent
    }

    /// A client at `client` connects: SYN, SYN-ACK, ACK. Returns our next sequence
    /// number and the server's.
    fn connect(&mut self, client: SocketAddrV4, isn: u32) -> (u32, u32) {
        let server = addr(SERVER);
        let reply = self.send(&tcp(client, server, isn, None, "S", &[], &syn_options()));
        assert_eq!(reply.len(), 1, "{reply:?} ({})", self.in_note);
        let synack = reply[0].seg();
        assert!(synack.syn && synack.ack_flag);
        assert_eq!(synack.ack, isn.wrapping_add(1));
        let (seq, ack) = (isn.wrapping_add(1), synack.seq.wrapping_add(1));
        let none = self.send(&tcp(client, server, seq, Some(ack), "A", &[], &[]));
        assert!(none.is_empty(), "{none:?}");
        (seq, ack)
    }
}

fn get(host: &str, close: bool) -> Vec<u8> {
    format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\n{}\r\n",
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes()
}

#[test]
fn a_syn_is_answered_and_the_handshake_noted_on_each_packet() {
    let mut h = Harness::new(|_| {});
    let client = addr("10.77.0.1:40000");
    let reply = h.send(&tcp(
        client,
        addr(SERVER),
        1000,
        None,
        "S",
        &[],
        &syn_options(),
    ));
    assert!(
        h.in_note.contains("SYN, handshake 1/3, ISN 1000"),
        "{}",
        h.in_note
    );
    assert!(
        h.in_note
            .contains("LISTEN -> SYN-RECEIVED (SYN queue 1/2048)"),
        "{}",
        h.in_note
    );
    let synack = reply[0].seg();
    assert!(
        reply[0].note.contains("SYN-ACK, handshake 2/3"),
        "{}",
        reply[0].note
    );
    assert_eq!(
        synack.options.window_scale,
        Some(1),
        "64 KiB needs a scale of 1"
    );
    let ack = tcp(
        client,
        addr(SERVER),
        1001,
        Some(synack.seq + 1),
        "A",
        &[],
        &[],
    );
    assert!(h.send(&ack).is_empty());
    assert!(h.in_note.contains("handshake 3/3"), "{}", h.in_note);
    assert!(
        h.in_note.contains("SYN-RECEIVED -> ESTABLISHED"),
        "{}",
        h.in_note
    );
    assert_eq!(h.node.active(), 1, "the server took it");
}

#[test]
fn a_request_is_served_and_acked_in_the_same_turn() {
    let mut h = Harness::new(|_| {});
    let client = addr("10.77.0.1:40001");
    let (seq, ack) = h.connect(client, 5000);
    let req = get("x", false);
    let reply = h.send(&tcp(client, addr(SERVER), seq, Some(ack), "PA", &req, &[]));
    let data: u32 = reply.iter().map(|s| s.seg().payload_len).sum();
    assert!(data > 1000, "the page went out at once: {reply:?}");
    assert_eq!(
        reply[0].seg().ack,
        seq + req.len() as u32,
        "and it ACKs the request"
    );
}

#[test]
fn a_full_accept_queue_drops_syns_and_a_retransmission_gets_in_later() {
    let mut h = Harness::new(|c| {
        c.backlog = 1;
        c.max_conns = 1;
        c.timeouts.idle = std::time::Duration::from_secs(5);
    });
    let server = addr(SERVER);
    // One served, one established and waiting: the accept queue is full.
    h.connect(addr("10.77.0.1:41000"), 100);
    h.connect(addr("10.77.0.1:41001"), 200);
    let late = addr("10.77.0.1:41002");
    let syn = tcp(late, server, 300, None, "S", &[], &syn_options());
    assert!(h.send(&syn).is_empty(), "dropped, never refused");
    assert!(
        h.in_note.contains("accept queue full (1/1)"),
        "{}",
        h.in_note
    );
    assert_eq!(h.node.counters().syn_dropped, 1);
    // The served one idles out (408 and close): the waiting one is taken, room again.
    h.advance(Duration::from_secs(6));
    let reply = h.send(&syn);
    assert_eq!(reply.len(), 1, "the retransmitted SYN is answered");
    assert!(reply[0].seg().syn && reply[0].seg().ack_flag);
}

#[test]
fn a_half_open_flood_gets_cookies_and_a_real_client_still_connects() {
    let mut h = Harness::new(|c| c.syn_backlog = 16);
    let server = addr(SERVER);
    for i in 0..1000u16 {
        let spoofed = SocketAddrV4::new("10.77.0.50".parse().unwrap(), 1024 + i);
        let reply = h.send(&tcp(
            spoofed,
            server,
            u32::from(i) * 7,
            None,
            "S",
            &[],
            &syn_options(),
        ));
        assert_eq!(reply.len(), 1, "every SYN gets a SYN-ACK");
    }
    assert_eq!(
        h.node.connections().0,
        16,
        "only the SYN queue's worth is kept"
    );
    assert_eq!(h.node.counters().syn_cookies_sent, 984);
    // A real client: its SYN gets a cookie, its ACK returns it, it is served.
    let client = addr("10.77.0.1:42000");
    let reply = h.send(&tcp(client, server, 9000, None, "S", &[], &syn_options()));
    assert!(h.in_note.contains("SYN cookie"), "{}", h.in_note);
    assert!(
        reply[0].note.contains("is a SYN cookie"),
        "{}",
        reply[0].note
    );
    let synack = reply[0].seg();
    assert_eq!(
        synack.options.window_scale,
        Some(1),
        "the cookie SYN-ACK is smoltcp's own"
    );
    let ack = synack.seq.wrapping_add(1);
    let req = get("x", false);
    let reply = h.send(&tcp(client, server, 9001, Some(ack), "PA", &req, &[]));
    assert!(h.in_note.contains("valid SYN cookie"), "{}", h.in_note);
    assert_eq!(h.node.counters().syn_cookies_validated, 1);
    let body: u32 = reply.iter().map(|s| s.seg().payload_len).sum();
    assert!(body > 1000, "the request was served: {reply:?}");
    assert!(
        reply
            .iter()
            .all(|s| s.seg().seq.wrapping_sub(ack) < 1 << 20),
        "in the cookie's sequence space"
    );
    // A forged cookie gets a RST, as a stray ACK would.
    let forged = h.send(&tcp(
        addr("10.77.0.1:42001"),
        server,
        1,
        Some(12345),
        "A",
        &[],
        &[],
    ));
    assert!(forged[0].seg().rst);
    assert_eq!(h.node.counters().syn_cookies_failed, 1);
}

/// A connection the server closes first (`Connection: close`), up to our ACK of its
/// FIN and our own FIN: the server is in TIME-WAIT. Returns (client seq, server seq).
fn close_from_server(h: &mut Harness, client: SocketAddrV4, isn: u32) -> (u32, u32) {
    let server = addr(SERVER);
    let (seq, ack) = h.connect(client, isn);
    let req = get("x", true);
    let reply = h.send(&tcp(client, server, seq, Some(ack), "PA", &req, &[]));
    let seq = seq + req.len() as u32;
    let fin = reply
        .iter()
        .map(Sent::seg)
        .find(|s| s.fin)
        .expect("the server's FIN");
    assert!(
        reply
            .iter()
            .any(|s| s.note.contains("ESTABLISHED -> FIN-WAIT-1")),
        "{reply:?}"
    );
    let server_end = fin.seq + fin.payload_len + 1;
    // Our ACK of everything and our FIN.
    let reply = h.send(&tcp(client, server, seq, Some(server_end), "FA", &[], &[]));
    assert!(h.in_note.contains("TIME-WAIT"), "{}", h.in_note);
    let last = reply.last().expect("the server ACKs our FIN").seg();
    assert_eq!(last.ack, seq + 1);
    (seq + 1, server_end)
}

#[test]
fn time_wait_reacks_a_fin_restarts_and_expires_after_60_s() {
    let mut h = Harness::new(|_| {});
    let client = addr("10.77.0.1:43000");
    let (seq, server_end) = close_from_server(&mut h, client, 1000);
    assert_eq!(
        h.node.connections(),
        (0, 1),
        "the socket is gone; an entry stays"
    );
    h.advance(Duration::from_secs(30));
    // Our FIN again: the entry ACKs it and restarts.
    let reply = h.send(&tcp(
        client,
        addr(SERVER),
        seq - 1,
        Some(server_end),
        "FA",
        &[],
        &[],
    ));
    assert_eq!(reply.len(), 1);
    assert_eq!((reply[0].seg().seq, reply[0].seg().ack), (server_end, seq));
    assert!(
        h.in_note.contains("ACKed again, timer restarted"),
        "{}",
        h.in_note
    );
    h.advance(Duration::from_secs(59));
    assert_eq!(
        h.node.connections().1,
        1,
        "restarted at 30 s: still there at 89 s"
    );
    h.advance(Duration::from_secs(2));
    assert_eq!(h.node.connections().1, 0, "gone at 91 s");
    let kept = h.node.journal_mut().take_kept();
    let events: Vec<_> = kept.events().map(|e| format!("{:?}", e.what)).collect();
    assert!(
        events.iter().any(|e| e.contains("TimeWaitFinAgain")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.contains("TimeWaitEnded") && e.contains("expired")),
        "{events:?}"
    );
}

#[test]
fn a_newer_syn_into_time_wait_opens_a_new_connection_beyond_the_old_one() {
    let mut h = Harness::new(|_| {});
    let client = addr("10.77.0.1:43001");
    let (seq, server_end) = close_from_server(&mut h, client, 1000);
    let reply = h.send(&tcp(
        client,
        addr(SERVER),
        seq + 100_000,
        None,
        "S",
        &[],
        &syn_options(),
    ));
    assert!(h.in_note.contains("RFC 6191"), "{}", h.in_note);
    let synack = reply[0].seg();
    assert!(synack.syn && synack.ack_flag);
    assert_eq!(
        synack.seq,
        server_end.wrapping_add(65_537),
        "the ISN Linux would pick"
    );
    // An old SYN (below the old connection's end) only gets the entry's ACK.
    let client2 = addr("10.77.0.1:43002");
    let (seq2, _) = close_from_server(&mut h, client2, 5000);
    let reply = h.send(&tcp(
        client2,
        addr(SERVER),
        seq2 - 10,
        None,
        "S",
        &[],
        &syn_options(),
    ));
    assert!(
        !reply[0].seg().syn,
        "no new connection for an old SYN: {reply:?}"
    );
}

#[test]
fn a_rst_in_the_window_ends_time_wait_and_the_cap_skips_it() {
    let mut h = Harness::new(|c| c.max_time_wait = 1);
    let client = addr("10.77.0.1:43003");
    let (seq, _) = close_from_server(&mut h, client, 1000);
    assert!(
        h.send(&tcp(client, addr(SERVER), seq, None, "R", &[], &[]))
            .is_empty()
    );
    assert_eq!(h.node.connections().1, 0);
    assert_eq!(h.node.counters().time_wait_reset, 1);
    close_from_server(&mut h, addr("10.77.0.1:43004"), 1000);
    close_from_server(&mut h, addr("10.77.0.1:43005"), 1000);
    assert!(h.in_note.contains("TIME-WAIT skipped"), "{}", h.in_note);
    assert_eq!(h.node.connections().1, 1, "the cap holds");
    assert_eq!(h.node.counters().time_wait_skipped, 1);
}

#[test]
fn rfc_5961_challenges_a_blind_rst_and_syn_and_takes_the_exact_rst() {
    let mut h = Harness::new(|_| {});
    let client = addr("10.77.0.1:44000");
    let server = addr(SERVER);
    let (seq, ack) = h.connect(client, 1000);
    // In the window, not at RCV.NXT: a challenge ACK, the connection lives.
    let reply = h.send(&tcp(client, server, seq + 100, None, "R", &[], &[]));
    assert_eq!(reply.len(), 1, "{}", h.in_note);
    let c = reply[0].seg();
    assert!(!c.rst && c.ack_flag);
    assert_eq!((c.seq, c.ack), (ack, seq), "<SEQ=SND.NXT><ACK=RCV.NXT>");
    assert!(reply[0].note.contains("challenge ACK"), "{}", reply[0].note);
    assert_eq!(h.node.active(), 1);
    // A SYN on the synchronized connection: a challenge too (once the connection's
    // 500 ms between challenge ACKs has passed).
    h.advance(Duration::from_millis(500));
    let reply = h.send(&tcp(client, server, 77, None, "S", &[], &syn_options()));
    assert!(reply[0].seg().ack_flag && !reply[0].seg().syn);
    assert!(h.in_note.contains("RFC 5961 §4.2"), "{}", h.in_note);
    // Outside the window: nothing.
    assert!(
        h.send(&tcp(client, server, seq + 10_000_000, None, "R", &[], &[]))
            .is_empty()
    );
    // Exactly at RCV.NXT: the connection is reset.
    h.send(&tcp(client, server, seq, None, "R", &[], &[]));
    assert_eq!(h.node.active(), 0);
    assert_eq!(h.node.connections().0, 0);
    assert_eq!(h.node.counters().challenge_acks, 2);
}

#[test]
fn a_challenge_ack_in_syn_received_offers_the_window_in_scaled_form() {
    let mut h = Harness::new(|_| {});
    let client = addr("10.77.0.1:44002");
    let server = addr(SERVER);
    let reply = h.send(&tcp(client, server, 1000, None, "S", &[], &syn_options()));
    let synack = reply[0].seg();
    let scale = synack.options.window_scale.expect("we offer a scale");
    assert!(scale > 0, "the default buffer needs one");
    // In the window, not at RCV.NXT, before the handshake's ACK: a challenge ACK whose
    // window field is read scaled, so it must not repeat the SYN-ACK's unscaled one.
    let reply = h.send(&tcp(client, server, 1001 + 100, None, "R", &[], &[]));
    assert_eq!(reply.len(), 1, "{}", h.in_note);
    let c = reply[0].seg();
    assert!(c.ack_flag && !c.rst && !c.syn);
    assert_eq!(c.window, synack.window >> scale, "RFC 7323 §2.2");
}

#[test]
fn challenge_acks_are_rate_limited_per_connection_and_in_all() {
    let mut h = Harness::new(|_| {});
    let server = addr(SERVER);
    let client = addr("10.77.0.1:44001");
    let (seq, _) = h.connect(client, 1000);
    let blind_rst = |h: &mut Harness, client, seq: u32, i: u32| {
        h.send(&tcp(client, server, seq + 1 + i % 100, None, "R", &[], &[]))
            .len()
    };
    // One connection: one challenge ACK per 500 ms, as Linux's tcp_invalid_ratelimit.
    let sent: usize = (0..3000).map(|i| blind_rst(&mut h, client, seq, i)).sum();
    assert_eq!(sent, 1);
    assert!(
        h.in_note.contains("per 500 ms on a connection"),
        "{}",
        h.in_note
    );
    h.advance(Duration::from_millis(500));
    assert_eq!(
        blind_rst(&mut h, client, seq, 0),
        1,
        "500 ms later, another"
    );
    assert_eq!(h.node.active(), 1, "none of them reset it");
    // Many connections: all of them together get at most the global budget a second.
    let per_sec = limits::CHALLENGE_ACKS_PER_SEC as usize;
    let clients: Vec<_> = (0..per_sec as u16 + 200)
        .map(|i| {
            let c = SocketAddrV4::new([10, 77, 0, 1].into(), 10_000 + i);
            (c, h.connect(c, 1000).0)
        })
        .collect();
    let sent: usize = clients
        .iter()
        .map(|&(c, seq)| blind_rst(&mut h, c, seq, 0))
        .sum();
    assert!(
        sent <= per_sec && sent >= per_sec - 2,
        "{sent} challenge ACKs in the same instant"
    );
    assert!(h.in_note.contains("/s"), "{}", h.in_note);
}

#[test]
fn every_second_full_segment_is_acked_at_once() {
    let mut h = Harness::new(|_| {});
    let client = addr("10.77.0.1:45000");
    let server = addr(SERVER);
    let (mut seq, ack) = h.connect(client, 1000);
    let body = vec![b'x'; 20 * 1460];
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    h.send(&tcp(
        client,
        server,
        seq,
        Some(ack),
        "PA",
        head.as_bytes(),
        &[],
    ));
    seq += head.len() as u32;
    let mut acks = 0;
    for chunk in body.chunks(1460) {
        let reply = h.send(&tcp(client, server, seq, Some(ack), "A", chunk, &[]));
        seq += chunk.len() as u32;
        acks += reply.iter().filter(|s| s.seg().ack_flag).count();
    }
    assert!(
        acks >= 10,
        "{acks} ACKs for 20 full segments (RFC 5681 §4.2: at least every second)"
    );
}

#[test]
fn a_peer_that_acks_our_fin_and_never_sends_its_own_is_reset_after_the_fin_timeout() {
    let mut h = Harness::new(|_| {});
    let client = addr("10.77.0.1:46000");
    let (seq, ack) = h.connect(client, 1000);
    let req = get("x", true);
    let seq = seq + req.len() as u32;
    let reply = h.send(&tcp(
        client,
        addr(SERVER),
        seq - req.len() as u32,
        Some(ack),
        "PA",
        &req,
        &[],
    ));
    let fin = reply
        .iter()
        .map(Sent::seg)
        .find(|s| s.fin)
        .expect("our FIN");
    // Everything acknowledged, our FIN included: FIN-WAIT-2, waiting for theirs.
    let end = fin.seq + fin.payload_len + 1;
    h.send(&tcp(client, addr(SERVER), seq, Some(end), "A", &[], &[]));
    assert!(
        h.in_note.contains("FIN-WAIT-1 -> FIN-WAIT-2"),
        "{}",
        h.in_note
    );
    let later = h.advance(Duration::from_secs(59));
    assert!(
        later.is_empty() && h.node.connections() == (1, 0),
        "{later:?}"
    );
    let later = h.advance(Duration::from_secs(2));
    let rst = later.iter().find(|s| s.seg().rst).expect("a RST");
    assert!(rst.note.contains("tcp_fin_timeout"), "{later:?}");
    assert_eq!(h.node.counters().fin_timeouts, 1);
    assert_eq!(h.node.connections(), (0, 0));
}

#[test]
fn a_peer_that_goes_silent_with_our_data_unacked_is_given_up_after_the_user_timeout() {
    let mut h = Harness::new(|_| {});
    let client = addr("10.77.0.1:46001");
    let (seq, ack) = h.connect(client, 1000);
    let req = get("x", true);
    let reply = h.send(&tcp(client, addr(SERVER), seq, Some(ack), "PA", &req, &[]));
    assert!(reply.iter().any(|s| s.seg().fin));
    // Nothing more from the peer: smoltcp retransmits with backoff, and gives up once
    // --timeout (60 s) passes with nothing acknowledged (RFC 9293 §3.8.3).
    let later = h.advance(Duration::from_secs(30));
    assert!(
        later.iter().all(|s| !s.seg().rst),
        "still retransmitting: {later:?}"
    );
    let later = h.advance(Duration::from_secs(40));
    assert!(later.iter().any(|s| s.seg().rst), "{later:?}");
    assert_eq!(
        h.node.counters().fin_timeouts,
        0,
        "not the FIN timeout's doing"
    );
    assert_eq!(h.node.connections(), (0, 0));
}

#[test]
fn closed_ports_answer_every_segment_as_rfc_9293_says() {
    let mut h = Harness::new(|_| {});
    let client = addr("10.77.0.1:47000");
    let closed = addr("10.77.0.2:81");
    for (flags, seq, len, ack) in [
        ("", 100, 0, 100),
        ("FPU", 100, 0, 101),
        ("P", 100, 5, 105),
        ("SF", 100, 0, 102),
        ("S", 7, 0, 8),
    ] {
        let payload = vec![0u8; len];
        let reply = h.send(&tcp(client, closed, seq, None, flags, &payload, &[]));
        let rst = reply[0].seg();
        assert!(rst.rst && rst.ack_flag, "{flags:?}");
        assert_eq!((rst.seq, rst.ack), (0, ack), "{flags:?}");
    }
    let reply = h.send(&tcp(client, closed, 5, Some(99), "A", &[], &[]));
    assert_eq!(
        (
            reply[0].seg().seq,
            reply[0].seg().rst,
            reply[0].seg().ack_flag
        ),
        (99, true, false)
    );
    assert!(
        h.send(&tcp(client, closed, 5, None, "R", &[], &[]))
            .is_empty()
    );
    assert_eq!(h.node.counters().resets_sent, 6);
}

#[test]
fn ping_is_answered_and_fragments_are_put_back_together() {
    let mut h = Harness::new(|_| {});
    let mut ping = Vec::new();
    PacketBuilder::ipv4([10, 77, 0, 1], [10, 77, 0, 2], 64)
        .icmpv4_echo_request(9, 1)
        .write(&mut ping, &[0xab; 56])
        .unwrap();
    let reply = h.send(&ping);
    assert_eq!(reply.len(), 1, "{}", h.in_note);
    assert!(reply[0].note.contains("echo reply"), "{}", reply[0].note);
    assert!(
        h.in_note.contains("echo request, id 9, seq 1"),
        "{}",
        h.in_note
    );
    // A 3000-byte echo request in three fragments, last first.
    let mut big = Vec::new();
    PacketBuilder::ipv4([10, 77, 0, 1], [10, 77, 0, 2], 64)
        .icmpv4_echo_request(9, 2)
        .write(&mut big, &[0xcd; 2972])
        .unwrap();
    let payload = &big[20..];
    let mut frags: Vec<Vec<u8>> = payload
        .chunks(1480)
        .enumerate()
        .map(|(i, chunk)| {
            let mut p = big[..20].to_vec();
            let more = (i + 1) * 1480 < payload.len();
            let total = (20 + chunk.len()) as u16;
            p[2..4].copy_from_slice(&total.to_be_bytes());
            let fo = (i * 1480 / 8) as u16 | if more { 0x2000 } else { 0 };
            p[6..8].copy_from_slice(&fo.to_be_bytes());
            let sum = etherparse::Ipv4Header::from_slice(&p)
                .unwrap()
                .0
                .calc_header_checksum();
            p[10..12].copy_from_slice(&sum.to_be_bytes());
            p.extend_from_slice(chunk);
            p
        })
        .collect();
    frags.reverse();
    assert!(h.send(&frags[0]).is_empty());
    assert!(
        h.in_note.contains("held until the datagram is whole"),
        "{}",
        h.in_note
    );
    assert!(h.send(&frags[1]).is_empty());
    let reply = h.send(&frags[2]);
    assert!(
        h.in_note
            .contains("completes a datagram of 3000 B from 3 fragments"),
        "{}",
        h.in_note
    );
    assert!(
        !reply.is_empty(),
        "the reassembled ping is answered (in fragments)"
    );
    assert_eq!(h.node.counters().fragments_reassembled, 1);
}

#[test]
fn the_seeded_interface_draws_the_isn_we_chose() {
    // A SYN into TIME-WAIT and every cookie rely on it: smoltcp 0.14's generator.
    let mut h = Harness::new(|_| {});
    let client = addr("10.77.0.1:48000");
    let isn = 0x1234_5678;
    let syn = tcp(client, addr(SERVER), 1, None, "S", &[], &syn_options());
    h.node
        .open_passive(h.now, 80, &syn, Segment::parse(&syn).unwrap(), Some(isn))
        .unwrap();
    let reply = h.drain();
    assert_eq!(reply[0].seg().seq, isn);
}

#[test]
fn nagle_is_off_by_default_so_a_two_segment_response_leaves_whole() {
    for (nagle, segments) in [(false, 2), (true, 1)] {
        let mut h = Harness::new(|c| c.knobs.nagle = nagle);
        let client = addr("10.77.0.1:49000");
        let (seq, ack) = h.connect(client, 1000);
        let req = b"GET /bytes/2000 HTTP/1.1\r\nHost: x\r\n\r\n";
        let reply = h.send(&tcp(client, addr(SERVER), seq, Some(ack), "PA", req, &[]));
        let data = reply.iter().filter(|s| s.seg().payload_len > 0).count();
        assert_eq!(
            data, segments,
            "nagle {nagle}: with it on, the short second segment waits for the ACK of the first"
        );
    }
}

/// What smoltcp itself answers to `syn` from a fresh listening socket whose ISN is
/// `isn` (an interface seeded for it).
fn smoltcp_syn_ack(node: &mut Node, now: Instant, syn: &[u8], isn: u32) -> Vec<u8> {
    use smoltcp::socket::tcp;
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; node.cfg.rx_buf]),
        tcp::SocketBuffer::new(vec![0; 1024]),
    );
    socket.listen(80).unwrap();
    let mut set = SocketSet::new(Vec::new());
    set.add(socket);
    let mut iface = interface(&node.cfg, cookie::interface_seed_for_isn(isn), now);
    let mtu = node.cfg.mtu;
    let mut out = device::Output::default();
    iface.poll_ingress_single(
        now,
        &mut device::OnePacket::with(syn, &mut out, mtu),
        &mut set,
    );
    while iface.poll_egress(now, &mut device::OnePacket::empty(&mut out, mtu), &mut set)
        != smoltcp::iface::PollResult::None
    {}
    out.pop().expect("a SYN-ACK").data
}

#[test]
fn a_cookie_syn_ack_is_byte_for_byte_what_smoltcp_writes() {
    let mut h = Harness::new(|c| c.rx_buf = 256 * 1024);
    let client = addr("10.77.0.1:50000");
    for options in [
        syn_options(),
        vec![],
        vec![TcpOptionElement::MaximumSegmentSize(536)],
    ] {
        let syn = tcp(client, addr(SERVER), 4242, None, "S", &[], &options);
        let seg = Segment::parse(&syn).unwrap();
        let isn = 0xdead_beef;
        let ours = {
            let mut buf = Vec::new();
            h.node.cookie_syn_ack(&seg, isn).emit(&mut buf);
            buf
        };
        let now = h.now;
        assert_eq!(
            ours,
            smoltcp_syn_ack(&mut h.node, now, &syn, isn),
            "{options:?}"
        );
    }
}

#[test]
fn the_ack_that_would_overflow_the_accept_queue_is_dropped_and_the_syn_ack_comes_again() {
    let mut h = Harness::new(|c| {
        c.backlog = 1;
        c.max_conns = 1;
    });
    let server = addr(SERVER);
    h.connect(addr("10.77.0.1:51000"), 100);
    // B and C both get their SYN-ACKs while the accept queue is empty.
    let (b, c) = (addr("10.77.0.1:51001"), addr("10.77.0.1:51002"));
    let b_synack = h.send(&tcp(b, server, 200, None, "S", &[], &syn_options()))[0].seg();
    let c_synack = h.send(&tcp(c, server, 300, None, "S", &[], &syn_options()))[0].seg();
    assert!(
        h.send(&tcp(b, server, 201, Some(b_synack.seq + 1), "A", &[], &[]))
            .is_empty()
    );
    // B waits in the accept queue (1/1): C's handshake cannot complete now.
    assert!(
        h.send(&tcp(c, server, 301, Some(c_synack.seq + 1), "A", &[], &[]))
            .is_empty()
    );
    assert!(
        h.in_note.contains("the accept queue is full"),
        "{}",
        h.in_note
    );
    assert_eq!(h.node.counters().accept_queue_overflows, 1);
    // smoltcp, still in SYN-RECEIVED, sends its SYN-ACK again.
    let later = h.advance(Duration::from_millis(1100));
    assert!(
        later
            .iter()
            .any(|s| s.seg().syn && s.seg().ack_flag && s.seg().dst == c),
        "{later:?}"
    );
}

#[test]
fn a_datagram_for_an_applications_udp_socket_is_named_as_such_and_not_refused() {
    let mut h = Harness::new(|_| {});
    let id = h.node.app_udp_bind(5000).unwrap();
    let udp = |port: u16| {
        let mut out = Vec::new();
        PacketBuilder::ipv4([10, 77, 0, 1], [10, 77, 0, 2], 64)
            .udp(40000, port)
            .write(&mut out, b"hello")
            .unwrap();
        out
    };
    let reply = h.send(&udp(5000));
    assert!(reply.is_empty(), "no ICMP port unreachable: {reply:?}");
    assert!(h.in_note.contains("for a socket of ours"), "{}", h.in_note);
    let mut buf = [0; 16];
    let (n, from) = h.node.app_udp_recv(id, &mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"hello"[..], addr("10.77.0.1:40000")));
    // Another port: nobody's, refused and said so.
    let reply = h.send(&udp(5001));
    assert_eq!(reply.len(), 1, "ICMP port unreachable");
    assert!(h.in_note.contains("nothing listens"), "{}", h.in_note);
}

#[test]
fn a_long_accept_queue_is_served_in_a_loop_not_by_recursion() {
    // One place to serve, 2000 connections waiting with their requests already in.
    // Freeing the place serves them one after another; each one served frees the place
    // again. Done by recursion, that is 2000 nested turns: more than a thread's stack.
    const WAITING: u16 = 2000;
    let mut h = Harness::new(|c| {
        c.max_conns = 1;
        c.backlog = usize::from(WAITING) + 1;
    });
    let server = addr(SERVER);
    let first = addr("10.77.0.1:20000");
    let (seq0, ack0) = h.connect(first, 1);
    for i in 1..=WAITING {
        let client = SocketAddrV4::new([10, 77, 0, 1].into(), 20000 + i);
        let (seq, ack) = h.connect(client, 1);
        let req = get("x", true);
        let reply = h.send(&tcp(client, server, seq, Some(ack), "PA", &req, &[]));
        assert!(
            reply.iter().all(|s| s.seg().payload_len == 0),
            "{client} waits in the accept queue"
        );
    }
    let req = get("x", true);
    let reply = h.send(&tcp(first, server, seq0, Some(ack0), "PA", &req, &[]));
    let served = reply.iter().filter(|s| s.seg().fin).count();
    assert_eq!(
        served,
        usize::from(WAITING) + 1,
        "each connection was served and closed"
    );
}

#[test]
fn packets_no_peer_can_send_are_dropped_counted_and_said() {
    let mut h = Harness::new(|_| {});
    let server = addr(SERVER);
    // A LAND SYN (from our own address and port), and SYNs from the subnet's network and
    // broadcast addresses: nothing answers, nothing is kept.
    for src in ["10.77.0.2:80", "10.77.0.0:40000", "10.77.0.255:40000"] {
        let reply = h.send(&tcp(addr(src), server, 1, None, "S", &[], &syn_options()));
        assert!(reply.is_empty(), "{src}: {reply:?}");
        assert!(h.in_note.contains("martian source"), "{}", h.in_note);
    }
    assert_eq!(h.node.counters().dropped_martian, 3);
    assert_eq!(h.node.connections(), (0, 0));
    // A bad IPv4 header checksum, and a total length past what came.
    let mut bad = tcp(addr("10.77.0.1:40000"), server, 1, None, "S", &[], &[]);
    bad[10] ^= 0x40;
    assert!(h.send(&bad).is_empty());
    assert!(
        h.in_note.contains("bad IPv4 header checksum"),
        "{}",
        h.in_note
    );
    assert_eq!(h.node.counters().dropped_checksum, 1);
    let short = tcp(addr("10.77.0.1:40000"), server, 1, None, "S", &[], &[]);
    assert!(h.send(&short[..30]).is_empty());
    assert!(
        h.in_note.contains("total length 40 B but 30 B came"),
        "{}",
        h.in_note
    );
}

#[test]
fn a_listening_port_drops_what_has_neither_syn_ack_nor_rst() {
    let mut h = Harness::new(|_| {});
    let client = addr("10.77.0.1:40100");
    for flags in ["F", "", "P", "U", "FPU"] {
        let reply = h.send(&tcp(client, addr(SERVER), 7, None, flags, &[], &[]));
        assert!(reply.is_empty(), "{flags:?}: {reply:?}");
        assert!(h.in_note.contains("RFC 9293 §3.10.7.2"), "{}", h.in_note);
    }
    // A closed port still answers them (RFC 9293 §3.10.7.1).
    let reply = h.send(&tcp(client, addr("10.77.0.2:81"), 7, None, "F", &[], &[]));
    assert!(reply[0].seg().rst);
}

#[test]
fn a_corrupted_segment_is_counted_and_changes_nothing() {
    let mut h = Harness::new(|_| {});
    let client = addr("10.77.0.1:43010");
    let server = addr(SERVER);
    let (seq, _) = close_from_server(&mut h, client, 1000);
    // The exact RST that would end TIME-WAIT, with one bit flipped in transit.
    let mut rst = tcp(client, server, seq, None, "R", &[], &[]);
    let last = rst.len() - 1;
    rst[last] ^= 0x01;
    assert!(h.send(&rst).is_empty());
    assert!(h.in_note.contains("bad TCP checksum"), "{}", h.in_note);
    assert_eq!(h.node.connections().1, 1, "TIME-WAIT stays");
    // On an established connection too: counted and said, not silently gone.
    let client = addr("10.77.0.1:43011");
    let (seq, ack) = h.connect(client, 1000);
    let mut data = tcp(client, server, seq, Some(ack), "PA", &get("x", false), &[]);
    data[40] ^= 0x01;
    assert!(h.send(&data).is_empty());
    assert!(h.in_note.contains("bad TCP checksum"), "{}", h.in_note);
    assert_eq!(h.node.counters().dropped_checksum, 2);
}

#[test]
fn a_new_syn_into_time_wait_with_no_listener_gets_the_entrys_ack() {
    let mut h = Harness::new(|_| {});
    let peer = addr("10.77.0.1:9000");
    let id = h
        .node
        .app_connect(h.now, Some(5555), peer, h.node.cfg.socket_options())
        .unwrap();
    let syn = h.drain()[0].seg();
    let us = addr("10.77.0.2:5555");
    h.send(&tcp(peer, us, 100, Some(syn.seq + 1), "SA", &[], &[]));
    h.node.app_close(h.now, id, false);
    let fin = h.drain().iter().map(Sent::seg).find(|s| s.fin).unwrap();
    h.send(&tcp(peer, us, 101, Some(fin.seq + 1), "FA", &[], &[]));
    assert_eq!(h.node.connections().1, 1, "we closed first: TIME-WAIT");
    // A SYN beyond the old connection, but nothing listens on 5555: the entry answers.
    let reply = h.send(&tcp(peer, us, 100_000, None, "S", &[], &syn_options()));
    assert_eq!(reply.len(), 1, "{}", h.in_note);
    let ack = reply[0].seg();
    assert!(ack.ack_flag && !ack.syn && !ack.rst, "{ack:?}");
    assert_eq!(h.node.connections().1, 1, "and stays");
}

#[test]
fn a_second_syn_in_syn_received_does_not_move_rcv_nxt() {
    let mut h = Harness::new(|_| {});
    let client = addr("10.77.0.1:44010");
    let server = addr(SERVER);
    let reply = h.send(&tcp(client, server, 1000, None, "S", &[], &syn_options()));
    let ours = reply[0].seg().seq;
    // A SYN with another ISN on the same 4-tuple (a spoof, or a confused peer).
    h.send(&tcp(client, server, 5000, None, "S", &[], &syn_options()));
    // The real peer completes the handshake, then resets exactly at RCV.NXT.
    h.send(&tcp(client, server, 1001, Some(ours + 1), "A", &[], &[]));
    assert_eq!(h.node.connections().0, 1);
    h.send(&tcp(client, server, 1001, None, "R", &[], &[]));
    assert!(!h.in_note.contains("challenge"), "{}", h.in_note);
    assert_eq!(h.node.connections().0, 0, "the RST at RCV.NXT ends it");
}

#[test]
fn the_listeners_take_turns_at_a_freed_place() {
    let mut h = Harness::new(|c| {
        c.max_conns = 1;
        c.https_port = Some(443);
    });
    let server = addr(SERVER);
    let first = addr("10.77.0.1:21000");
    let (seq0, ack0) = h.connect(first, 1);
    // Three HTTP connections wait with their requests in, then one HTTPS connection.
    for i in 1..=3 {
        let client = SocketAddrV4::new([10, 77, 0, 1].into(), 21000 + i);
        let (seq, ack) = h.connect(client, 1);
        h.send(&tcp(
            client,
            server,
            seq,
            Some(ack),
            "PA",
            &get("x", true),
            &[],
        ));
    }
    let tls_client = addr("10.77.0.1:21009");
    let reply = h.send(&tcp(
        tls_client,
        addr("10.77.0.2:443"),
        1,
        None,
        "S",
        &[],
        &syn_options(),
    ));
    let ours = reply[0].seg().seq;
    h.send(&tcp(
        tls_client,
        addr("10.77.0.2:443"),
        2,
        Some(ours + 1),
        "A",
        &[],
        &[],
    ));
    // The place frees: one HTTP connection is served, then HTTPS has its turn (and keeps
    // the place, waiting for its ClientHello) before the other two.
    let reply = h.send(&tcp(
        first,
        server,
        seq0,
        Some(ack0),
        "PA",
        &get("x", true),
        &[],
    ));
    let fins = reply.iter().filter(|s| s.seg().fin).count();
    assert_eq!(
        fins, 2,
        "the first and one waiting HTTP connection, then HTTPS's turn"
    );
}

/// A client that asks for `bytes` with Connection: close and then offers a zero window,
/// answering every probe. Returns what it needs to go on answering.
fn zero_window_reader(h: &mut Harness, client: SocketAddrV4, bytes: u32) -> (u32, u32) {
    let server = addr(SERVER);
    let (seq, ack) = h.connect(client, 1);
    let req = format!("GET /bytes/{bytes} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let seq = seq + req.len() as u32;
    h.send(&tcp_window(
        client,
        server,
        seq - req.len() as u32,
        Some(ack),
        "PA",
        req.as_bytes(),
        &[],
        0,
    ));
    (seq, ack)
}

/// Moves time on by `d` in steps, the zero-window client acknowledging whatever came
/// with window 0 (so it is never silent). Returns the RSTs the server sent.
fn stay_at_zero_window(h: &mut Harness, client: SocketAddrV4, seq: u32, d: Duration) -> usize {
    let server = addr(SERVER);
    let mut rsts = 0;
    let end = h.now + d;
    let mut acked = None;
    while h.now < end {
        for s in h.advance(Duration::from_millis(500)) {
            let seg = s.seg();
            if seg.tuple(crate::observe::Direction::Out).remote != client {
                continue;
            }
            if seg.rst {
                rsts += 1;
            } else {
                // A probe's byte is not taken: the window is 0.
                acked = Some(acked.map_or(seg.seq, |a: u32| a.max(seg.seq)));
            }
        }
        if let Some(a) = acked {
            h.send(&tcp_window(client, server, seq, Some(a), "A", &[], &[], 0));
        }
    }
    rsts
}

#[test]
fn a_reader_at_zero_window_for_ever_is_reset_after_the_send_timeout() {
    let mut h = Harness::new(|_| {});
    let client = addr("10.77.0.1:45000");
    let (seq, _) = zero_window_reader(&mut h, client, 100_000);
    // The whole response fits the send buffer: the server has closed (FIN-WAIT-1), the
    // bytes and the FIN wait for a window that never opens.
    assert_eq!(h.node.connections().0, 1);
    assert_eq!(
        stay_at_zero_window(&mut h, client, seq, Duration::from_secs(50)),
        0
    );
    assert_eq!(h.node.connections().0, 1, "still there at 50 s");
    assert_eq!(
        stay_at_zero_window(&mut h, client, seq, Duration::from_secs(15)),
        1
    );
    assert_eq!(h.node.connections().0, 0, "reset after the send timeout");
    assert_eq!(h.node.counters().send_timeouts, 1);
}

#[test]
fn closing_connections_are_bounded_like_linuxs_orphans() {
    let mut h = Harness::new(|c| c.max_closing = 2);
    for i in 0..3 {
        zero_window_reader(
            &mut h,
            SocketAddrV4::new([10, 77, 0, 1].into(), 45100 + i),
            100_000,
        );
    }
    assert_eq!(
        h.node.counters().closing_reset,
        1,
        "the third one closed past the bound"
    );
    assert_eq!(h.node.connections().0, 2);
}

#[test]
fn stale_timer_entries_do_not_pile_up_under_a_trickle() {
    // Request heads a byte at a time: each byte arms smoltcp's delayed ACK (earlier than
    // the request's deadline), and each time it fires the request's deadline is
    // scheduled again. Without sweeping, one stale entry a byte.
    const CONNS: u16 = 20;
    let mut h = Harness::new(|_| {});
    let server = addr(SERVER);
    let mut conns: Vec<_> = (0..CONNS)
        .map(|i| {
            let c = SocketAddrV4::new([10, 77, 0, 1].into(), 46000 + i);
            let (seq, ack) = h.connect(c, 1);
            (c, seq, ack)
        })
        .collect();
    for _ in 0..600 {
        for (c, seq, ack) in &mut conns {
            h.send(&tcp(*c, server, *seq, Some(*ack), "PA", b"a", &[]));
            *seq += 1;
        }
        h.advance(Duration::from_millis(15));
    }
    assert_eq!(
        h.node.connections().0,
        usize::from(CONNS),
        "within the request timeout"
    );
    let owners = usize::from(CONNS) + 1;
    assert!(
        h.node.timers.len() <= 2 * owners + 1024,
        "{} timer entries for {CONNS} connections",
        h.node.timers.len()
    );
}

#[test]
fn the_fin_timeout_waits_for_the_application_to_let_go() {
    let mut h = Harness::new(|_| {});
    let peer = addr("10.77.0.1:9001");
    let us = addr("10.77.0.2:5556");
    // A user timeout longer than the test, so that only the FIN timeout can act.
    let mut opts = h.node.cfg.socket_options();
    opts.knobs.timeout = std::time::Duration::from_secs(3600);
    let id = h.node.app_connect(h.now, Some(5556), peer, opts).unwrap();
    let syn = h.drain()[0].seg();
    h.send(&tcp(peer, us, 100, Some(syn.seq + 1), "SA", &[], &[]));
    // shutdown(SHUT_WR): our FIN, which the peer acknowledges and never answers.
    h.node.app_shutdown(h.now, id).unwrap();
    let fin = h.drain().iter().map(Sent::seg).find(|s| s.fin).unwrap();
    h.send(&tcp(peer, us, 101, Some(fin.seq + 1), "A", &[], &[]));
    h.advance(Duration::from_secs(70));
    assert_eq!(
        h.node.connections().0,
        1,
        "the application still reads: no FIN timeout"
    );
    h.node.app_close(h.now, id, false);
    h.advance(Duration::from_secs(59));
    assert_eq!(h.node.connections().0, 1, "59 s after close");
    h.advance(Duration::from_secs(2));
    assert_eq!(
        h.node.connections().0,
        0,
        "reset 60 s after close, as Linux's orphans"
    );
    assert_eq!(h.node.counters().fin_timeouts, 1);
}

/// Found by fuzz/node (fuzz/regressions/node/): a dropped node kept its socket buffers
/// mapped, those of its open connections included, so a process making many nodes ran
/// out of address space.
#[test]
fn a_dropped_node_unmaps_the_buffers_of_its_open_connections() {
    let mut h = Harness::new(|_| {});
    h.connect(addr("10.77.0.1:40100"), 7000);
    let slot = h.node.conns.slots()[0];
    let conn = h.node.conns.get(slot).expect("the connection");
    let regions = [
        conn.rx.as_ref().expect("a receive buffer").as_ptr(),
        conn.tx.as_ref().expect("a send buffer").as_ptr(),
    ];
    let mapped = |p: *const u8| {
        let mut v = [0u8; 1];
        // SAFETY: mincore only reads the mapping table; `p` is page-aligned.
        unsafe { libc::mincore(p as *mut libc::c_void, 1, v.as_mut_ptr()) == 0 }
    };
    assert!(regions.iter().all(|&p| mapped(p)));
    drop(h);
    assert!(
        regions.iter().all(|&p| !mapped(p)),
        "the open connection's buffers are unmapped with the node"
    );
}

#[test]
fn a_fin_beyond_the_receive_window_is_not_taken_and_the_data_inside_is() {
    // smoltcp 0.14 would cut the data at the window's edge and still take the FIN: the
    // connection would close with the rest of the request lost.
    let mut h = Harness::new(|c| c.rx_buf = 1024);
    let client = addr("10.77.0.1:40000");
    let server = addr(SERVER);
    let (seq, ack) = h.connect(client, 1000);
    let request = format!(
        "GET /?{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a".repeat(1400)
    )
    .into_bytes();
    let reply = h.send(&tcp(client, server, seq, Some(ack), "FPA", &request, &[]));
    assert!(
        h.in_note.contains("FIN beyond our receive window"),
        "{}",
        h.in_note
    );
    assert_eq!(h.node.counters().fins_beyond_window, 1);
    let acks: Vec<u32> = reply.iter().map(|s| s.seg().ack).collect();
    assert_eq!(
        acks.last(),
        Some(&seq.wrapping_add(1024)),
        "the window's 1024 bytes acknowledged, not the FIN: {reply:?}"
    );
    // The rest, and the FIN again: the request is whole and answered.
    let rest = &request[1024..];
    let reply = h.send(&tcp(
        client,
        server,
        seq.wrapping_add(1024),
        Some(ack),
        "FPA",
        rest,
        &[],
    ));
    let last = reply.last().expect("an answer").seg();
    assert_eq!(
        last.ack,
        seq.wrapping_add(request.len() as u32 + 1),
        "everything and the FIN acknowledged: {reply:?}"
    );
    assert!(
        reply.iter().any(|s| s.seg().payload_len > 0),
        "the request is answered: {reply:?}"
    );
}

#[test]
fn a_connection_rebuilt_from_a_cookie_scales_the_peers_window() {
    // The ACK that returns a cookie says its window in units of 2^7 (its SYN's scale,
    // which the cookie carried): 20 means 2560 B. Read unscaled, a retransmission of the
    // response would be cut to 20 B.
    let mut h = Harness::new(|c| c.syn_backlog = 1);
    let server = addr(SERVER);
    h.send(&tcp(
        addr("10.77.0.50:1024"),
        server,
        1,
        None,
        "S",
        &[],
        &syn_options(),
    ));
    let client = addr("10.77.0.1:42000");
    let reply = h.send(&tcp(client, server, 9000, None, "S", &[], &syn_options()));
    assert!(reply[0].note.contains("is a SYN cookie"), "{reply:?}");
    let ack = reply[0].seg().seq.wrapping_add(1);
    let req = b"GET /bytes/1000 HTTP/1.1\r\nHost: x\r\n\r\n";
    let reply = h.send(&tcp_window(
        client,
        server,
        9001,
        Some(ack),
        "PA",
        req,
        &[],
        20,
    ));
    assert_eq!(h.node.counters().syn_cookies_validated, 1);
    let first = reply
        .iter()
        .map(|s| s.seg())
        .find(|s| s.payload_len > 0)
        .expect("the response");
    assert!(first.payload_len > 1000, "{first:?}");
    // Not acknowledged: the retransmission timer sends it again, whole.
    let again = h.advance(Duration::from_secs(2));
    let resent = again
        .iter()
        .map(|s| s.seg())
        .find(|s| s.payload_len > 0)
        .expect("a retransmission");
    assert_eq!(resent.seq, first.seq);
    assert_eq!(
        resent.payload_len,
        first.payload_len,
        "{:?}",
        again.iter().map(|s| &s.note).collect::<Vec<_>>()
    );
    assert_eq!(h.node.counters().segments_cut_to_window, 0);
}
