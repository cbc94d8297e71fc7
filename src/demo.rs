//! `synack demo`: the whole journey with no root, no TUN and no namespace. A client stack
//! and a server stack (the same code as `fetch` and `serve`) joined by an in-memory link,
//! stepped on one virtual clock, like quinn-proto's test `Pair`.
//!
//! The scenario: look up synack.test at the server's DNS responder, connect to 443, TLS
//! (or to 80 without it, `--http`),
//! `GET /` and `POST /json` on the same kept-alive connection, a `/bytes` download, our
//! close, the server's, and the client's TIME-WAIT. One capture holds every packet on the
//! link (taken at the server's side, where the link's faults are), and the journey of both
//! ends is printed side by side.
//!
//! Every random choice derives from `--seed`: ISNs and ports (smoltcp's seed and ours),
//! TLS (see [`crate::tls::seeded`]), the certificate's key, the faults. The clock is
//! virtual and starts at [`crate::clock::VIRTUAL_EPOCH`]. So the same seed gives the same
//! capture, byte for byte, on every run and machine.

use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use smoltcp::time::Duration;

use crate::app::App;
use crate::capture::{
    Capture, CaptureConfig, CaptureError, PcapngSink, SinkInfo, Summary, SummaryHandle,
};
use crate::clock::VIRTUAL_EPOCH;
use crate::driver::Edge;
use crate::driver::pair::{Pair, PairError};
use crate::fetch::{Client, Plan, Report};
use crate::http::encode::pattern_byte;
use crate::journey::{Journal, Kept};
use crate::link::{FaultConfig, FaultCounters, Link};
use crate::node::{Config, Node};
use crate::session::{BodySink, ClientRequest};
use crate::tls::{self, KeyLogLines, Trust};

pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
pub const NAME: &str = "synack.test";

/// Mixed into the seed for the client's stack ("client" in ASCII), so the two ends draw
/// different ISNs from one `--seed`.
const CLIENT_SEED_SALT: u64 = 0x636C_6965_6E74;

/// The simulation gives up past this much virtual time (the scenario takes about 10 s,
/// most of it TIME-WAIT).
const VIRTUAL_LIMIT: Duration = Duration::from_secs(600);

/// An end of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// What the scenario does.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    pub download: u64,
    pub mtu: usize,
    pub rx_buf: usize,
    pub tx_buf: usize,
    pub faults: FaultConfig,
    /// Both stacks' TCP knobs.
    pub knobs: crate::node::TcpKnobs,
    /// Plain HTTP on port 80 instead of HTTPS on 443.
    pub plain: bool,
    /// The POST body in small writes.
    pub pace: Option<crate::session::Pacing>,
    /// Which end's device the capture records (the faults are at the server's end).
    pub capture_at: Side,
    /// The server's accept queue.
    pub backlog: usize,
    /// Also write the TLS secrets here (SSLKEYLOGFILE format).
    pub keylog: Option<PathBuf>,
    /// Where the capture goes (a file, a ring, stdout); `None` for none.
    pub capture: Option<CaptureConfig>,
    /// How long TIME-WAIT lasts on both ends.
    pub time_wait: std::time::Duration,
    /// Both ends explain their sender's inner life (`--internals on`).
    pub internals: bool,
}

impl Default for Scenario {
    /// `synack demo` with no flags, without a capture.
    fn default() -> Self {
        Scenario {
            seed: 1,
            download: 256_000,
            mtu: 1500,
            rx_buf: crate::node::limits::DEFAULT_RX_BUF,
            tx_buf: crate::node::limits::DEFAULT_TX_BUF,
            faults: FaultConfig {
                delay_ms: 1,
                seed: 1,
                ..FaultConfig::default()
            },
            knobs: crate::node::TcpKnobs::default(),
            plain: false,
            pace: None,
            capture_at: Side::Server,
            backlog: crate::node::limits::DEFAULT_BACKLOG,
            keylog: None,
            capture: None,
            time_wait: crate::node::limits::DEFAULT_TIME_WAIT,
            internals: false,
        }
    }
}

