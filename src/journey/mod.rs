//! The journey log: what happened to each connection, stage by stage, as plain data.
//!
//! Code that records an event does not format anything. [`render`] turns events into a
//! text timeline or JSON lines; the `/journey` route serialises a [`ConnRecord`]; the
//! capture's comments are built by the stack from the same facts.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddrV4;

use serde::Serialize;

use crate::observe::{Direction, SynOptions};

pub mod file;
pub mod render;

/// Every connection gets one, in the order their SYNs were accepted, starting at 1.
pub type ConnId = u64;

/// The stages of a request's journey (see DESIGN.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Resolve,
    Connect,
    Receive,
    Decrypt,
    Parse,
    Decode,
    Process,
    Respond,
    Encrypt,
    Send,
    Close,
}

impl Stage {
    pub const ALL: [Stage; 11] = [
        Stage::Resolve,
        Stage::Connect,
        Stage::Receive,
        Stage::Decrypt,
        Stage::Parse,
        Stage::Decode,
        Stage::Process,
        Stage::Respond,
        Stage::Encrypt,
        Stage::Send,
        Stage::Close,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Resolve => "resolve",
            Stage::Connect => "connect",
            Stage::Receive => "receive",
            Stage::Decrypt => "decrypt",
            Stage::Parse => "parse",
            Stage::Decode => "decode",
            Stage::Process => "process",
            Stage::Respond => "respond",
            Stage::Encrypt => "encrypt",
            Stage::Send => "send",
            Stage::Close => "close",
        }
    }
}

