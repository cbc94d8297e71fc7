//! Two synack nodes on a virtual clock (the `Pair`), no root: the stack at scale and the
//! shape of slow start, checked on what crossed the link.

mod common;

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;

use common::*;
use smoltcp::time::Duration;
use synack::app::App;
use synack::clock::VIRTUAL_EPOCH;
use synack::driver::Edge;
use synack::driver::pair::Pair;
use synack::journey::Journal;
use synack::link::{FaultConfig, Link};
use synack::node::{Config, Node};
use synack::session::{ClientRequest, ClientSession, Outcome};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

fn pair(
    server: impl FnOnce(&mut Config),
    client: impl FnOnce(&mut Config),
    faults: FaultConfig,
    capture: Option<synack::capture::Capture>,
) -> Pair {
    let mut s = Config {
        addr: SERVER,
        gateway: CLIENT,
        dns_port: None,
        notes: capture.is_some(),
        seed: 1,
        ..Config::default()
    };
    server(&mut s);
    let mut c = Config {
        addr: CLIENT,
        gateway: SERVER,
        listen: false,
        dns_port: None,
        notes: false,
        seed: 2,
        ..Config::default()
    };
    client(&mut c);
    let server = Node::new(s, App::default(), Journal::keeping("server"), VIRTUAL_EPOCH).unwrap();
    let client = Node::new(c, App::default(), Journal::silent(), VIRTUAL_EPOCH).unwrap();
    Pair::new(
        Edge::new(client, None),
        Edge::new(server, capture),
        Link::new(faults),
        VIRTUAL_EPOCH,
    )
}

/// Opens a connection from the client node that GETs `target` once and closes.
fn get(pair: &mut Pair, target: &str) -> Rc<RefCell<Outcome>> {
    let now = pair.now();
    let mut shared = None;
    let request = ClientRequest::get("x", target);
    pair.client
        .node
        .connect(now, SocketAddrV4::new(SERVER, 80), |id, now| {
            let (session, outcome) =
                ClientSession::new(id, vec![request], None, Box::new(|_, _| Ok(())), now);
            shared = Some(outcome);
            Box::new(session)
        })
        .unwrap();
    shared.unwrap()
}

fn done(o: &Rc<RefCell<Outcome>>) -> bool {
    let o = o.borrow();
    !o.exchanges.is_empty() && o.exchanges.iter().all(|e| e.complete) || o.error.is_some()
}

#[test]
fn ten_thousand_connections_open_are_served_and_close() {
    let mut pair = pair(|_| {}, |_| {}, FaultConfig::default(), None);
    let outcomes: Vec<_> = (0..10_000).map(|_| get(&mut pair, "/")).collect();
    pair.run_until(Duration::from_secs(60), |_| outcomes.iter().all(done))
        .unwrap();
    for o in &outcomes {
        let o = o.borrow();
        assert_eq!(o.error, None);
        assert_eq!(o.exchanges[0].head.as_ref().unwrap().status, 200);
    }
    assert_eq!(pair.server.node.counters().connections, 10_000);
    assert_eq!(pair.server.node.counters().syn_dropped, 0);
    // The clients closed first: 10,000 in TIME-WAIT on their side, none on the server's,
    // whose sockets are all given back.
    pair.run_for(Duration::from_secs(1)).unwrap();
    assert_eq!(pair.server.node.connections(), (0, 0));
    assert_eq!(pair.client.node.connections(), (0, 10_000));
    pair.run_for(Duration::from_secs(61)).unwrap();
    assert_eq!(pair.client.node.connections(), (0, 0), "TIME-WAIT ends");
    let (resident, _) = pair.server.node.buffer_memory();
    assert_eq!(resident, 0, "every buffer page went back to the kernel");
}

