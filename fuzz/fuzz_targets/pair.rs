//! Two stacks, a client (`fetch`'s code) and a server (`serve`'s), joined by
//! `driver::pair::Pair` on a virtual clock, with a `link::Link` whose faults (loss, delay,
//! jitter, reordering, duplication, corruption, a rate) come from the input, as do the
//! requests, TLS or not, MTU, buffers and TCP knobs. What must hold:
//! - the pair never livelocks, never sits stuck with nothing scheduled, and the fetch ends
//!   (one way or another) within its virtual time;
//! - on a link that loses nothing (it may delay, reorder and duplicate), the fetch
//!   succeeds: every request gets its status, every `/bytes/N` its N bytes;
//! - afterwards, every connection on both ends ends and nothing is left in either table.

#![no_main]

use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use smoltcp::time::Duration;
use synack::app::App;
use synack::driver::Edge;
use synack::driver::pair::{Pair, PairError};
use synack::fetch::{Client, Plan};
use synack::journey::Journal;
use synack::link::{FaultConfig, Link};
use synack::node::{Config, Congestion, Node, TcpKnobs};
use synack::session::ClientRequest;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

/// The fetch must end within this much virtual time, plus [`SLOWEST`] for every byte it
/// asks for, whatever the link does: every wait in the stack is bounded (SYN and data
/// retransmissions by the 60 s send timeout, DNS by its retries, TIME-WAIT by 60 s), so a
/// link either carries data or the fetch fails.
const FETCH_LIMIT: Duration = Duration::from_secs(900);

/// The slowest a link the input can make still carries data, in bytes a second: 2 KB
/// windows, a round trip of up to 1.5 s, and a sixth of the packets lost each way with
/// RTO backoff give several hundred (a fetch of 700 KB on such a link once took longer
/// than a fixed 900 s, and was slow, not stuck).
const SLOWEST: u64 = 100;

/// Then this long for the server to finish closing (the FIN timeout is 60 s).
const AFTER: Duration = Duration::from_secs(600);

#[derive(Arbitrary, Debug)]
struct Faults {
    loss: u8,
    delay_ms: u16,
    jitter_ms: u8,
    reorder: u8,
    duplicate: u8,
    corrupt: u8,
    rate: Option<u16>,
    seed: u64,
}

