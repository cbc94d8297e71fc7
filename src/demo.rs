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
use crate::capture::{SinkInfo, Tap};
use crate::clock::{Clock, VIRTUAL_EPOCH};
use crate::device::memory;
use crate::faults::{FaultConfig, FaultCounters};
use crate::fetch::{Client, Plan, Report};
use crate::http::encode::pattern_byte;
use crate::journey::{Journal, Kept};
use crate::session::{BodySink, ClientRequest};
use crate::stack::{Config, Stack};
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

/// Turns of both stacks at one instant before the clock must move on; a guard against
/// a loop that never settles.
const MAX_TURNS_PER_INSTANT: usize = 10_000;

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
    pub knobs: crate::stack::TcpKnobs,
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
    /// Where the capture goes; `None` for none.
    pub capture: Option<PathBuf>,
}

impl Default for Scenario {
    /// `synack demo` with no flags, without a capture.
    fn default() -> Self {
        Scenario {
            seed: 1,
            download: 256_000,
            mtu: 1500,
            rx_buf: crate::stack::limits::DEFAULT_RX_BUF,
            tx_buf: crate::stack::limits::DEFAULT_TX_BUF,
            faults: FaultConfig {
                delay_ms: 1,
                seed: 1,
                ..FaultConfig::default()
            },
            knobs: crate::stack::TcpKnobs::default(),
            plain: false,
            pace: None,
            capture_at: Side::Server,
            backlog: crate::stack::limits::DEFAULT_BACKLOG,
            keylog: None,
            capture: None,
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
    #[error("cannot create capture file {0} (is the directory writable?): {1}")]
    Capture(PathBuf, std::io::Error),
    #[error(transparent)]
    Stack(#[from] crate::stack::StackError),
    #[error("the capture could not be completed: {0}")]
    Finish(std::io::Error),
    #[error("the simulation did not finish within {0} s of virtual time")]
    TooLong(u64),
    #[error("the simulation is stuck: nothing is scheduled and nothing is on the link")]
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
    /// The capture file and its packet count.
    pub capture: Option<(PathBuf, u64)>,
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

/// One end's tap: the capture and `--keylog` go on the end the scenario captures at.
fn tap(
    port: memory::MemoryPort,
    sink: Option<crate::capture::PcapngSink>,
    scenario: &Scenario,
    side: Side,
) -> Result<Tap<memory::MemoryPort>, DemoError> {
    let mut tap = Tap::new(port, sink);
    if let Some(path) = scenario
        .keylog
        .as_ref()
        .filter(|_| side == scenario.capture_at)
    {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| DemoError::Keylog(path.clone(), e))?;
        tap.set_keylog_file(file);
    }
    Ok(tap)
}

/// Runs the scenario to its end.
pub fn simulate(scenario: &Scenario) -> Result<Outcome, DemoError> {
    let clock = Clock::virtual_time();
    let (client_port, server_port) = memory::pair(scenario.mtu);
    let watch = client_port.watch();

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
    let server_tls = tls::server_config_with(
        &identity,
        server_keylog.clone(),
        tls::seeded::provider(scenario.seed, "server"),
    )
    .map_err(|e| DemoError::Tls(e.to_string()))?;
    let sink = match &scenario.capture {
        Some(path) => {
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
            let sink = crate::capture::PcapngSink::create(path, info)
                .map_err(|e| DemoError::Capture(path.clone(), e))?;
            Some(sink)
        }
        None => None,
    };
    let (server_sink, client_sink) = match scenario.capture_at {
        Side::Server => (sink, None),
        Side::Client => (None, sink),
    };
    let server_cfg = Config {
        addr: SERVER_ADDR,
        gateway: CLIENT_ADDR,
        https_port: Some(443),
        tls: Some(server_tls),
        keylog: server_keylog,
        rx_buf: scenario.rx_buf,
        tx_buf: scenario.tx_buf,
        seed: scenario.seed,
        dns_names: names,
        clock: clock.clone(),
        faults: scenario.faults,
        knobs: scenario.knobs,
        backlog: scenario.backlog,
        ..Config::default()
    };
    let mut server = Stack::new(
        server_cfg,
        tap(server_port, server_sink, scenario, Side::Server)?,
        App::default(),
        Journal::keeping("server"),
    )?;

    // The client, as `fetch` builds it: no listeners, no responder.
    let client_cfg = Config {
        addr: CLIENT_ADDR,
        gateway: SERVER_ADDR,
        listen: false,
        dns_port: None,
        rx_buf: scenario.rx_buf,
        tx_buf: scenario.tx_buf,
        // Another stream from the same seed: the two ISNs differ.
        seed: scenario.seed.rotate_left(32) ^ CLIENT_SEED_SALT,
        clock: clock.clone(),
        keylog: client_keylog.clone(),
        knobs: scenario.knobs,
        ..Config::default()
    };
    let mut client_stack = Stack::new(
        client_cfg,
        tap(client_port, client_sink, scenario, Side::Client)?,
        App::default(),
        Journal::keeping("client"),
    )?;
    let client_tls = tls::client_config(
        Trust::Roots(identity.chain.clone()),
        client_keylog,
        tls::seeded::provider(scenario.seed, "client"),
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

    let result = loop {
        let mut turns = 0;
        let mut result = None;
        loop {
            client_stack.step()?;
            server.step()?;
            result = result.or_else(|| client.poll(&mut client_stack));
            turns += 1;
            if !watch.busy() || turns == MAX_TURNS_PER_INSTANT {
                break;
            }
        }
        if let Some(result) = result {
            break result;
        }
        let now = clock.now();
        client_stack.settle(now);
        server.settle(now);
        if now - VIRTUAL_EPOCH > VIRTUAL_LIMIT {
            return Err(DemoError::TooLong(VIRTUAL_LIMIT.secs()));
        }
        let next = [client_stack.next_wait(now), server.next_wait(now)]
            .into_iter()
            .flatten()
            .min()
            .ok_or(DemoError::Stuck)?;
        // At least a microsecond: a deadline due now that changes nothing must not spin.
        let step = Duration::from_micros((next.as_micros() as u64).max(1));
        clock.advance_to(now + step);
    };
    let report = result;
    let virtual_time = clock.now() - VIRTUAL_EPOCH;
    let faults = server.fault_counters();
    let at_client = client_stack.shutdown().map_err(DemoError::Finish)?;
    let at_server = server.shutdown().map_err(DemoError::Finish)?;
    let capture = at_client.or(at_server);
    let client_kept = client_stack.journal_mut().take_kept();
    let server_kept = server.journal_mut().take_kept();
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
