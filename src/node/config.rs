//! What the node is configured to be, the bounds on each knob, and what it counts.

use std::net::Ipv4Addr;

use crate::http::Limits;
use crate::session::Timeouts;

/// Bounds and defaults for the knobs, each with why.
pub mod limits {
    use std::time::Duration;

    /// Established connections the application has not taken yet, per listening port:
    /// Linux's `somaxconn` (4096 since Linux 5.4). A SYN that finds it full is dropped.
    pub const DEFAULT_BACKLOG: usize = 4096;
    pub const MAX_BACKLOG: usize = 65_536;
    /// Half-open connections (SYN-RECEIVED) per listening port: Linux's
    /// `tcp_max_syn_backlog` on this kind of machine. Past it, SYNs get cookies.
    pub const DEFAULT_SYN_BACKLOG: usize = 2048;
    pub const MAX_SYN_BACKLOG: usize = 65_536;
    /// Connections being served at once. Idle ones hold a few pages each (the buffers
    /// are lazily backed, see `node::buffers`), so this is a bound, not a budget.
    pub const DEFAULT_MAX_CONNS: usize = 16_384;
    pub const MAX_MAX_CONNS: usize = 262_144;
    /// TIME-WAIT entries kept at once: Linux's `tcp_max_tw_buckets` here. Past it a
    /// connection closes without TIME-WAIT, and the journey says so.
    pub const DEFAULT_MAX_TIME_WAIT: usize = 131_072;
    pub const MAX_MAX_TIME_WAIT: usize = 4_194_304;
    /// Connections we closed that still wait for their peer (FIN-WAIT, CLOSING,
    /// LAST-ACK): Linux's `tcp_max_orphans` on a machine of a few GB. Past it, the next
    /// one is reset rather than kept.
    pub const DEFAULT_MAX_CLOSING: usize = 65_536;
    /// 2 MSL: Linux's `TCP_TIMEWAIT_LEN` (RFC 9293 §3.4.2 suggests MSL = 2 minutes).
    pub const DEFAULT_TIME_WAIT: Duration = Duration::from_secs(60);
    pub const MAX_TIME_WAIT: Duration = Duration::from_secs(600);
    /// How long we wait in FIN-WAIT-2 (our FIN acknowledged) for the peer's FIN before we
    /// reset: Linux's `tcp_fin_timeout` default. A peer that never sends its FIN would
    /// otherwise hold a socket forever.
    pub const FIN_TIMEOUT: Duration = Duration::from_secs(60);
    /// A peer silent this long while we have unacknowledged data is gone: smoltcp aborts.
    pub const DEAD_PEER_TIMEOUT: Duration = Duration::from_secs(60);
    /// A peer that is not silent but takes none of our data this long (a zero window it
    /// never opens, a reader that stopped reading) is reset: nginx's `send_timeout`.
    /// Linux alone would wait for ever; a server that did would let slow readers hold
    /// every place and its buffers.
    pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);
    /// 64 KiB receive: a request head never needs more. One byte past what 16 bits can
    /// say, so smoltcp offers window scale 1 in the SYN-ACK (RFC 7323 §2.2).
    pub const DEFAULT_RX_BUF: usize = 64 * 1024;
    /// 256 KiB send: about 4 ms at 500 MB/s, enough to keep a local link busy. Only the
    /// pages a response fills are ever resident.
    pub const DEFAULT_TX_BUF: usize = 256 * 1024;
    /// Below one full-size segment TCP cannot make progress; above 1 GiB (2^30) the
    /// window scale option (at most 14, RFC 7323 §2.3) cannot describe it.
    pub const MIN_BUF: usize = 1024;
    pub const MAX_BUF: usize = 1 << 30;
    /// Challenge ACKs sent per second at most (RFC 5961 §7; Linux's old
    /// `tcp_challenge_ack_limit` default): a blind attacker cannot make us a reflector.
    pub const CHALLENGE_ACKS_PER_SEC: u32 = 1000;
}

/// Congestion control (`--cc`): smoltcp's controllers (RFC 5681 Reno, RFC 8312 CUBIC),
/// or none, where only the peer's window limits what is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Congestion {
    #[default]
    None,
    Reno,
    Cubic,
}