impl Faults {
    fn config(&self) -> FaultConfig {
        // Mostly a link that loses nothing, where the fetch must succeed.
        let lossy = |v: u8| {
            if v < 192 {
                0.0
            } else {
                f64::from(v - 192) * 0.75
            }
        };
        FaultConfig {
            loss: lossy(self.loss),
            delay_ms: u64::from(self.delay_ms % 500),
            jitter_ms: u64::from(self.jitter_ms),
            reorder: f64::from(self.reorder % 51),
            duplicate: f64::from(self.duplicate % 51),
            corrupt: lossy(self.corrupt),
            rate_kbit: self.rate.map(|r| 64 + u64::from(r) * 64),
            seed: self.seed,
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
enum Route {
    Root,
    Echo,
    Json(bool),
    Bytes(u32),
    Journey,
    Stats,
    Nope,
    Head,
    Any(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    faults: Faults,
    tls: bool,
    resolve: bool,
    seed: u8,
    mtu: u8,
    small_buffers: bool,
    nagle: bool,
    no_ack_delay: bool,
    congestion: u8,
    close_last: bool,
    routes: Vec<Route>,
}

/// A request for `route`, and the status it must get (when known).
fn request(route: &Route) -> (ClientRequest, Option<u16>, Option<u64>) {
    let host = "synack.test";
    match route {
        Route::Root => (ClientRequest::get(host, "/"), Some(200), None),
        Route::Echo => (ClientRequest::get(host, "/echo"), Some(200), None),
        Route::Json(good) => {
            let mut r = ClientRequest::get(host, "/json");
            r.method = "POST".into();
            r.headers
                .push(("Content-Type".into(), "application/json".into()));
            r.body = if *good {
                b"{\"journey\": [1, 2, 3]}".to_vec()
            } else {
                b"{\"journey\": [1, 2".to_vec()
            };
            (r, Some(if *good { 200 } else { 400 }), None)
        }
        Route::Bytes(n) => {
            let n = u64::from(*n % 200_000);
            (
                ClientRequest::get(host, &format!("/bytes/{n}")),
                Some(200),
                Some(n),
            )
        }
        Route::Journey => (ClientRequest::get(host, "/journey"), Some(200), None),
        Route::Stats => (ClientRequest::get(host, "/stats"), Some(200), None),
        Route::Nope => (ClientRequest::get(host, "/nope"), Some(404), None),
        Route::Head => {
            let mut r = ClientRequest::get(host, "/bytes/1000");
            r.method = "HEAD".into();
            (r, Some(200), Some(0))
        }
        Route::Any(target) => (ClientRequest::get(host, target), None, None),
    }
}

fn identity() -> &'static synack::tls::Identity {
    static ID: OnceLock<synack::tls::Identity> = OnceLock::new();
    ID.get_or_init(|| {
        synack::tls::seeded::identity(1, &["synack.test".into()], SERVER).expect("an identity")
    })
}

fuzz_target!(|input: Input| {
    let faults = input.faults.config();
    let clean = faults.loss == 0.0 && faults.corrupt == 0.0;
    let seed = u64::from(input.seed);
    let mtu = [576, 1500, 9000][usize::from(input.mtu % 3)];
    let (rx_buf, tx_buf) = if input.small_buffers {
        (2048, 4096)
    } else {
        (65_536, 262_144)
    };
    let knobs = TcpKnobs {
        nagle: input.nagle,
        ack_delay: (!input.no_ack_delay).then(|| std::time::Duration::from_millis(10)),
        congestion: [Congestion::None, Congestion::Reno, Congestion::Cubic]
            [usize::from(input.congestion % 3)],
        ..TcpKnobs::default()
    };
    let server_tls = synack::tls::server_config_with(identity(), None, synack_fuzz::crypto())
        .expect("a server configuration");
    let start = synack::clock::VIRTUAL_EPOCH;
    let server = Node::new(
        Config {
            addr: SERVER,
            gateway: CLIENT,
            mtu,
            https_port: Some(443),
            tls: Some(server_tls),
            rx_buf,
            tx_buf,
            seed,
            knobs,
            notes: false,
            ..Config::default()
        },
        App::default(),
        Journal::silent(),
        start,
    )
    .expect("a server");
    let client_node = Node::new(
        Config {
            addr: CLIENT,
            gateway: SERVER,
            mtu,
            listen: false,
            dns_port: None,
            rx_buf,
            tx_buf,
            seed: seed ^ 0x5555,
            knobs,
            notes: false,
            ..Config::default()
        },
        App::default(),
        Journal::silent(),
        start,
    )
    .expect("a client");
    let tls = input.tls.then(|| {
        synack::tls::client_config(synack::tls::Trust::Anyone, None, synack_fuzz::crypto())
            .expect("a client configuration")
    });
    let mut routes: Vec<Route> = input.routes.iter().take(6).cloned().collect();
    if routes.is_empty() {
        routes.push(Route::Root);
    }
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for (i, r) in routes.iter().enumerate() {
        let (mut req, status, length) = request(r);
        if input.close_last && i + 1 == routes.len() {
            req.headers.push(("Connection".into(), "close".into()));
        }
        requests.push(req);
        expected.push((status, length));
    }
    let known = expected.iter().all(|(s, _)| s.is_some());
    let plan = Plan {
        host: "synack.test".into(),
        ip: (!input.resolve).then_some(SERVER),
        resolver: SERVER,
        port: if input.tls { 443 } else { 80 },
        tls,
        requests,
        wait_time_wait: true,
    };
    let received = Rc::new(RefCell::new(Vec::<u64>::new()));
    let sink = {
        let received = Rc::clone(&received);
        Box::new(move |index: usize, data: &[u8]| {
            let mut r = received.borrow_mut();
            if r.len() <= index {
                r.resize(index + 1, 0);
            }
            r[index] += data.len() as u64;
            Ok(())
        })
    };
    let mut client = Client::new(plan, sink);
    let mut pair = Pair::new(
        Edge::new(client_node, None),
        Edge::new(server, None),
        Link::new(faults),
        start,
    );
    let asked: u64 = expected.iter().map(|(_, n)| n.unwrap_or(0)).sum();
    let limit = FETCH_LIMIT + Duration::from_secs(asked / SLOWEST);
    let mut result = None;
    let run = pair.run_until(limit, |pair| {
        let now = pair.now();
        result = client.poll(&mut pair.client.node, now);
        result.is_some()
    });
    match run {
        Ok(()) => {}
        Err(PairError::Livelock) => panic!("the two stacks answer each other forever"),
        Err(e) => panic!("the fetch did not end: {e} ({faults:?})"),
    }
    let result = result.expect("run_until ends with the result");
    if clean && known {
        let report = result.unwrap_or_else(|e| panic!("a clean link, and the fetch failed: {e}"));
        assert_eq!(report.exchanges.len(), expected.len());
        for (i, (x, (status, length))) in report.exchanges.iter().zip(&expected).enumerate() {
            assert!(x.complete, "exchange {i} incomplete");
            let got = x.head.as_ref().map(|h| h.status);
            assert_eq!(got, *status, "exchange {i} ({} {})", x.method, x.target);
            if let Some(n) = length {
                assert_eq!(x.body_bytes, *n, "exchange {i} ({} {})", x.method, x.target);
            }
        }
    }
    // Everything ends: nothing is left on either side.
    pair.run_for(AFTER).expect("the pair settles");
    assert_eq!(
        pair.client.node.connections(),
        (0, 0),
        "client connections left"
    );
    assert_eq!(
        pair.server.node.connections(),
        (0, 0),
        "server connections left"
    );
    assert_eq!(
        pair.server.node.active(),
        0,
        "server connections still served"
    );
});
