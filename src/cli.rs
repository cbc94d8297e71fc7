//! The command line: flags, their bounds, and turning failures into one clear sentence.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::journey::Format;
use crate::stack::limits;

#[derive(Debug, Parser)]
#[command(
    name = "synack",
    version,
    about = "A userspace TCP/IP stack on a TUN device that shows the journey of an HTTP request"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP/1.1 from a smoltcp stack on a TUN device, capturing every packet.
    Serve(ServeArgs),
    /// Fetch a URL with the userspace stack as the client, on a TUN device.
    Fetch(FetchArgs),
    /// The whole journey with no root at all: a client stack and a server stack in one process, on a virtual clock.
    Demo(DemoArgs),
    /// Draw each TCP connection and DNS exchange of any pcap or pcapng as a ladder diagram.
    Ladder(LadderArgs),
    /// Per-connection numbers of any pcap or pcapng: handshake RTT, bytes, retransmissions, windows, RTT.
    Stats(StatsArgs),
}

/// When to colour the ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Colour {
    /// When stdout is a terminal.
    Auto,
    Always,
    Never,
}

#[derive(Debug, Args)]
pub struct LadderArgs {
    /// A pcap or pcapng capture (Raw IP, IPv4, Ethernet, Linux cooked or loopback).
    pub capture: PathBuf,
    /// Only conversation N (as numbered in the output).
    #[arg(long, value_name = "N")]
    pub conn: Option<usize>,
    /// Also draw the ladder as an SVG picture in FILE.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Colour: auto (on a terminal), always, never.
    #[arg(long = "color", value_enum, default_value = "auto")]
    pub colour: Colour,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// A pcap or pcapng capture (Raw IP, IPv4, Ethernet, Linux cooked or loopback).
    pub capture: PathBuf,
    /// Only connection N (as numbered by synack ladder).
    #[arg(long, value_name = "N")]
    pub conn: Option<usize>,
    /// JSON for scripts.
    #[arg(long)]
    pub json: bool,
    /// Draw the time-sequence graph of the busiest (or --conn) connection as SVG in FILE.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// An IPv4 address with a prefix length, like 10.77.0.2/24.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, "24"));
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| (1..=30).contains(p))
            .ok_or_else(|| {
                format!("prefix /{p} must be 1..=30 (the subnet needs room for us and the gateway)")
            })?;
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    /// The first host of the subnet: the kernel side's address by convention (10.77.0.1).
    pub fn first_host(&self) -> Ipv4Addr {
        let mask = u32::MAX << (32 - u32::from(self.prefix));
        Ipv4Addr::from((u32::from(self.addr) & mask) + 1)
    }
}

fn parse_buf(s: &str) -> Result<usize, String> {
    let (digits, mult) = match s.to_ascii_lowercase() {
        t if t.ends_with("kib") || t.ends_with('k') => (
            t.trim_end_matches("kib").trim_end_matches('k').to_owned(),
            1024,
        ),
        t if t.ends_with("mib") || t.ends_with('m') => (
            t.trim_end_matches("mib").trim_end_matches('m').to_owned(),
            1024 * 1024,
        ),
        t => (t, 1),
    };
    let n = digits
        .parse::<usize>()
        .map_err(|_| format!("{s:?} is not a size (examples: 65536, 64k, 1m)"))?
        * mult;
    if !(limits::MIN_BUF..=limits::MAX_BUF).contains(&n) {
        return Err(format!(
            "{n} bytes is out of range {}..={} (1 KiB to 1 GiB)",
            limits::MIN_BUF,
            limits::MAX_BUF
        ));
    }
    Ok(n)
}

/// Where the stack sits: the TUN device and its addresses (`serve` and `fetch`).
#[derive(Debug, Args)]
pub struct LinkArgs {
    /// TUN device to attach to (created, brought up and given the gateway address if it does not exist).
    #[arg(long, default_value = "tun0")]
    pub tun: String,
    /// The stack's own address and subnet.
    #[arg(long, default_value = "10.77.0.2/24")]
    pub addr: Cidr,
    /// Next hop for other subnets: the kernel side of the TUN. Default: the first host of --addr's subnet.
    #[arg(long)]
    pub gateway: Option<Ipv4Addr>,
    /// Set the device's MTU (both ends of the TUN); the MSS we advertise follows (MTU - 40). Default: the device's.
    #[arg(long, value_parser = clap::value_parser!(u32).range(576..=65535))]
    pub mtu: Option<u32>,
}