/// Why the simulation could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    #[error("cannot set up TLS: {0}")]
    Identity(#[from] crate::tls::TlsError),
    #[error("cannot open --keylog file {0}: {1}")]
    Keylog(PathBuf, std::io::Error),
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Node(#[from] crate::node::NodeError),
    #[error(transparent)]
    Pair(#[from] PairError),
    #[error("the simulation ended without the client's result")]
    Stuck,
}

/// What the scenario produced.
pub struct Outcome {
    /// The client's fetch: its exchanges, or why it failed.
    pub report: Result<Report, crate::fetch::FetchError>,
    /// Bodies of `GET /` and `POST /json`.
    pub page: Vec<u8>,
    pub json: Vec<u8>,
    /// Bytes of the download that were not what the server's pattern says.
    pub download_mismatches: u64,
    pub client: Kept,
    pub server: Kept,
    pub faults: FaultCounters,
    pub virtual_time: Duration,
    /// How the capture ended: its files and packets, complete or not.
    pub capture: Option<Summary>,
}

/// Collects the scenario's bodies: the small ones whole, the download checked byte by
/// byte against the pattern `/bytes` sends.
#[derive(Default)]
struct Bodies {
    small: [Vec<u8>; 2],
    download_len: u64,
    mismatches: u64,
}

fn body_sink(bodies: Rc<RefCell<Bodies>>) -> BodySink {
    Box::new(move |index, data| {
        let mut b = bodies.borrow_mut();
        if let Some(small) = b.small.get_mut(index) {
            small.extend_from_slice(data);
            return Ok(());
        }
        for &byte in data {
            if byte != pattern_byte(b.download_len) {
                b.mismatches += 1;
            }
            b.download_len += 1;
        }
        Ok(())
    })
}

/// The capture (and `--keylog`) at the end the scenario captures at, and where its
/// summary will be.
fn open_capture(scenario: &Scenario) -> Result<Option<(Capture, SummaryHandle)>, DemoError> {
    let Some(config) = &scenario.capture else {
        return Ok(None);
    };
    let at = match scenario.capture_at {
        Side::Server => "the server",
        Side::Client => "the client",
    };
    let info = SinkInfo {
        interface: "demo-link",
        description: format!(
            "synack demo: in-memory link between a client stack at {CLIENT_ADDR} and a server stack at {SERVER_ADDR}, seed {}, captured at {at}",
            scenario.seed
        ),
    };
    let sink = PcapngSink::create(config, info)?;
    let summary = sink.summary_handle();
    let mut capture = Capture::new(sink);
    if let Some(path) = &scenario.keylog {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| DemoError::Keylog(path.clone(), e))?;
        capture.set_keylog_file(file);
    }
    Ok(Some((capture, summary)))
}

/// Runs the scenario to its end.
pub fn simulate(scenario: &Scenario) -> Result<Outcome, DemoError> {
    let start = VIRTUAL_EPOCH;
    // The server, as `serve` builds it, with a seeded identity and TLS.
    let names = vec![NAME.to_owned()];
    let identity = tls::seeded::identity(scenario.seed, &names, SERVER_ADDR)?;
    // The secrets come from the end that is captured (both ends know them).
    let keylog = (scenario.capture.is_some() || scenario.keylog.is_some())
        .then(|| Arc::new(KeyLogLines::default()));
    let (server_keylog, client_keylog) = match scenario.capture_at {
        Side::Server => (keylog, None),
        Side::Client => (None, keylog),
    };
    // The seeded certificate is valid from the virtual clock's start: TLS reads that clock.
    let tls_time = tls::VirtualTime::new(start);
    let server_tls = tls::server_config_with_time(
        &identity,
        server_keylog.clone(),
        tls::seeded::provider(scenario.seed, "server"),
        Arc::new(tls_time.clone()),
    )
    .map_err(|e| DemoError::Tls(e.to_string()))?;
    let (capture, summary) = open_capture(scenario)?.unzip();
    let (server_capture, client_capture) = match scenario.capture_at {
        Side::Server => (capture, None),
        Side::Client => (None, capture),
    };
    let notes = scenario.capture.is_some();
    let server_cfg = Config {
        addr: SERVER_ADDR,
        gateway: CLIENT_ADDR,
        mtu: scenario.mtu,
        https_port: Some(443),
        tls: Some(server_tls),
        keylog: server_keylog,
        rx_buf: scenario.rx_buf,
        tx_buf: scenario.tx_buf,
        seed: scenario.seed,
        dns_names: names,
        knobs: scenario.knobs,
        backlog: scenario.backlog,
        time_wait: scenario.time_wait,
        notes: notes && scenario.capture_at == Side::Server,
        internals: scenario.internals,
        ..Config::default()
    };
    let server = Node::new(
        server_cfg,
        App::default(),
        Journal::keeping("server"),
        start,
    )?;

    // The client, as `fetch` builds it: no listeners, no responder.
    let client_cfg = Config {
        addr: CLIENT_ADDR,
        gateway: SERVER_ADDR,
        mtu: scenario.mtu,
        listen: false,
        dns_port: None,
        rx_buf: scenario.rx_buf,
        tx_buf: scenario.tx_buf,
        // Another stream from the same seed: the two ISNs differ.
        seed: scenario.seed.rotate_left(32) ^ CLIENT_SEED_SALT,
        keylog: client_keylog.clone(),
        knobs: scenario.knobs,
        time_wait: scenario.time_wait,
        notes: notes && scenario.capture_at == Side::Client,
        internals: scenario.internals,
        ..Config::default()
    };
    let client_node = Node::new(
        client_cfg,
        App::default(),
        Journal::keeping("client"),
        start,
    )?;
    let client_tls = tls::client_config_with_time(
        Trust::Roots(identity.chain.clone()),
        client_keylog,
        tls::seeded::provider(scenario.seed, "client"),
        Arc::new(tls_time.clone()),
    )?;
    let mut post = ClientRequest::get(NAME, "/json");
    post.method = "POST".into();
    post.headers
        .push(("Content-Type".into(), "application/json".into()));
    post.body = format!(
        "{{\"journey\": \"demo\", \"seed\": {}, \"stages\": [\"resolve\", \"connect\", \"decrypt\", \"parse\", \"decode\"]}}",
        scenario.seed
    )
    .into_bytes();
    post.pace = scenario.pace;
    let plan = Plan {
        host: NAME.into(),
        ip: None,
        resolver: SERVER_ADDR,
        port: if scenario.plain { 80 } else { 443 },
        tls: (!scenario.plain).then_some(client_tls),
        requests: vec![
            ClientRequest::get(NAME, "/"),
            post,
            ClientRequest::get(NAME, &format!("/bytes/{}", scenario.download)),
        ],
        wait_time_wait: true,
    };
    let bodies = Rc::new(RefCell::new(Bodies::default()));
    let mut client = Client::new(plan, body_sink(Rc::clone(&bodies)));

    let mut pair = Pair::new(
        Edge::new(client_node, client_capture),
        Edge::new(server, server_capture),
        Link::new(scenario.faults),
        start,
    );
    let mut result = None;
    pair.run_until(VIRTUAL_LIMIT, |pair| {
        let now = pair.now();
        tls_time.advance_to(now);
        result = client.poll(&mut pair.client.node, now);
        result.is_some()
    })?;
    let report = result.ok_or(DemoError::Stuck)?;
    let virtual_time = pair.now() - start;
    let faults = pair.link.counters();
    let now = pair.now();
    // A capture that could not be completed says so in its summary.
    let _ = pair.client.shutdown(now, |_| {});
    let _ = pair.server.shutdown(now, |_| {});
    let capture = summary.and_then(|s| s.get());
    let client_kept = pair.client.node.journal_mut().take_kept();
    let server_kept = pair.server.node.journal_mut().take_kept();
    let mut b = bodies.borrow_mut();
    let download_mismatches = b.mismatches + b.download_len.abs_diff(scenario.download);
    Ok(Outcome {
        report,
        page: std::mem::take(&mut b.small[0]),
        json: std::mem::take(&mut b.small[1]),
        download_mismatches,
        client: client_kept,
        server: server_kept,
        faults,
        virtual_time,
        capture,
    })
}