/// The per-socket TCP knobs, applied to every socket the stack listens or connects with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpKnobs {
    /// Nagle's algorithm (RFC 896; RFC 9293 §3.7.4): hold small segments while data is
    /// unacknowledged.
    pub nagle: bool,
    /// How long an ACK may wait for data to ride on (RFC 9293 §3.8.6.3, RFC 1122
    /// §4.2.3.2); `None` acknowledges at once.
    pub ack_delay: Option<std::time::Duration>,
    /// Keep-alive probes after this much idle time (RFC 9293 §3.8.4); `None`: none.
    pub keepalive: Option<std::time::Duration>,
    /// A connection with unacknowledged data and no word from the peer this long is
    /// aborted (RFC 9293 §3.8.3, the user timeout).
    pub timeout: std::time::Duration,
    pub congestion: Congestion,
}

impl Default for TcpKnobs {
    fn default() -> Self {
        TcpKnobs {
            // Off, as servers that write whole responses run (nginx's tcp_nodelay) and as
            // curl does: with it on, a response of two segments waits for the client's
            // delayed ACK (~40 ms) before its second, short segment leaves.
            nagle: false,
            // smoltcp's default, and the order of what Linux does (40 ms minimum).
            ack_delay: Some(std::time::Duration::from_millis(10)),
            keepalive: None,
            timeout: limits::DEAD_PEER_TIMEOUT,
            congestion: Congestion::None,
        }
    }
}

impl TcpKnobs {
    /// Sets them on a socket. The congestion controller is made anew, so a reused socket
    /// does not carry the last connection's window.
    pub fn apply(&self, sock: &mut smoltcp::socket::tcp::Socket<'_>) {
        use smoltcp::socket::tcp::CongestionControl;
        sock.set_nagle_enabled(self.nagle);
        sock.set_ack_delay(self.ack_delay.map(Into::into));
        sock.set_keep_alive(self.keepalive.map(Into::into));
        sock.set_timeout(Some(self.timeout.into()));
        sock.set_congestion_control(match self.congestion {
            Congestion::None => CongestionControl::None,
            Congestion::Reno => CongestionControl::Reno,
            Congestion::Cubic => CongestionControl::Cubic,
        });
    }
}

/// What the node is configured to be.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: Ipv4Addr,
    /// The link's MTU: our MSS is this minus 40 (IPv4 and TCP headers).
    pub mtu: usize,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    /// Whether the stack listens at all: a client-only stack (`fetch`) does not.
    pub listen: bool,
    pub http_port: u16,
    /// The HTTPS listener's port, if HTTPS is served.
    pub https_port: Option<u16>,
    /// TLS for the HTTPS port.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// Where rustls logs the session secrets (for the capture and `--keylog`).
    pub keylog: Option<std::sync::Arc<crate::tls::KeyLogLines>>,
    /// Established connections not yet taken, per port (`--backlog`).
    pub backlog: usize,
    /// Half-open connections per port before SYN cookies (`--syn-backlog`).
    pub syn_backlog: usize,
    pub max_conns: usize,
    pub max_time_wait: usize,
    /// Connections we closed that still wait for their peer (Linux's orphans), at most.
    pub max_closing: usize,
    /// How long TIME-WAIT lasts (`--time-wait`; 2 MSL).
    pub time_wait: std::time::Duration,
    pub rx_buf: usize,
    pub tx_buf: usize,
    pub limits: Limits,
    pub timeouts: Timeouts,
    /// Seeds smoltcp's generator: initial sequence numbers and ephemeral ports.
    pub seed: u64,
    /// Keys SYN cookies and passive ISNs (RFC 6528): from the OS unless the run is to be
    /// reproducible; `None` derives them from `seed`, so a seeded run repeats its ISNs.
    pub secret: Option<[u8; 32]>,
    /// The DNS responder's UDP port, or `None` for no responder.
    pub dns_port: Option<u16>,
    /// The names the DNS responder answers with the stack's address.
    pub dns_names: Vec<String>,
    pub knobs: TcpKnobs,
    /// Explain packets in words (the capture's comments): what each segment is and what
    /// it caused. Off when nothing records them, to save the formatting.
    pub notes: bool,
    /// The sender's inner life on every segment we send (`--internals on`): why it left,
    /// bytes in flight, the peer's window, the RTT estimator, what data waited for.
    pub internals: bool,
}