/// What is recorded: the capture and the journey (`serve`, `fetch` and `demo`).
#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Write the capture here (pcapng). Default: a new timestamped file under captures/.
    #[arg(long, conflicts_with = "no_capture")]
    pub capture: Option<PathBuf>,
    /// Do not capture.
    #[arg(long)]
    pub no_capture: bool,
    /// How to show the journey: text (a timeline per connection when it ends), json (one event per line), off.
    #[arg(long, value_enum, default_value = "text")]
    pub journey: Format,
    /// Write the journey to this file instead of stderr.
    #[arg(long)]
    pub journey_file: Option<PathBuf>,
    /// Also write the TLS session secrets to FILE (SSLKEYLOGFILE format). Captures carry them anyway.
    #[arg(long, value_name = "FILE")]
    pub keylog: Option<PathBuf>,
}

/// Socket buffers (`serve`, `fetch` and `demo`).
#[derive(Debug, Args)]
pub struct BufferArgs {
    /// Socket receive buffer per connection; the advertised window and window scale follow (e.g. 64k).
    #[arg(long, default_value = "64k", value_parser = parse_buf)]
    pub rx_buf: usize,
    /// Socket send buffer per connection (e.g. 256k).
    #[arg(long, default_value = "256k", value_parser = parse_buf)]
    pub tx_buf: usize,
}

/// TCP's knobs (`serve`, `fetch`, `demo`): every socket gets them.
#[derive(Debug, Args)]
pub struct KnobArgs {
    /// Nagle's algorithm: small segments wait while data is unacknowledged (on), or go at once (off).
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = on_off, action = clap::ArgAction::Set)]
    pub nagle: bool,
    /// How long an ACK may wait for data to ride on, in ms (0..=1000), or off: ACK every segment at once.
    #[arg(long, value_name = "MS|off", default_value = "10", value_parser = ack_delay)]
    pub ack_delay: AckDelay,
    /// Send keep-alive probes after SECS idle (1..=7200). Default: none.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=7200))]
    pub keepalive: Option<u64>,
    /// Abort a connection whose peer has not acknowledged anything for SECS (1..=3600).
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
    /// Congestion control: none (only the peer's window limits), reno (RFC 5681) or cubic (RFC 8312).
    #[arg(long, value_enum, default_value = "none")]
    pub cc: crate::stack::Congestion,
}

impl KnobArgs {
    pub fn knobs(&self) -> crate::stack::TcpKnobs {
        crate::stack::TcpKnobs {
            nagle: self.nagle,
            ack_delay: self.ack_delay.0,
            keepalive: self.keepalive.map(std::time::Duration::from_secs),
            timeout: std::time::Duration::from_secs(self.timeout),
            congestion: self.cc,
        }
    }
}

fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s:?}: say on or off")),
    }
}

/// `--ack-delay`: milliseconds, or `None` for off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckDelay(pub Option<std::time::Duration>);

fn ack_delay(s: &str) -> Result<AckDelay, String> {
    if s == "off" {
        return Ok(AckDelay(None));
    }
    let ms: u64 = s
        .parse()
        .map_err(|_| format!("{s:?}: give milliseconds (0..=1000) or off"))?;
    if ms > 1000 {
        return Err(format!("{ms} is out of range 0..=1000 (ms), or off"));
    }
    Ok(AckDelay(Some(std::time::Duration::from_millis(ms))))
}

/// Small writes (`fetch`, `demo`): the request body goes out in pieces over time, which is
/// what Nagle's algorithm is about.
#[derive(Debug, Args)]
pub struct PaceArgs {
    /// Write the request body BYTES at a time (1..=65536) instead of all at once.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub write_size: Option<u64>,
    /// With --write-size: one write every MS milliseconds (0..=10000).
    #[arg(long, value_name = "MS", default_value_t = 1, requires = "write_size", value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub write_every: u64,
}

impl PaceArgs {
    pub fn pacing(&self) -> Option<crate::session::Pacing> {
        Some(crate::session::Pacing {
            size: self.write_size? as usize,
            every: std::time::Duration::from_millis(self.write_every),
        })
    }
}

/// Faults injected between the capture and the stack, both ways (`serve`, `fetch`, `demo`).
#[derive(Debug, Args)]
pub struct FaultArgs {
    /// Drop this share of packets, each way (percent, e.g. 2 or 0.5).
    #[arg(long, value_name = "PCT", default_value_t = 0.0, value_parser = percent)]
    pub loss: f64,
    /// Hold every packet this long, each way (milliseconds). Default 0 (demo: 1).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub delay: Option<u64>,
    /// Add a random 0..=MS to each packet's delay.
    #[arg(long, value_name = "MS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub jitter: u64,
    /// Hold this share of packets back so the ones after overtake them (percent).
    #[arg(long, value_name = "PCT", default_value_t = 0.0, value_parser = percent)]
    pub reorder: f64,
    /// Send this share of packets twice (percent).
    #[arg(long, value_name = "PCT", default_value_t = 0.0, value_parser = percent)]
    pub duplicate: f64,
    /// Flip one bit in this share of packets (percent); the checksum catches it.
    #[arg(long, value_name = "PCT", default_value_t = 0.0, value_parser = percent)]
    pub corrupt: f64,
    /// Link rate, each way (kbit/s): packets queue behind each other at this speed.
    #[arg(long, value_name = "KBIT", value_parser = clap::value_parser!(u64).range(8..=100_000_000))]
    pub rate: Option<u64>,
}

