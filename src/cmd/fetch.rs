//! `synack fetch URL`: the flags, the TUN device and the loop that drives the client on
//! real time until it is done; the client itself is [`synack::fetch::Client`].

use std::io::{IsTerminal, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;

use super::args::{BufferArgs, FaultArgs, KnobArgs, LinkArgs, PaceArgs, RecordArgs, TimeWaitArgs};
use super::setup;
use synack::app::App;
use synack::capture::PcapngSink;
use synack::driver::Edge;
use synack::driver::tun::TunDriver;
use synack::fetch::{Client, EXIT_HTTP_ERROR, FetchError, Plan, Report, Url};
use synack::link::Link;
use synack::node::{Config, Node};
use synack::session::{BodySink, ClientRequest};
use synack::tls::{self, KeyLogLines, Trust};

/// Bodies past this size get a progress line on a terminal.
const PROGRESS_FROM: u64 = 4 * 1024 * 1024;

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The URL: http:// or https://, a name (looked up at --resolver) or an IPv4 address, an optional :port.
    pub url: String,
    #[command(flatten)]
    pub link: LinkArgs,
    #[command(flatten)]
    pub record: RecordArgs,
    #[command(flatten)]
    pub pace: PaceArgs,
    #[command(flatten)]
    pub knobs: KnobArgs,
    #[command(flatten)]
    pub buffers: BufferArgs,
    #[command(flatten)]
    pub faults: FaultArgs,
    #[command(flatten)]
    pub tw: TimeWaitArgs,
    /// DNS server to look the host up at (UDP port 53). Default: the gateway.
    #[arg(long, value_name = "IP")]
    pub resolver: Option<Ipv4Addr>,
    /// Request method.
    #[arg(
        short = 'X',
        long = "request",
        value_name = "METHOD",
        default_value = "GET"
    )]
    pub method: String,
    /// An extra request header, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER", value_parser = header)]
    pub headers: Vec<(String, String)>,
    /// Send DATA as the request body (the method becomes POST unless -X says otherwise).
    #[arg(
        short = 'd',
        long = "data",
        value_name = "DATA",
        conflicts_with = "data_file"
    )]
    pub data: Option<String>,
    /// Send the contents of FILE as the request body.
    #[arg(long, value_name = "FILE")]
    pub data_file: Option<PathBuf>,
    /// Write the body to FILE instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Trust the certificates in this PEM file for https:// (there are no public roots here).
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub cacert: Option<PathBuf>,
    /// Accept any certificate for https://. INSECURE: anyone in the path can read and change the traffic.
    #[arg(long)]
    pub insecure: bool,
    /// Exit as soon as our side is in TIME-WAIT instead of waiting it out (--time-wait).
    #[arg(long)]
    pub no_time_wait: bool,
    /// Give up after this many seconds in all (TIME-WAIT not counted).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub max_time: u64,
    /// Seed for our initial sequence number and port (default: random). The same seed gives the same ISN.
    #[arg(long)]
    pub seed: Option<u64>,
}