impl Config {
    /// What sockets are made with unless an application says otherwise.
    pub fn socket_options(&self) -> super::SocketOptions {
        super::SocketOptions {
            rx_buf: self.rx_buf,
            tx_buf: self.tx_buf,
            knobs: self.knobs,
        }
    }

    /// The ports with an accept queue: HTTP, and HTTPS if served.
    pub fn listening_ports(&self) -> impl Iterator<Item = u16> + use<> {
        let listen = self.listen;
        let http = Some(self.http_port).filter(|_| listen);
        http.into_iter().chain(self.https_port.filter(|_| listen))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: Ipv4Addr::new(10, 77, 0, 2),
            mtu: 1500,
            prefix: 24,
            gateway: Ipv4Addr::new(10, 77, 0, 1),
            listen: true,
            http_port: 80,
            https_port: None,
            tls: None,
            keylog: None,
            backlog: limits::DEFAULT_BACKLOG,
            syn_backlog: limits::DEFAULT_SYN_BACKLOG,
            max_conns: limits::DEFAULT_MAX_CONNS,
            max_time_wait: limits::DEFAULT_MAX_TIME_WAIT,
            max_closing: limits::DEFAULT_MAX_CLOSING,
            time_wait: limits::DEFAULT_TIME_WAIT,
            rx_buf: limits::DEFAULT_RX_BUF,
            tx_buf: limits::DEFAULT_TX_BUF,
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            seed: 0,
            secret: None,
            dns_port: Some(53),
            dns_names: vec!["synack.test".into()],
            knobs: TcpKnobs::default(),
            notes: true,
            internals: false,
        }
    }
}

/// What the node counted over its life (`GET /stats`, the summary at exit).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub connections: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    /// SYNs dropped because the accept queue was full.
    pub syn_dropped: u64,
    /// Handshake-completing ACKs dropped because the accept queue was full.
    pub accept_queue_overflows: u64,
    /// SYN-ACKs sent as cookies (the SYN queue was full) and cookies that came back valid.
    pub syn_cookies_sent: u64,
    pub syn_cookies_validated: u64,
    /// ACKs to a listening port that carried no valid cookie (answered with RST).
    pub syn_cookies_failed: u64,
    /// Segments dropped: bad checksum, malformed, not for us, fragments given up.
    pub dropped_checksum: u64,
    pub dropped_malformed: u64,
    pub dropped_not_for_us: u64,
    /// From a source no peer can have (ours, a broadcast, multicast, loopback, the
    /// subnet's own addresses): a LAND attack or a spoof (RFC 1812 §5.3.7).
    pub dropped_martian: u64,
    pub fragments_reassembled: u64,
    pub fragments_expired: u64,
    /// Datagrams given up whole (an overlap, too many pieces, lengths that disagree or
    /// too long), and fragments ignored as repeats of bytes already there.
    pub fragments_discarded: u64,
    pub fragments_duplicate: u64,
    /// FINs not taken because they lay beyond our receive window (the data before them
    /// inside it was).
    pub fins_beyond_window: u64,
    /// Segments of ours cut to the peer's window (smoltcp's fast retransmission sends a
    /// whole MSS).
    pub segments_cut_to_window: u64,
    /// Resets we sent for segments to closed ports (RFC 9293 §3.10.7.1).
    pub resets_sent: u64,
    /// RFC 5961: challenge ACKs sent, and those the rate limit held back.
    pub challenge_acks: u64,
    pub challenge_acks_limited: u64,
    /// TIME-WAIT: entries made, skipped past `--max-time-wait`, ended by RST, taken
    /// over by a new SYN, FINs acknowledged again.
    pub time_wait_entered: u64,
    pub time_wait_skipped: u64,
    pub time_wait_reset: u64,
    pub time_wait_reused: u64,
    pub time_wait_fin_acked: u64,
    pub fin_timeouts: u64,
    /// Connections reset because the peer took none of our data for `SEND_TIMEOUT`, and
    /// those reset because `max_conns` closing connections were waiting already.
    pub send_timeouts: u64,
    pub closing_reset: u64,
    pub aborted_streams: u64,
    pub dns_answered: u64,
    pub dns_dropped: u64,
    pub icmp_echo: u64,
}