impl FaultArgs {
    pub fn config(&self, seed: u64, default_delay_ms: u64) -> crate::faults::FaultConfig {
        crate::faults::FaultConfig {
            loss: self.loss,
            delay_ms: self.delay.unwrap_or(default_delay_ms),
            jitter_ms: self.jitter,
            reorder: self.reorder,
            duplicate: self.duplicate,
            corrupt: self.corrupt,
            rate_kbit: self.rate,
            seed,
        }
    }
}

fn percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage (examples: 5, 0.5)"))?;
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is out of range 0..=100 (percent)"))
    }
}

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
    /// Exit as soon as our side is in TIME-WAIT instead of waiting it out (10 s).
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

#[derive(Debug, Args)]
pub struct DemoArgs {
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
    /// Seed for every random choice: ISNs, ports, TLS randomness, the certificate's key. The same seed gives the same capture, byte for byte.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Size of the /bytes download in the scenario (e.g. 300k, 1m).
    #[arg(long, default_value = "256k", value_parser = parse_download)]
    pub bytes: u64,
    /// MTU of the in-memory link; the MSS follows (MTU - 40).
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u32).range(576..=65535))]
    pub mtu: u32,
    /// Plain HTTP to port 80 instead of HTTPS to 443.
    #[arg(long)]
    pub http: bool,
    /// Which end's device the capture records: server (where the faults are) or client.
    #[arg(long, value_enum, default_value = "server")]
    pub capture_at: crate::demo::Side,
    /// The server's accept queue (1..=4096).
    #[arg(long, default_value_t = limits::DEFAULT_BACKLOG, value_parser = backlog_range)]
    pub backlog: usize,
}

fn parse_download(s: &str) -> Result<u64, String> {
    let (digits, mult) = match s.to_ascii_lowercase() {
        t if t.ends_with('k') => (t.trim_end_matches('k').to_owned(), 1000),
        t if t.ends_with('m') => (t.trim_end_matches('m').to_owned(), 1_000_000),
        t => (t, 1),
    };
    let n = digits
        .parse::<u64>()
        .map_err(|_| format!("{s:?} is not a size (examples: 1000, 300k, 1m)"))?
        * mult;
    if n > 100_000_000 {
        return Err(format!("{n} is out of range 0..=100000000 (100 MB)"));
    }
    Ok(n)
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub link: LinkArgs,
    #[command(flatten)]
    pub record: RecordArgs,
    #[command(flatten)]
    pub knobs: KnobArgs,
    #[command(flatten)]
    pub buffers: BufferArgs,
    #[command(flatten)]
    pub faults: FaultArgs,
    /// TCP port of the HTTP server.
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u16).range(1..))]
    pub http_port: u16,
    /// Accept queue: sockets listening or holding connections not yet taken. When none is free, new SYNs are dropped.
    #[arg(long, default_value_t = limits::DEFAULT_BACKLOG, value_parser = backlog_range)]
    pub backlog: usize,
    /// Most connections in the table at once (TIME-WAIT not counted); beyond it connections wait in the accept queue.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_CONNS, value_parser = max_conns_range)]
    pub max_conns: usize,
    /// Most sockets kept in TIME-WAIT; past it the oldest is reclaimed early (as Linux's tcp_max_tw_buckets).
    #[arg(long, default_value_t = limits::DEFAULT_MAX_TIME_WAIT, value_parser = max_conns_range)]
    pub max_time_wait: usize,
    /// Serve static files from this directory (never anything outside it).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Largest request body accepted; larger gets 413.
    #[arg(long, default_value = "1m", value_parser = parse_buf)]
    pub max_body: usize,
    /// Seconds a client may take to send one request before it gets 408.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout: u64,
    /// Seconds a kept-alive connection may sit idle before it gets 408 and is closed.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub idle_timeout: u64,
    /// Seed for initial sequence numbers (default: random). The same seed gives the same ISNs.
    #[arg(long)]
    pub seed: Option<u64>,
    /// TCP port of the HTTPS server (TLS 1.3 and 1.2, rustls).
    #[arg(long, default_value_t = 443, value_parser = clap::value_parser!(u16).range(1..), conflicts_with = "no_https")]
    pub https_port: u16,
    /// No HTTPS server.
    #[arg(long)]
    pub no_https: bool,
    /// PEM certificate (chain) for HTTPS. Without --cert/--key a self-signed one is made for every --name and --addr.
    #[arg(long, requires = "key", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// PEM private key for --cert.
    #[arg(long, requires = "cert", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Where to write the generated certificate, for clients' --cacert. Default: beside the capture.
    #[arg(long, value_name = "FILE", conflicts_with = "cert")]
    pub cert_out: Option<PathBuf>,
    /// UDP port of the DNS responder, which answers --name queries with the stack's address.
    #[arg(long, default_value_t = 53, value_parser = clap::value_parser!(u16).range(1..), conflicts_with = "no_dns")]
    pub dns_port: u16,
    /// No DNS responder.
    #[arg(long)]
    pub no_dns: bool,
    /// A name the DNS responder answers with an A record of --addr (repeatable; others get NXDOMAIN).
    #[arg(long = "name", value_name = "NAME", default_value = "synack.test", value_parser = crate::dns::valid_name)]
    pub names: Vec<String>,
}

