//! What the session targets share: a server session driven through the `Conversation`
//! trait as the node drives it, a mirror decoder that knows which requests the server
//! saw, and the client's reading of what came back, with synack's own response decoder.

use arbitrary::Arbitrary;
use smoltcp::time::{Duration, Instant};
use synack::app::App;
use synack::http::response::Event;
use synack::http::{Decoded, Limits, RequestDecoder, ResponseDecoder};
use synack::journey::Journal;
use synack::session::{Conversation, ServerSession, Timeouts};

/// Response bytes read per input at most: `/bytes/N` may ask for a terabyte.
pub const MAX_OUTPUT: usize = 4 << 20;

/// Requests the fuzzer can pick whole, to get deep quickly.
pub const REQUESTS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: synack.test\r\n\r\n",
    b"GET /bytes/5000 HTTP/1.1\r\nHost: synack.test\r\n\r\n",
    b"POST /json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"a\": [1, 2]}",
    b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /journey HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HEAD / HTTP/1.0\r\n\r\n",
    b"HEAD /bytes/100 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    b"abcd",
    b"GET /nope HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"POST /json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n{\"a\":",
    b"GET / HTTP/2.0\r\n\r\n",
];

#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Setup {
    pub small_limits: bool,
    pub max_head: u8,
    pub max_body: u8,
    pub short_timeouts: bool,
}

impl Setup {
    pub fn limits(&self) -> Limits {
        if self.small_limits {
            Limits {
                max_head: 64 + usize::from(self.max_head) * 8,
                max_headers: 8,
                max_body: usize::from(self.max_body) * 8,
            }
        } else {
            Limits::default()
        }
    }

    pub fn timeouts(&self) -> Timeouts {
        if self.short_timeouts {
            Timeouts {
                request: std::time::Duration::from_millis(300),
                idle: std::time::Duration::from_secs(1),
            }
        } else {
            Timeouts::default()
        }
    }
}

/// What the server saw, request by request, decoded by a decoder of its own.
struct Mirror {
    decoder: RequestDecoder,
    pending: Vec<u8>,
    /// Per request or error the server will answer: (a HEAD request, closes after).
    outcomes: Vec<(bool, bool)>,
    done: bool,
}

impl Mirror {
    fn feed(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        while !self.done {
            let n = self.decoder.input(&self.pending);
            self.pending.drain(..n);
            loop {
                match self.decoder.decode() {
                    Decoded::Request(r) => self.outcomes.push((r.is_head(), !r.keep_alive())),
                    Decoded::Continue => {}
                    Decoded::NeedMore => break,
                    Decoded::Error(_) => {
                        self.outcomes.push((false, true));
                        self.done = true;
                        break;
                    }
                }
            }
            if n == 0 {
                break;
            }
        }
    }

    /// How many responses the server owes: every request up to the first that closes.
    fn owed(&self) -> usize {
        match self.outcomes.iter().position(|o| o.1) {
            Some(i) => i + 1,
            None => self.outcomes.len(),
        }
    }
}

/// The client's side of the responses: each parsed by synack's response decoder.
#[derive(Default)]
struct Responses {
    decoder: Option<ResponseDecoder>,
    complete: usize,
    statuses: Vec<u16>,
    total: usize,
}

/// A server session and everything watching it.
pub struct Watched {
    pub session: ServerSession,
    pub journal: Journal,
    pub app: App,
    pub now: Instant,
    mirror: Mirror,
    responses: Responses,
    /// The output was cut at [`MAX_OUTPUT`]: liveness is not checked.
    pub saturated: bool,
    pub peer_closed: bool,
}

impl Watched {
    pub fn new(setup: &Setup, tls: Option<std::sync::Arc<rustls::ServerConfig>>) -> Self {
        let mut journal = Journal::silent();
        let now = synack::clock::VIRTUAL_EPOCH;
        let id = journal.open(
            "10.77.0.2:80".parse().expect("an address"),
            "10.77.0.1:40000".parse().expect("an address"),
            now.total_micros(),
        );
        let session = match tls {
            Some(config) => {
                ServerSession::with_tls(id, setup.limits(), setup.timeouts(), now, config)
            }
            None => ServerSession::new(id, setup.limits(), setup.timeouts(), now),
        };
        Watched {
            session,
            journal,
            app: App::default(),
            now,
            mirror: Mirror {
                decoder: RequestDecoder::new(setup.limits()),
                pending: Vec::new(),
                outcomes: Vec::new(),
                done: false,
            },
            responses: Responses::default(),
            saturated: false,
            peer_closed: false,
        }
    }