/// What happened, with the numbers that matter.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum What {
    /// A DNS query was answered.
    Resolved {
        from: SocketAddrV4,
        id: u16,
        name: String,
        qtype: String,
        answer: Option<std::net::Ipv4Addr>,
        rcode: &'static str,
    },
    /// A datagram to the DNS port got no answer (too short to be DNS, or not a query).
    DnsDropped {
        from: SocketAddrV4,
        bytes: usize,
        reason: &'static str,
    },
    /// We asked a DNS server for a name's address (the client's resolve stage).
    Lookup {
        name: String,
        server: std::net::Ipv4Addr,
    },
    /// The answer to our lookup, or why there is none.
    LookedUp {
        name: String,
        addresses: Vec<std::net::Ipv4Addr>,
        error: Option<String>,
        duration_us: u64,
    },
    /// We opened a connection: our SYN (handshake 1/3, the active open).
    SynSent {
        local: SocketAddrV4,
        remote: SocketAddrV4,
        isn: u32,
        window: u16,
        #[serde(flatten)]
        options: SynOptions,
    },
    /// The server's SYN-ACK reached us (handshake 2/3).
    SynAckReceived {
        isn: u32,
        ack: u32,
        window: u16,
        #[serde(flatten)]
        options: SynOptions,
    },
    /// Our ACK of the server's SYN-ACK (handshake 3/3).
    AckSent { seq: u32, ack: u32 },
    /// A request was encoded and queued to be sent (the client's side).
    Requested {
        method: String,
        target: String,
        head_bytes: usize,
        body_bytes: usize,
    },
    /// A response's status line and headers arrived and were parsed.
    ResponseHead {
        status: u16,
        reason: String,
        version: &'static str,
        headers: usize,
        head_bytes: usize,
    },
    /// A response's body is complete.
    ResponseDone {
        status: u16,
        body_bytes: u64,
        duration_us: u64,
    },
    /// The exchange failed: the response was malformed, TLS broke, the body could not be
    /// written.
    Failed { reason: String },
    /// The peer's SYN reached a listening port (handshake 1/3).
    Syn {
        remote: SocketAddrV4,
        local: SocketAddrV4,
        isn: u32,
        window: u16,
        #[serde(flatten)]
        options: SynOptions,
    },
    /// The SYN queue was full: the SYN was answered with a cookie and nothing was kept
    /// (RFC 4987 §3.6).
    SynCookieSent {
        remote: SocketAddrV4,
        cookie: u32,
        mss: u16,
    },
    /// An ACK brought back a valid cookie: the connection was rebuilt from it.
    CookieValidated {
        remote: SocketAddrV4,
        mss: u16,
        window_scale: Option<u8>,
        sack_permitted: bool,
    },
    /// A RST or SYN that RFC 5961 does not let end the connection; `sent`: a challenge
    /// ACK went out (false: the rate limit held it back).
    ChallengeAck { reason: &'static str, sent: bool },
    /// A SYN found no free listening socket and was dropped, as Linux does when its
    /// accept queue is full; the client will retransmit it.
    SynDropped {
        remote: SocketAddrV4,
        backlog: usize,
    },
    /// Our SYN-ACK (handshake 2/3).
    SynAck {
        isn: u32,
        ack: u32,
        window: u16,
        #[serde(flatten)]
        options: SynOptions,
    },
    /// The peer's ACK of our SYN-ACK (handshake 3/3).
    HandshakeAck { seq: u32, ack: u32 },
    /// The connection left the accept queue for the connection table.
    Accepted {
        queue_depth: usize,
        backlog: usize,
        active: usize,
    },
    /// Our side's TCP state changed (RFC 9293 §3.3.2).
    State {
        from: &'static str,
        to: &'static str,
    },
    /// Bytes copied out of the socket's receive buffer.
    Received {
        bytes: usize,
        rx_fill: usize,
        rx_capacity: usize,
        window: usize,
    },
    /// The TLS handshake completed (the decrypt stage's setup).
    TlsEstablished {
        version: String,
        cipher: String,
        sni: Option<String>,
        alpn: Option<String>,
        handshake_us: u64,
    },
    /// TLS records were opened into request plaintext.
    Decrypted {
        record_bytes: u64,
        plaintext_bytes: u64,
    },
    /// A response's plaintext was sealed into TLS records.
    Encrypted {
        plaintext_bytes: u64,
        record_bytes: u64,
    },
    /// A request line and headers were parsed.
    Parsed {
        method: String,
        path: String,
        version: &'static str,
        headers: usize,
        head_bytes: usize,
        body_bytes: usize,
    },
    /// The request could not be parsed or broke a limit; it is answered with `status`.
    Rejected { status: u16, reason: String },
    /// A structured body was decoded.
    Decoded {
        content_type: String,
        bytes: usize,
        ok: bool,
        detail: String,
    },
    /// The handler ran.
    Processed {
        route: &'static str,
        duration_us: u64,
    },
    /// The response was built.
    Responded {
        status: u16,
        length: u64,
        streamed: bool,
        keep_alive: bool,
    },
    /// A segment we sent, and what the sender knew (`--internals on`): why it left now,
    /// bytes in flight after it, the peer's window, our send buffer's fill, the RTT
    /// estimator if it took a sample since the last segment, and how long data waited
    /// before it and why. smoltcp does not expose its congestion window.
    Segment {
        why: String,
        seq: u32,
        len: u32,
        flags: &'static str,
        in_flight: u32,
        peer_window: u32,
        tx_fill: usize,
        tx_capacity: usize,
        rtt: Option<crate::internals::Rtte>,
        waited_us: Option<u64>,
        held_by: Option<&'static str>,
    },
    /// A response was fully queued into the send buffer.
    Sent {
        bytes: u64,
        tx_fill: usize,
        tx_capacity: usize,
    },
    /// A FIN crossed the wire.
    Fin { dir: Direction, seq: u32, ack: u32 },
    /// The first ACK of a FIN crossed the wire.
    FinAcked { dir: Direction, ack: u32 },
    /// A RST crossed the wire.
    Rst { dir: Direction, seq: u32 },
    /// We closed, and the connection did not finish closing in time: reset.
    FinTimeout { state: &'static str, secs: u64 },
    /// The peer took none of our data (or our FIN) for `secs`: reset.
    SendTimeout { state: &'static str, secs: u64 },
    /// We closed it while `limit` closing connections were already waiting: reset.
    TooManyClosing { limit: usize },
    /// `--max-time-wait` entries were in use: this connection closed without TIME-WAIT.
    TimeWaitSkipped { limit: usize },
    /// In TIME-WAIT, the peer's FIN came again: ACKed again, the timer restarted.
    TimeWaitFinAgain { restarted_secs: u64 },
    /// The TIME-WAIT entry ended: it expired, a RST or a new SYN ended it, or we stopped.
    TimeWaitEnded { why: &'static str, after_ms: u64 },
    /// The socket and its buffers are given back: what the connection carried and held.
    /// `time_wait_secs`: a TIME-WAIT entry goes on for that long.
    Closed {
        bytes_in: u64,
        bytes_out: u64,
        requests: u64,
        duration_us: u64,
        /// The socket's buffers and the most each held at once.
        rx_buf: usize,
        tx_buf: usize,
        peak_rx: usize,
        peak_tx: usize,
        /// Resident bytes of those buffers, handed back to the kernel now.
        freed_bytes: usize,
        time_wait_secs: Option<u64>,
        active: bool,
    },
}

/// One thing that happened to one connection (or to the server, with no connection).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conn: Option<ConnId>,
    /// Microseconds on the stack's clock (since the Unix epoch for real runs).
    pub t_us: i64,
    pub stage: Stage,
    #[serde(flatten)]
    pub what: What,
}

/// The handshake, as both SYNs told it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Handshake {
    pub client_isn: Option<u32>,
    pub server_isn: Option<u32>,
    /// The options and window of the peer's SYN.
    pub client_window: Option<u16>,
    pub client_options: SynOptions,
    /// The options and window of our SYN-ACK.
    pub server_window: Option<u16>,
    pub server_options: SynOptions,
}

/// The most events kept per connection; a long-lived connection keeps its first ones
/// and counts the rest, so a keep-alive connection cannot grow without bound.
pub const MAX_EVENTS_PER_CONN: usize = 512;

/// One connection's journey so far.
#[derive(Debug, Clone, Serialize)]
pub struct ConnRecord {
    pub id: ConnId,
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
    pub opened_us: i64,
    /// We opened it (our SYN): `fetch`'s side. Otherwise a peer connected to us.
    pub active: bool,
    pub handshake: Handshake,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub requests: u64,
    /// When each stage was first reached, microseconds on the stack's clock.
    pub stages: Vec<(Stage, i64)>,
    pub events: Vec<Event>,
    pub events_dropped: u64,
}

impl ConnRecord {
    fn push(&mut self, event: Event) {
        if !self.stages.iter().any(|(s, _)| *s == event.stage) {
            self.stages.push((event.stage, event.t_us));
        }
        if self.events.len() < MAX_EVENTS_PER_CONN {
            self.events.push(event);
        } else {
            self.events_dropped += 1;
        }
    }
}

/// How the journey is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A readable timeline per connection, printed when the connection ends.
    Text,
    /// One JSON object per event, one per line, as it happens.
    Json,
    /// Nothing printed (the journey is still kept for `/journey`).
    Off,
}

