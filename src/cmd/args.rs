//! Flags that several commands share: where the stack sits, what is recorded, buffers,
//! TCP's knobs, paced writes and faults. Each value is bounded, and a bad one is refused
//! with the range it must be in.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::Args;

use synack::capture::{CaptureConfig, Target};
use synack::node::limits;

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

pub fn parse_buf(s: &str) -> Result<usize, String> {
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
    /// Write the capture here (pcapng); `-` streams it to stdout for a live reader (`--capture - | wireshark -k -i -`), and a FIFO is streamed into. Default: a new timestamped file under captures/.
    #[arg(long, value_name = "PATH|-", conflicts_with = "no_capture")]
    pub capture: Option<PathBuf>,
    /// The most a capture file may hold (64k..=1024g, e.g. 100m, 2g). At it, capturing stops (and later packets are counted), or with --capture-files the next file starts. Default: 2g for a file, none for a stream.
    #[arg(long, value_name = "SIZE", value_parser = capture_limit, conflicts_with = "no_capture")]
    pub capture_limit: Option<u64>,
    /// Keep a ring of N capture files (1..=10000) of up to --capture-limit each, named PATH_00001.pcapng, PATH_00002.pcapng ...; the oldest is removed as a new one starts.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(synack::capture::MAX_FILES)), conflicts_with = "no_capture")]
    pub capture_files: u32,
    /// Do not capture.
    #[arg(long)]
    pub no_capture: bool,
    /// How to show the journey: text (a timeline per connection when it ends), json (one event per line), off.
    #[arg(long, value_enum, default_value = "text")]
    pub journey: JourneyFormat,
    /// Write the journey to this file instead of stderr.
    #[arg(long)]
    pub journey_file: Option<PathBuf>,
    /// The most the --journey-file may hold (4k..=1024g); past it, later events are not written to it.
    #[arg(long, value_name = "SIZE", default_value = "256m", value_parser = journey_limit)]
    pub journey_limit: u64,
    /// Also write the TLS session secrets to FILE (SSLKEYLOGFILE format). Captures carry them anyway.
    #[arg(long, value_name = "FILE")]
    pub keylog: Option<PathBuf>,
    /// The sender's inner life on every segment we send: why it left now, bytes in flight, the peer's window, the RTT estimator, what data waited for (in the capture's comments and the journey). Costs a few percent.
    #[arg(long, value_name = "on|off", default_value = "off", value_parser = on_off, action = clap::ArgAction::Set)]
    pub internals: bool,
}

impl RecordArgs {
    /// What the capture is asked to be, unless `--no-capture`; `command` names the
    /// default file.
    pub fn capture_config(&self, command: &str) -> Option<CaptureConfig> {
        if self.no_capture {
            return None;
        }
        let target = match &self.capture {
            Some(path) if path.as_os_str() == "-" => Target::Stdout,
            Some(path) => Target::Path(path.clone()),
            None => Target::Path(synack::capture::default_path(command)),
        };
        Some(CaptureConfig {
            target,
            limit: self.capture_limit,
            files: self.capture_files,
        })
    }

    /// Whether the capture goes to stdout (`--capture -`): nothing else may.
    pub fn captures_to_stdout(&self) -> bool {
        !self.no_capture && self.capture.as_ref().is_some_and(|p| p.as_os_str() == "-")
    }
}