    /// Request bytes as the server will read them (plaintext), for the mirror.
    pub fn mirror(&mut self, plaintext: &[u8]) {
        self.mirror.feed(plaintext);
    }

    /// Hands `data` to the session as the node does: as much as it has room for.
    /// Returns how many bytes it took.
    pub fn input(&mut self, data: &[u8]) -> usize {
        let mut taken = 0;
        while taken < data.len() && self.session.room() > 0 {
            let n = self.session.input(&data[taken..], self.now);
            if n == 0 {
                break;
            }
            taken += n;
        }
        taken
    }

    pub fn peer_closed(&mut self) {
        self.peer_closed = true;
        self.session.peer_closed();
    }

    /// Lets time pass: the session's timeouts.
    pub fn wait(&mut self, d: Duration) {
        self.now += d;
        self.session.poll_timeout(self.now, &mut self.journal);
        assert!(
            self.session.deadline().is_none_or(|t| t > self.now),
            "the session's deadline is still due after poll_timeout: the node would spin"
        );
    }

    /// Processes and collects the output into `out`, in pieces of `piece` bytes, as the
    /// node fills its send buffer.
    pub fn run(&mut self, piece: usize, out: &mut Vec<u8>) {
        let mut buf = vec![0u8; piece.clamp(1, 65_536)];
        self.session.process(self.now, &self.app, &mut self.journal);
        let mut idle = 0;
        while self.session.has_output() && out.len() < MAX_OUTPUT {
            let n = self
                .session
                .output(&mut buf, self.now)
                .expect("no streamed body fails here");
            out.extend_from_slice(&buf[..n]);
            let finished = self.session.take_finished().is_some();
            if finished {
                self.session.process(self.now, &self.app, &mut self.journal);
            }
            if n == 0 && !finished {
                idle += 1;
                assert!(
                    idle < 3,
                    "the session has output but gives none: the connection would stall"
                );
            } else {
                idle = 0;
            }
        }
        if out.len() >= MAX_OUTPUT {
            self.saturated = true;
        }
        if self.session.wants_close() {
            assert_eq!(self.session.room(), 0, "closing, yet it takes more bytes");
        }
    }

    /// Response bytes as the client reads them (plaintext).
    pub fn responses(&mut self, mut bytes: &[u8]) {
        let r = &mut self.responses;
        r.total += bytes.len();
        while !bytes.is_empty() {
            let head = self.mirror.outcomes.get(r.complete).is_some_and(|o| o.0);
            let decoder = r.decoder.get_or_insert_with(|| ResponseDecoder::new(head));
            let mut status = None;
            let n = decoder
                .input(bytes, &mut |e| {
                    if let Event::Head(h) = e {
                        status = Some(h.status);
                    }
                })
                .unwrap_or_else(|e| {
                    panic!("the server's response does not parse: {e}");
                });
            if let Some(s) = status {
                assert!((200..600).contains(&s), "final status {s}");
                r.statuses.push(s);
            }
            bytes = &bytes[n..];
            if decoder.is_done() {
                r.decoder = None;
                r.complete += 1;
            } else {
                assert!(
                    bytes.is_empty(),
                    "the decoder left bytes of its own response"
                );
            }
        }
        // One answer per request or error, and at most one more (a 408).
        assert!(
            r.complete <= self.mirror.outcomes.len() + 1,
            "{} responses to {} requests",
            r.complete,
            self.mirror.outcomes.len()
        );
    }

    /// At the end, with nothing lost on the way: every request the server owed an
    /// answer got one, and a peer that closed is let go.
    pub fn settled(&self) {
        if self.saturated {
            return;
        }
        let owed = self.mirror.owed();
        let got = self.responses.complete;
        let timed_out = self.responses.statuses.last() == Some(&408);
        assert!(
            got >= owed || timed_out || self.session.has_output(),
            "{got} responses for {owed} requests owed (statuses {:?})",
            self.responses.statuses
        );
        if self.peer_closed && !self.session.has_output() {
            assert!(
                self.session.wants_close(),
                "the peer closed, everything is answered, and the session stays open"
            );
        }
    }
}