/// Keeps every live connection's record and writes the journey out.
pub struct Journal {
    format: Format,
    out: Box<dyn Write + Send>,
    conns: HashMap<ConnId, ConnRecord>,
    next_id: ConnId,
    /// Who this journal speaks for, on lines of events with no connection.
    side: &'static str,
    /// Kept for the caller rather than printed (`synack demo` lays two sides out together).
    kept: Option<Kept>,
}

/// What a keeping journal holds once connections end.
#[derive(Debug, Default)]
pub struct Kept {
    pub conns: Vec<ConnRecord>,
    /// Events that belong to no connection (DNS).
    pub loose: Vec<Event>,
}

impl Kept {
    /// Every event, the connection-less ones first.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.loose
            .iter()
            .chain(self.conns.iter().flat_map(|c| c.events.iter()))
    }
}

impl Journal {
    pub fn new(format: Format, out: Box<dyn Write + Send>) -> Self {
        Journal {
            format,
            out,
            conns: HashMap::new(),
            next_id: 1,
            side: "server",
            kept: None,
        }
    }

    /// Names the side on lines of events with no connection ("server", "client").
    pub fn with_side(mut self, side: &'static str) -> Self {
        self.side = side;
        self
    }

    /// A journal that prints nothing and keeps every record, ended or not, for
    /// [`take_kept`](Self::take_kept).
    pub fn keeping(side: &'static str) -> Self {
        let mut journal = Self::silent().with_side(side);
        journal.kept = Some(Kept::default());
        journal
    }