/// A size in bytes, with an optional k, m or g (KiB, MiB, GiB), within `lo..=hi`.
pub fn parse_size(s: &str, lo: u64, hi: u64) -> Result<u64, String> {
    let t = s.to_ascii_lowercase();
    let t = t.strip_suffix("ib").unwrap_or(&t);
    let (digits, mult) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'm')) => (&t[..i], 1 << 20),
        Some((i, 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let n = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a size (examples: 65536, 64k, 100m, 2g)"))?;
    if !(lo..=hi).contains(&n) {
        return Err(format!(
            "{} is out of range {}..={}",
            synack::capture::size(n),
            synack::capture::size(lo),
            synack::capture::size(hi)
        ));
    }
    Ok(n)
}

/// The largest size the limits take: far beyond any disk this runs on.
const MAX_LIMIT: u64 = 1 << 40;

fn capture_limit(s: &str) -> Result<u64, String> {
    parse_size(s, synack::capture::MIN_FILE_LIMIT, MAX_LIMIT)
}

fn journey_limit(s: &str) -> Result<u64, String> {
    parse_size(s, 4 << 10, MAX_LIMIT)
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
    /// Nagle's algorithm: small segments wait while data is unacknowledged (on), or go at once (off, the default: responses are written whole, as nginx's tcp_nodelay and curl do).
    #[arg(long, value_name = "on|off", default_value = "off", value_parser = on_off, action = clap::ArgAction::Set)]
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
    pub cc: Congestion,
}

impl KnobArgs {
    pub fn knobs(&self) -> synack::node::TcpKnobs {
        synack::node::TcpKnobs {
            nagle: self.nagle,
            ack_delay: self.ack_delay.0,
            keepalive: self.keepalive.map(std::time::Duration::from_secs),
            timeout: std::time::Duration::from_secs(self.timeout),
            congestion: self.cc.into(),
        }
    }
}

pub fn on_off(s: &str) -> Result<bool, String> {
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
    pub fn pacing(&self) -> Option<synack::session::Pacing> {
        Some(synack::session::Pacing {
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
    pub fn config(&self, seed: u64, default_delay_ms: u64) -> synack::link::FaultConfig {
        synack::link::FaultConfig {
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

pub fn percent(s: &str) -> Result<f64, String> {
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

pub fn bounded(s: &str, lo: usize, hi: usize) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (lo..=hi).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} is out of range {lo}..={hi}"))
    }
}

pub fn backlog_range(s: &str) -> Result<usize, String> {
    bounded(s, 1, limits::MAX_BACKLOG)
}

pub fn syn_backlog_range(s: &str) -> Result<usize, String> {
    bounded(s, 1, limits::MAX_SYN_BACKLOG)
}

pub fn max_time_wait_range(s: &str) -> Result<usize, String> {
    bounded(s, 0, limits::MAX_MAX_TIME_WAIT)
}

/// A listener's two queues, as Linux has them, and TIME-WAIT (`serve`).
#[derive(Debug, Args)]
pub struct QueueArgs {
    /// Established connections not yet taken by the server, per port (Linux's somaxconn); a SYN that finds it full is dropped, never refused.
    #[arg(long, default_value_t = limits::DEFAULT_BACKLOG, value_parser = backlog_range)]
    pub backlog: usize,
    /// Half-open connections (SYN-RECEIVED) per port (Linux's tcp_max_syn_backlog); past it, SYNs get SYN cookies.
    #[arg(long, default_value_t = limits::DEFAULT_SYN_BACKLOG, value_parser = syn_backlog_range)]
    pub syn_backlog: usize,
    #[command(flatten)]
    pub tw: TimeWaitArgs,
}

/// TIME-WAIT, for the side that closes first (`serve`, `fetch`, `demo`).
#[derive(Debug, Args)]
pub struct TimeWaitArgs {
    /// Seconds our side stays in TIME-WAIT after closing first (0..=600; Linux: 60, 2 MSL).
    #[arg(long, value_name = "SECS", default_value_t = limits::DEFAULT_TIME_WAIT.as_secs(), value_parser = clap::value_parser!(u64).range(0..=600))]
    pub time_wait: u64,
    /// Most connections in TIME-WAIT at once (Linux's tcp_max_tw_buckets); past it a connection closes without TIME-WAIT, and says so.
    #[arg(long, value_name = "N", default_value_t = limits::DEFAULT_MAX_TIME_WAIT, value_parser = max_time_wait_range)]
    pub max_time_wait: usize,
}

pub fn max_conns_range(s: &str) -> Result<usize, String> {
    bounded(s, 1, limits::MAX_MAX_CONNS)
}

/// How the journey is shown (`--journey`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JourneyFormat {
    /// A readable timeline per connection, printed when the connection ends.
    Text,
    /// One JSON object per event, one per line, as it happens.
    Json,
    /// Nothing printed (the journey is still kept for `/journey`).
    Off,
}

impl From<JourneyFormat> for synack::journey::Format {
    fn from(f: JourneyFormat) -> Self {
        match f {
            JourneyFormat::Text => Self::Text,
            JourneyFormat::Json => Self::Json,
            JourneyFormat::Off => Self::Off,
        }
    }
}

/// Congestion control (`--cc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Congestion {
    /// Only the peer's window limits what is in flight.
    None,
    /// RFC 5681 Reno.
    Reno,
    /// RFC 8312 CUBIC.
    Cubic,
}

impl From<Congestion> for synack::node::Congestion {
    fn from(c: Congestion) -> Self {
        match c {
            Congestion::None => Self::None,
            Congestion::Reno => Self::Reno,
            Congestion::Cubic => Self::Cubic,
        }
    }
}