fn bounded(s: &str, lo: usize, hi: usize) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (lo..=hi).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} is out of range {lo}..={hi}"))
    }
}

fn backlog_range(s: &str) -> Result<usize, String> {
    bounded(s, 1, limits::MAX_BACKLOG)
}

fn max_conns_range(s: &str) -> Result<usize, String> {
    bounded(s, 1, limits::MAX_MAX_CONNS)
}

/// Parses the command line, runs the command, and turns any failure into one sentence
/// on stderr and a non-zero exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("synack=info,smoltcp=warn"),
    )
    .format_timestamp_millis()
    .init();
    let result = match cli.command {
        Command::Serve(args) => crate::serve::run(args).map(|()| 0),
        Command::Fetch(args) => crate::fetch::run(args),
        Command::Demo(args) => crate::demo::run(args).map(|()| 0),
        Command::Ladder(args) => crate::analyze::ladder_command(args).map(|()| 0),
        Command::Stats(args) => crate::analyze::stats_command(args).map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("synack: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing() {
        let c: Cidr = "10.77.0.2/24".parse().unwrap();
        assert_eq!(
            (c.addr, c.prefix, c.first_host()),
            (Ipv4Addr::new(10, 77, 0, 2), 24, Ipv4Addr::new(10, 77, 0, 1))
        );
        assert!("10.77.0.2/31".parse::<Cidr>().is_err());
        assert!("nope/24".parse::<Cidr>().is_err());
    }

    #[test]
    fn buffer_sizes() {
        assert_eq!(parse_buf("64k"), Ok(65536));
        assert_eq!(parse_buf("1M"), Ok(1 << 20));
        assert_eq!(parse_buf("4096"), Ok(4096));
        assert!(parse_buf("12").unwrap_err().contains("out of range"));
        assert!(parse_buf("lots").is_err());
    }

    #[test]
    fn flags_are_bounded_with_a_clear_range() {
        let err = Cli::try_parse_from(["synack", "serve", "--backlog", "0"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("1..=4096"), "{err}");
        let err = Cli::try_parse_from(["synack", "serve", "--mtu", "100"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("576"), "{err}");
        assert!(
            Cli::try_parse_from(["synack", "serve", "--capture", "x", "--no-capture"]).is_err()
        );
        for (flag, value, range) in [
            ("--ack-delay", "5000", "0..=1000"),
            ("--keepalive", "0", "1..=7200"),
            ("--timeout", "0", "1..=3600"),
            ("--loss", "101", "0..=100"),
            ("--delay", "20000", "0..=10000"),
        ] {
            let err = Cli::try_parse_from(["synack", "demo", flag, value])
                .unwrap_err()
                .to_string();
            assert!(err.contains(range), "{flag} {value}: {err}");
        }
        let err = Cli::try_parse_from(["synack", "demo", "--nagle", "maybe"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("on or off"), "{err}");
        let Command::Demo(d) =
            Cli::try_parse_from(["synack", "demo", "--nagle", "off", "--ack-delay", "off"])
                .unwrap()
                .command
        else {
            panic!("demo")
        };
        let knobs = d.knobs.knobs();
        assert!(!knobs.nagle && knobs.ack_delay.is_none());
        let ok = Cli::try_parse_from(["synack", "serve", "--journey", "json"]).unwrap();
        let Command::Serve(a) = ok.command else {
            panic!("serve")
        };
        assert_eq!(a.record.journey, Format::Json);
    }
}