    /// The records kept so far, ended ones first, oldest first (a keeping journal only).
    pub fn take_kept(&mut self) -> Kept {
        let mut kept = self.kept.take().unwrap_or_default();
        let mut open: Vec<ConnRecord> = self.conns.values().cloned().collect();
        open.sort_by_key(|r| r.id);
        kept.conns.extend(open);
        kept
    }

    /// A journal that keeps records (for `/journey`) and prints nothing.
    pub fn silent() -> Self {
        Self::new(Format::Off, Box::new(std::io::sink()))
    }

    /// Starts a connection's record and returns its id.
    pub fn open(&mut self, local: SocketAddrV4, remote: SocketAddrV4, t_us: i64) -> ConnId {
        let id = self.next_id;
        self.next_id += 1;
        self.conns.insert(
            id,
            ConnRecord {
                id,
                local,
                remote,
                opened_us: t_us,
                active: false,
                handshake: Handshake::default(),
                bytes_in: 0,
                bytes_out: 0,
                requests: 0,
                stages: Vec::new(),
                events: Vec::new(),
                events_dropped: 0,
            },
        );
        id
    }

    pub fn record(&mut self, conn: Option<ConnId>, t_us: i64, stage: Stage, what: What) {
        let event = Event {
            conn,
            t_us,
            stage,
            what,
        };
        match self.format {
            Format::Json => render::json_line(&mut self.out, &event),
            // Server events (DNS, dropped SYNs) belong to no connection's timeline: a
            // line each, as they happen.
            Format::Text if conn.is_none() => render::loose_line(&mut self.out, self.side, &event),
            _ => {}
        }
        if conn.is_none()
            && let Some(kept) = self.kept.as_mut()
        {
            kept.loose.push(event.clone());
        }
        match conn.and_then(|id| self.conns.get_mut(&id)) {
            Some(rec) => rec.push(event),
            // An event after the connection's journey closed (its TIME-WAIT entry
            // ending): a line of its own in text, and kept with its record.
            None if conn.is_some() => {
                if self.format == Format::Text {
                    render::loose_line(&mut self.out, self.side, &event);
                }
                if let Some(kept) = self.kept.as_mut()
                    && let Some(rec) = kept.conns.iter_mut().rev().find(|r| Some(r.id) == conn)
                {
                    rec.push(event);
                }
            }
            None => {}
        }
    }

    pub fn get(&self, id: ConnId) -> Option<&ConnRecord> {
        self.conns.get(&id)
    }

    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut ConnRecord> {
        self.conns.get_mut(&id)
    }

    /// Ends a connection's record: in text mode its timeline is printed now.
    pub fn close(&mut self, id: ConnId) -> Option<ConnRecord> {
        let rec = self.conns.remove(&id)?;
        if self.format == Format::Text {
            render::timeline(&mut self.out, &rec);
        }
        if let Some(kept) = self.kept.as_mut() {
            kept.conns.push(rec.clone());
        }
        Some(rec)
    }

    /// Ends every open record (at shutdown), oldest first.
    pub fn close_all(&mut self) {
        let mut ids: Vec<ConnId> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.close(id);
        }
        self.flush();
    }

    pub fn flush(&mut self) {
        let _ = self.out.flush();
    }
}