/// Data segments the server sent in each round trip of `rtt`, from its first.
fn flights(pkts: &[Pkt], rtt_ns: u128) -> Vec<usize> {
    let data: Vec<&Pkt> = pkts
        .iter()
        .filter(|p| !p.inbound && p.tcp.is_some_and(|t| t.len > 0))
        .collect();
    let start = data[0].ts_ns;
    let mut rounds = vec![0usize; 8];
    for p in data {
        let r = ((p.ts_ns - start) / rtt_ns) as usize;
        if r < rounds.len() {
            rounds[r] += 1;
        }
    }
    rounds
}

fn slow_start(ack_delay: Option<std::time::Duration>, tag: &str) -> Vec<usize> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-runs")
        .join(format!("pair-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("slow-start.pcapng");
    let info = synack::capture::SinkInfo {
        interface: "pair",
        description: "slow start".into(),
    };
    let sink = synack::capture::PcapngSink::create(&path.clone().into(), info).unwrap();
    let mut pair = pair(
        |s| {
            s.knobs.congestion = synack::node::Congestion::Reno;
            s.tx_buf = 4 << 20;
        },
        |c| {
            c.rx_buf = 8 << 20;
            c.knobs.ack_delay = ack_delay;
        },
        // 20 ms each way: a round trip is 40 ms, far longer than a flight takes to send.
        FaultConfig {
            delay_ms: 20,
            seed: 1,
            ..FaultConfig::default()
        },
        Some(synack::capture::Capture::new(sink)),
    );
    let o = get(&mut pair, "/bytes/4000000");
    pair.run_until(Duration::from_secs(60), |_| done(&o))
        .unwrap();
    assert_eq!(o.borrow().exchanges[0].body_bytes, 4_000_000);
    let now = pair.now();
    pair.server.shutdown(now, |_| {}).unwrap().unwrap();
    flights(&read_capture(&path), 40_000_000)
}

/// The mean factor by which a flight grew per round trip, from round `from` to `to`.
fn growth(rounds: &[usize], from: usize, to: usize) -> f64 {
    (rounds[to] as f64 / rounds[from] as f64).powf(1.0 / (to - from) as f64)
}

#[test]
fn slow_start_doubles_per_round_trip_when_every_segment_is_acked() {
    // The client ACKs every segment (--ack-delay off): Reno adds an MSS per ACK, so each
    // flight is twice the last (RFC 5681 §3.1).
    let rounds = slow_start(None, "no-delay");
    let g = growth(&rounds, 1, 6);
    assert!(
        (1.85..=2.15).contains(&g),
        "x{g:.2} per round trip: {rounds:?}"
    );
}

#[test]
fn slow_start_grows_half_again_per_round_trip_with_delayed_acks() {
    // The client ACKs every second full segment (RFC 5681 §4.2; not one per burst): one
    // MSS per ACK makes each flight about 1.5 times the last. (Linux counts the bytes
    // acknowledged, RFC 3465, and doubles; smoltcp follows RFC 5681's one MSS per ACK.)
    let rounds = slow_start(Some(std::time::Duration::from_millis(10)), "delayed");
    let g = growth(&rounds, 3, 7);
    assert!(
        (1.4..=1.7).contains(&g),
        "x{g:.2} per round trip: {rounds:?}"
    );
    // A receiver that ACKed once per burst (a stretch ACK) would grow the flight by one
    // segment per round trip: linear, not geometric.
    assert!(rounds[7] > rounds[3] + 8, "{rounds:?}");
}

#[test]
fn a_response_still_on_its_way_is_not_cut_short_by_the_idle_timeout() {
    // 300 KB at 1 Mbit/s take 2.4 s to cross; the server's idle time-out is 1 s. The
    // response was handed to the socket at once, but the client is not idle: it is
    // receiving. (This once appended a 408 after the body and closed.)
    let mut pair = pair(
        |s| s.timeouts.idle = std::time::Duration::from_secs(1),
        |_| {},
        FaultConfig {
            rate_kbit: Some(1000),
            seed: 1,
            ..FaultConfig::default()
        },
        None,
    );
    let o = get(&mut pair, "/bytes/300000");
    pair.run_until(Duration::from_secs(30), |_| done(&o))
        .unwrap();
    let o = o.borrow();
    assert_eq!(o.error, None);
    assert_eq!(o.exchanges[0].body_bytes, 300_000);
    assert!(
        pair.now() - VIRTUAL_EPOCH > Duration::from_secs(2),
        "it was slow"
    );
    let kept = pair.server.node.journal_mut().take_kept();
    let statuses: Vec<u16> = kept
        .events()
        .filter_map(|e| match e.what {
            synack::journey::What::Responded { status, .. } => Some(status),
            _ => None,
        })
        .collect();
    assert_eq!(statuses, vec![200], "no 408 behind the body");
}

/// Found by fuzz/pair: HTTPS on a link that loses nothing but duplicates 45 % of packets
/// and jitters them by up to 25 ms (so it reorders), jumbo MTU, 2 KB receive buffers,
/// Nagle on: `/bytes/19800` with `Connection: close` must arrive whole. Before, smoltcp's
/// fast retransmission sent 3832 B and the FIN into a 2048 B window, and the client's
/// smoltcp took the FIN and lost the bytes past its window.
#[test]
fn https_over_a_duplicating_jittery_link_arrives_whole() {
    let faults = FaultConfig {
        duplicate: 45.0,
        jitter_ms: 25,
        seed: 8_747_238_705_552_424_960,
        ..FaultConfig::default()
    };
    let identity =
        synack::tls::seeded::identity(1, &["synack.test".into()], SERVER).expect("an identity");
    let provider = || std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let server_tls = synack::tls::server_config_with(&identity, None, provider()).unwrap();
    let knobs = synack::node::TcpKnobs {
        nagle: true,
        ack_delay: Some(std::time::Duration::from_millis(10)),
        congestion: synack::node::Congestion::Cubic,
        ..synack::node::TcpKnobs::default()
    };
    let small = |c: &mut Config| {
        c.mtu = 9000;
        c.rx_buf = 2048;
        c.tx_buf = 4096;
        c.knobs = knobs;
    };
    let mut pair = pair(
        |c| {
            small(c);
            c.https_port = Some(443);
            c.tls = Some(server_tls);
            c.seed = 121;
        },
        |c| {
            small(c);
            c.seed = 121 ^ 0x5555;
        },
        faults,
        None,
    );
    let mut request = ClientRequest::get("synack.test", "/bytes/19800");
    request.headers.push(("Connection".into(), "close".into()));
    let plan = synack::fetch::Plan {
        host: "synack.test".into(),
        ip: Some(SERVER),
        resolver: SERVER,
        port: 443,
        tls: Some(
            synack::tls::client_config(synack::tls::Trust::Anyone, None, provider()).unwrap(),
        ),
        requests: vec![request],
        wait_time_wait: false,
    };
    let received = Rc::new(RefCell::new(0u64));
    let sink = {
        let received = Rc::clone(&received);
        Box::new(move |_: usize, data: &[u8]| {
            *received.borrow_mut() += data.len() as u64;
            Ok(())
        })
    };
    let mut client = synack::fetch::Client::new(plan, sink);
    let mut result = None;
    pair.run_until(Duration::from_secs(900), |pair| {
        let now = pair.now();
        result = client.poll(&mut pair.client.node, now);
        result.is_some()
    })
    .expect("the fetch ends");
    let report = result.unwrap().expect("the fetch succeeds");
    assert_eq!(report.exchanges[0].body_bytes, 19_800);
    assert_eq!(*received.borrow(), 19_800);
    // Three duplicated ACKs set off a fast retransmission of a whole MSS (8960 B) into
    // the client's 2048 B window: cut to the window, and the FIN it carried goes later.
    assert!(pair.server.node.counters().segments_cut_to_window >= 1);
}