fn header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not a header; write it as \"Name: value\""))?;
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("{name:?} is not a header name"));
    }
    if value.contains(['\r', '\n']) {
        return Err("a header value cannot hold a line break".into());
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

pub fn run(args: FetchArgs) -> anyhow::Result<u8> {
    if args.record.captures_to_stdout() && args.output.is_none() {
        bail!(
            "--capture - streams the capture to stdout, where the body would go too: give the body a file with -o FILE"
        );
    }
    let url: Url = args.url.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let body = match (&args.data, &args.data_file) {
        (Some(d), _) => Some(d.clone().into_bytes()),
        (None, Some(path)) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read --data-file {}", path.display()))?,
        ),
        (None, None) => None,
    };
    // As curl: a body makes the default method POST.
    let method = match (&body, args.method.as_str()) {
        (Some(_), "GET") => "POST".to_owned(),
        (_, m) => m.to_ascii_uppercase(),
    };
    let request = ClientRequest {
        method,
        target: url.target.clone(),
        host: url.host_header(),
        headers: args.headers.clone(),
        body: body.unwrap_or_default(),
        pace: args.pace.pacing(),
    };

    let seed = args.seed.unwrap_or_else(setup::random_seed);
    let keylog = (url.tls && (!args.record.no_capture || args.record.keylog.is_some()))
        .then(|| Arc::new(KeyLogLines::default()));
    let tls = if url.tls {
        let trust = match (&args.cacert, args.insecure) {
            (Some(path), _) => Trust::Roots(tls::load_roots(path)?),
            (None, true) => {
                eprintln!(
                    "synack: WARNING: --insecure: any certificate is accepted; this connection is not protected against anyone in the path"
                );
                Trust::Anyone
            }
            (None, false) => bail!(
                "{} is https but there are no trusted roots here: give the server's certificate with --cacert FILE (or --insecure to skip the check)",
                args.url
            ),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Some(tls::client_config(trust, keylog.clone(), provider)?)
    } else {
        None
    };

    let (tun, gateway) = setup::open_tun(&args.link)?;
    let addr = args.link.addr;
    let sink = setup::open_capture(&args.record, "fetch", "client", &tun, addr)?;
    let summary = sink.as_ref().map(PcapngSink::summary_handle);
    let journal = setup::open_journal(&args.record, "client")?;
    let stop = setup::stop()?;
    let faults = args.faults.config(seed, 0);
    let time_wait = std::time::Duration::from_secs(args.tw.time_wait);
    let cfg = Config {
        addr: addr.addr,
        prefix: addr.prefix,
        gateway,
        mtu: tun.mtu(),
        listen: false,
        keylog,
        rx_buf: args.buffers.rx_buf,
        tx_buf: args.buffers.tx_buf,
        seed,
        dns_port: None,
        knobs: args.knobs.knobs(),
        time_wait,
        max_time_wait: args.tw.max_time_wait,
        notes: sink.is_some(),
        internals: args.record.internals,
        ..Config::default()
    };
    let capture = setup::capture(&args.record, sink)?;
    let node = Node::new(cfg, App::default(), journal, synack::clock::now())?;
    let mut driver = TunDriver::new(tun, Link::new(faults), Edge::new(node, capture), stop);
    if !faults.is_none() {
        eprintln!("synack: link faults in force: {}", faults.describe());
    }

    let sink = body_sink(&args)?;
    let plan = Plan {
        host: url.host.clone(),
        ip: url.ip,
        resolver: args.resolver.unwrap_or(gateway),
        port: url.port,
        tls,
        requests: vec![request],
        wait_time_wait: !args.no_time_wait,
    };
    let mut client = Client::new(plan, sink);
    let started = std::time::Instant::now();
    let deadline = started + std::time::Duration::from_secs(args.max_time);
    let mut said_time_wait = false;
    let result = loop {
        if let Some(result) = driver.with_node(|node, now| client.poll(node, now)) {
            break result;
        }
        if driver.stopped() {
            break Err(FetchError::Local("interrupted".into()));
        }
        if client.talked() {
            if !said_time_wait && !args.no_time_wait {
                said_time_wait = true;
                eprintln!(
                    "synack: done; our side closed first and waits out TIME-WAIT ({} s; --time-wait SECS shortens it, --no-time-wait leaves at once)",
                    time_wait.as_secs()
                );
            }
        } else if std::time::Instant::now() > deadline {
            break Err(FetchError::Timeout(args.max_time));
        }
        // Wake up for --max-time even if nothing else is due; once the exchange is done
        // only TIME-WAIT is left, which the node's own timer ends.
        let max_time_left = deadline.saturating_duration_since(std::time::Instant::now());
        driver.turn((!client.talked()).then_some(max_time_left))?;
    };
    let finished = driver.shutdown();
    let complete = setup::report_capture(finished, summary.as_ref());
    match result {
        Ok(report) => match summarise(&report, started.elapsed()) {
            0 if !complete => Ok(setup::EXIT_CAPTURE_INCOMPLETE),
            code => Ok(code),
        },
        Err(e) => {
            eprintln!("synack: {e}");
            Ok(e.exit_code())
        }
    }
}

/// The summary line, and the exit code an HTTP status earns.
fn summarise(report: &Report, took: std::time::Duration) -> u8 {
    let Some(last) = report.exchanges.last() else {
        return 0;
    };
    let (status, reason) = last
        .head
        .as_ref()
        .map_or((0, ""), |h| (h.status, h.reason.as_str()));
    eprintln!(
        "synack: {} {} from {}: {status} {reason}, {} B body, {:.3} s{}",
        last.method,
        last.target,
        report.remote,
        last.body_bytes,
        took.as_secs_f64(),
        if report.time_wait {
            ", we closed first (TIME-WAIT)"
        } else {
            ""
        }
    );
    if status >= 400 {
        eprintln!("synack: the server answered {status} {reason}");
        return EXIT_HTTP_ERROR;
    }
    0
}

/// Where the body goes: `-o FILE` or stdout, with a progress meter on stderr when it
/// is a terminal. An empty piece ends a body: flush, finish the meter.
fn body_sink(args: &FetchArgs) -> anyhow::Result<BodySink> {
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create -o {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let mut progress = std::io::stderr().is_terminal().then(Progress::default);
    Ok(Box::new(move |_, data| {
        out.write_all(data)?;
        if let Some(p) = progress.as_mut() {
            p.add(data.len() as u64);
        }
        if data.is_empty() {
            out.flush()?;
            if let Some(p) = progress.as_mut() {
                p.finish();
            }
        }
        Ok(())
    }))
}

/// A one-line progress meter on stderr for big bodies.
#[derive(Default)]
struct Progress {
    bytes: u64,
    shown: Option<std::time::Instant>,
    started: Option<std::time::Instant>,
}

impl Progress {
    fn add(&mut self, n: u64) {
        let now = std::time::Instant::now();
        let started = *self.started.get_or_insert(now);
        self.bytes += n;
        if self.bytes < PROGRESS_FROM
            || self
                .shown
                .is_some_and(|t| now - t < std::time::Duration::from_millis(200))
        {
            return;
        }
        self.shown = Some(now);
        let secs = (now - started).as_secs_f64().max(1e-6);
        eprint!(
            "\r  {:.1} MB received, {:.1} MB/s   ",
            self.bytes as f64 / 1e6,
            self.bytes as f64 / 1e6 / secs
        );
    }

    fn finish(&mut self) {
        if self.shown.take().is_some() {
            eprintln!();
        }
        self.bytes = 0;
        self.started = None;
    }
}
