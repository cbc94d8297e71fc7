//! The client's side of a connection: requests encoded and sent one at a time, each
//! response decoded as it arrives (its body streamed to a sink, never held whole), and
//! the connection closed by us once the last response is in, so our side is the one that
//! walks FIN-WAIT-1, FIN-WAIT-2 and TIME-WAIT (RFC 9293 §3.6).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::sync::Arc;

use smoltcp::time::Instant;

use crate::app::App;
use crate::http::response::Event;
use crate::http::{ResponseDecoder, ResponseHead};
use crate::journey::{ConnId, Journal, Stage, What};
use crate::tls::TlsSession;

use super::tls_layer::{TLS_PIECE, TlsLayer};
use super::{Conversation, Finished};

/// Response bytes taken per call: a socket's worth at a time keeps the window open
/// without holding much (bodies go straight to the sink).
const ROOM: usize = 64 * 1024;

/// One request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequest {
    pub method: String,
    pub target: String,
    /// The Host header (RFC 9112 §3.2: required in HTTP/1.1).
    pub host: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Write the body in small pieces over time rather than at once (to see what Nagle's
    /// algorithm does with small writes).
    pub pace: Option<Pacing>,
}

/// Small writes: `size` bytes of the body every `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    pub size: usize,
    pub every: std::time::Duration,
}

impl ClientRequest {
    pub fn get(host: &str, target: &str) -> Self {
        ClientRequest {
            method: "GET".into(),
            target: target.into(),
            host: host.into(),
            headers: Vec::new(),
            body: Vec::new(),
            pace: None,
        }
    }

    /// The request's bytes on the wire, and how many of them are the head.
    fn encode(&self) -> (Vec<u8>, usize) {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\n",
            self.method, self.target, self.host
        );
        let has = |name: &str| {
            self.headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        if !has("user-agent") {
            head += concat!("User-Agent: synack/", env!("CARGO_PKG_VERSION"), "\r\n");
        }
        if !has("accept") {
            head += "Accept: */*\r\n";
        }
        for (name, value) in &self.headers {
            head += &format!("{name}: {value}\r\n");
        }
        // RFC 9110 §8.6: a body's length is said; a POST without one says 0.
        if !has("content-length")
            && (!self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT"))
        {
            head += &format!("Content-Length: {}\r\n", self.body.len());
        }
        head += "\r\n";
        let head_len = head.len();
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        (bytes, head_len)
    }
}

/// One request and what came back.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Exchange {
    pub method: String,
    pub target: String,
    pub head: Option<ResponseHead>,
    pub body_bytes: u64,
    pub complete: bool,
    pub sent_us: i64,
    pub done_us: Option<i64>,
}

/// What the client's conversation found, shared with whoever started it.
#[derive(Debug, Default)]
pub struct Outcome {
    pub exchanges: Vec<Exchange>,
    /// Why the conversation failed, if it did (malformed response, TLS, the sink).
    pub error: Option<String>,
    /// TLS failed in particular (a certificate not trusted, a broken handshake).
    pub tls_failed: bool,
}

/// Where response bodies go: the exchange's index and the next piece of its body; an
/// empty piece says that body is complete.
pub type BodySink = Box<dyn FnMut(usize, &[u8]) -> io::Result<()>>;

pub struct ClientSession {
    id: ConnId,
    queue: VecDeque<ClientRequest>,
    /// The request being sent (bytes and how far), then its response being read.
    out: Vec<u8>,
    out_sent: usize,
    /// How much of `out` the writer has handed over so far (all of it, unless paced).
    released: usize,
    /// Paced: the next small write, and its size and interval.
    next_write: Option<(Instant, Pacing)>,
    decoder: Option<ResponseDecoder>,
    tls: Option<TlsLayer>,
    outcome: Rc<RefCell<Outcome>>,
    sink: BodySink,
    /// Events found while bytes moved, for the journal at the next `process`.
    events: Vec<(Stage, What)>,
    finished: Option<Finished>,
    /// Nothing more to send or read: our FIN (after close_notify) is next.
    closing: bool,
    peer_eof: bool,
    now: Instant,
}

impl ClientSession {
    /// A conversation that sends `requests` in order, each after the previous response,
    /// over TLS if `tls` is given.
    pub fn new(
        id: ConnId,
        requests: Vec<ClientRequest>,
        tls: Option<(Arc<rustls::ClientConfig>, String)>,
        sink: BodySink,
        now: Instant,
    ) -> (Self, Rc<RefCell<Outcome>>) {
        let outcome = Rc::new(RefCell::new(Outcome::default()));
        let mut session = ClientSession {
            id,
            queue: requests.into(),
            out: Vec::new(),
            out_sent: 0,
            released: 0,
            next_write: None,
            decoder: None,
            tls: None,
            outcome: Rc::clone(&outcome),
            sink,
            events: Vec::new(),
            finished: None,
            closing: false,
            peer_eof: false,
            now,
        };
        if let Some((config, name)) = tls {
            match TlsSession::client(config, &name) {
                Ok(conn) => session.tls = Some(TlsLayer::new(conn, now)),
                Err(e) => session.fail(e.to_string(), true),
            }
        }
        session.next_request(now);
        (session, outcome)
    }

    /// Encodes the next request, if any; with none left, it is time to close.
    fn next_request(&mut self, now: Instant) {
        let Some(req) = self.queue.pop_front() else {
            self.closing = true;
            return;
        };
        let (bytes, head_bytes) = req.encode();
        self.events.push((
            Stage::Send,
            What::Requested {
                method: req.method.clone(),
                target: req.target.clone(),
                head_bytes,
                body_bytes: req.body.len(),
            },
        ));
        self.out = bytes;
        self.out_sent = 0;
        // Paced: the head goes at once, the body in pieces.
        match req.pace.filter(|p| p.size > 0 && !req.body.is_empty()) {
            Some(pace) => {
                self.released = head_bytes;
                self.next_write = Some((now + pace.every.into(), pace));
            }
            None => {
                self.released = self.out.len();
                self.next_write = None;
            }
        }
        self.decoder = Some(ResponseDecoder::new(
            req.method.eq_ignore_ascii_case("HEAD"),
        ));
        self.outcome.borrow_mut().exchanges.push(Exchange {
            method: req.method,
            target: req.target,
            sent_us: now.total_micros(),
            ..Exchange::default()
        });
    }

    fn fail(&mut self, reason: String, tls: bool) {
        let mut outcome = self.outcome.borrow_mut();
        if outcome.error.is_none() {
            log::debug!("connection #{}: {reason}", self.id);
            self.events.push((
                Stage::Close,
                What::Failed {
                    reason: reason.clone(),
                },
            ));
            outcome.error = Some(reason);
            outcome.tls_failed = tls;
        }
        drop(outcome);
        self.queue.clear();
        self.decoder = None;
        self.closing = true;
    }

    /// Runs `step` on the response decoder, its events going to the outcome, the sink
    /// and the journal's queue. `None` without a decoder, or when the sink failed (which
    /// fails the session).
    fn decode<T>(
        &mut self,
        step: impl FnOnce(&mut ResponseDecoder, &mut dyn FnMut(Event<'_>)) -> T,
    ) -> Option<T> {
        let decoder = self.decoder.as_mut()?;
        let index = self.outcome.borrow().exchanges.len().saturating_sub(1);
        let (outcome, sink, events, now) =
            (&self.outcome, &mut self.sink, &mut self.events, self.now);
        let mut sink_error = None;
        let result = step(decoder, &mut |event| {
            on_event(event, index, outcome, sink, events, now, &mut sink_error)
        });
        if let Some(e) = sink_error {
            self.fail(format!("cannot write the body: {e}"), false);
            return None;
        }
        Some(result)
    }

    /// Response bytes (plaintext) into the decoder; the body goes to the sink.
    fn take_response(&mut self, data: &[u8]) {
        match self.decode(|d, out| d.input(data, out)) {
            Some(Err(e)) => self.fail(e.reason, false),
            Some(Ok(_)) if self.decoder.as_ref().is_some_and(ResponseDecoder::is_done) => {
                self.decoder = None;
                self.next_request(self.now);
            }
            _ => {}
        }
    }

    /// Decrypted bytes from rustls into the response decoder.
    fn pump_plaintext(&mut self) {
        loop {
            let Some(tls) = self.tls.as_mut() else { return };
            let n = tls.conn.read_plaintext(&mut tls.scratch);
            if n == 0 {
                return;
            }
            tls.plain_in += n as u64;
            let piece = std::mem::take(&mut tls.scratch);
            self.take_response(&piece[..n]);
            if let Some(tls) = self.tls.as_mut() {
                tls.scratch = piece;
            }
        }
    }

    /// The request bytes still to go, handed out as plaintext.
    fn fill_plain(&mut self, buf: &mut [u8]) -> usize {
        let n = (self.released - self.out_sent).min(buf.len());
        buf[..n].copy_from_slice(&self.out[self.out_sent..self.out_sent + n]);
        self.out_sent += n;
        if n > 0 && self.out_sent == self.out.len() {
            self.finished = Some(Finished {
                status: 0,
                wire_bytes: self.out.len() as u64,
            });
        }
        n
    }

    fn output_tls(&mut self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        loop {
            let Some(tls) = self.tls.as_mut() else {
                return n;
            };
            let sent = tls.conn.transmit(&mut buf[n..]);
            tls.records_out += sent as u64;
            n += sent;
            if n == buf.len() {
                return n;
            }
            if tls.plain_sent < tls.plain.len() {
                let took = tls.conn.send_plaintext(&tls.plain[tls.plain_sent..]);
                tls.plain_sent += took;
                tls.plain_out += took as u64;
                if took == 0 && !tls.conn.wants_transmit() {
                    return n;
                }
                continue;
            }
            if self.out_sent == self.released {
                // All requests are in rustls: our close_notify goes before our FIN.
                if self.closing && !tls.notified {
                    tls.notify_close();
                    continue;
                }
                return n;
            }
            let mut plain = std::mem::take(&mut tls.plain);
            plain.resize(TLS_PIECE, 0);
            let filled = self.fill_plain(&mut plain);
            plain.truncate(filled);
            if let Some(tls) = self.tls.as_mut() {
                tls.plain = plain;
                tls.plain_sent = 0;
            }
        }
    }
}

/// One decoder event: into the outcome, the sink and the journal's queue.
fn on_event(
    event: Event<'_>,
    index: usize,
    outcome: &RefCell<Outcome>,
    sink: &mut BodySink,
    events: &mut Vec<(Stage, What)>,
    now: Instant,
    sink_error: &mut Option<io::Error>,
) {
    let mut outcome = outcome.borrow_mut();
    let Some(exchange) = outcome.exchanges.get_mut(index) else {
        return;
    };
    match event {
        Event::Interim(status) => log::debug!("interim response {status}"),
        Event::Head(head) => {
            events.push((
                Stage::Parse,
                What::ResponseHead {
                    status: head.status,
                    reason: head.reason.clone(),
                    version: head.version,
                    headers: head.headers.len(),
                    head_bytes: head.head_bytes,
                },
            ));
            exchange.head = Some(head);
        }
        Event::Body(data) => {
            exchange.body_bytes += data.len() as u64;
            if sink_error.is_none()
                && let Err(e) = sink(index, data)
            {
                *sink_error = Some(e);
            }
        }
        Event::Done => {
            if sink_error.is_none()
                && let Err(e) = sink(index, &[])
            {
                *sink_error = Some(e);
            }
            exchange.complete = true;
            exchange.done_us = Some(now.total_micros());
            events.push((
                Stage::Receive,
                What::ResponseDone {
                    status: exchange.head.as_ref().map_or(0, |h| h.status),
                    body_bytes: exchange.body_bytes,
                    duration_us: (now.total_micros() - exchange.sent_us).max(0) as u64,
                },
            ));
        }
    }
}

impl Conversation for ClientSession {
    fn id(&self) -> ConnId {
        self.id
    }

    fn room(&self) -> usize {
        if self.closing && self.decoder.is_none() && self.tls.is_none() {
            0
        } else {
            ROOM
        }
    }

    fn input(&mut self, data: &[u8], now: Instant) -> usize {
        self.now = now;
        let Some(tls) = self.tls.as_mut() else {
            self.take_response(data);
            return data.len();
        };
        match tls.conn.receive(data) {
            Ok(n) => {
                tls.records_in += n as u64;
                self.pump_plaintext();
                n
            }
            Err(e) => {
                // rustls has queued its alert; it goes out before our FIN.
                tls.notified = true;
                self.fail(e.to_string(), true);
                data.len()
            }
        }
    }

    fn peer_closed(&mut self) {
        if self.peer_eof {
            return;
        }
        self.peer_eof = true;
        match self.decode(|d, out| d.eof(out)) {
            Some(Ok(())) => {
                self.decoder = None;
                // The server closed: requests left cannot go on this connection.
                self.queue.clear();
                self.closing = true;
            }
            Some(Err(e)) => self.fail(e.reason, false),
            None => {}
        }
    }

    fn process(&mut self, now: Instant, _app: &App, journal: &mut Journal) {
        self.now = now;
        if let Some(tls) = self.tls.as_mut() {
            tls.record(self.id, now, journal);
        }
        for (stage, what) in self.events.drain(..) {
            journal.record(Some(self.id), now.total_micros(), stage, what);
        }
        // The record's request count is the requests sent so far.
        if let Some(rec) = journal.get_mut(self.id) {
            rec.requests = self.outcome.borrow().exchanges.len() as u64;
        }
    }

    fn has_output(&self) -> bool {
        self.out_sent < self.released
            || self.tls.as_ref().is_some_and(|t| {
                t.plain_sent < t.plain.len()
                    || t.conn.wants_transmit()
                    || (self.closing && !t.notified)
            })
    }

    fn output(&mut self, buf: &mut [u8], _now: Instant) -> io::Result<usize> {
        if self.tls.is_some() {
            return Ok(self.output_tls(buf));
        }
        Ok(self.fill_plain(buf))
    }

    fn take_finished(&mut self) -> Option<Finished> {
        self.finished.take()
    }

    fn wants_close(&self) -> bool {
        self.closing && !self.has_output()
    }

    fn take_encrypted(&mut self) -> Option<(u64, u64)> {
        Some(self.tls.as_mut()?.take_encrypted())
    }

    /// The next paced write. (The whole fetch's deadline, --max-time, is its driver's.)
    fn deadline(&self) -> Option<Instant> {
        self.next_write.map(|(at, _)| at)
    }

    /// Hands over the next small piece of a paced body.
    fn poll_timeout(&mut self, now: Instant, _journal: &mut Journal) {
        let Some((at, pace)) = self.next_write else {
            return;
        };
        if now < at {
            return;
        }
        // The next write waits until the last one went into the socket (not before the
        // handshake is done, nor while the send buffer is full).
        if self.out_sent < self.released {
            self.next_write = Some((now + pace.every.into(), pace));
            return;
        }
        self.released = (self.released + pace.size).min(self.out.len());
        self.next_write = (self.released < self.out.len()).then(|| (now + pace.every.into(), pace));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Shared<T> = Rc<RefCell<T>>;

    fn session(requests: Vec<ClientRequest>) -> (ClientSession, Shared<Outcome>, Shared<Vec<u8>>) {
        let body = Rc::new(RefCell::new(Vec::new()));
        let sink_body = Rc::clone(&body);
        let sink: BodySink = Box::new(move |_, data| {
            sink_body.borrow_mut().extend_from_slice(data);
            Ok(())
        });
        let (s, outcome) = ClientSession::new(1, requests, None, sink, Instant::from_secs(1));
        (s, outcome, body)
    }

    fn sent(s: &mut ClientSession) -> String {
        let mut buf = [0u8; 4096];
        let n = s.output(&mut buf, Instant::from_secs(1)).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn requests_go_one_after_another_and_then_we_close() {
        let mut post = ClientRequest::get("synack.test", "/json");
        post.method = "POST".into();
        post.body = b"{\"a\":1}".to_vec();
        let (mut s, outcome, body) = session(vec![ClientRequest::get("synack.test", "/"), post]);
        let first = sent(&mut s);
        assert!(
            first.starts_with("GET / HTTP/1.1\r\nHost: synack.test\r\n"),
            "{first}"
        );
        assert!(
            !s.has_output(),
            "the second request waits for the first response"
        );
        s.input(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel",
            Instant::from_secs(1),
        );
        assert!(!s.has_output());
        s.input(b"lo", Instant::from_secs(1));
        let second = sent(&mut s);
        assert!(second.starts_with("POST /json HTTP/1.1\r\n"), "{second}");
        assert!(
            second.contains("Content-Length: 7\r\n\r\n{\"a\":1}"),
            "{second}"
        );
        assert!(!s.wants_close());
        s.input(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{}\n\r\n0\r\n\r\n",
            Instant::from_secs(1),
        );
        assert!(s.wants_close(), "both answered: our FIN is next");
        assert_eq!(&body.borrow()[..], b"hello{}\n");
        let o = outcome.borrow();
        assert_eq!(o.exchanges.len(), 2);
        assert!(o.exchanges.iter().all(|e| e.complete));
        assert_eq!(o.exchanges[1].body_bytes, 3);
    }

    #[test]
    fn a_body_until_close_ends_at_the_servers_fin() {
        let (mut s, outcome, body) = session(vec![ClientRequest::get("h", "/")]);
        sent(&mut s);
        s.input(b"HTTP/1.0 200 OK\r\n\r\nall of it", Instant::from_secs(1));
        assert!(!s.wants_close());
        s.peer_closed();
        assert!(s.wants_close());
        assert_eq!(&body.borrow()[..], b"all of it");
        assert!(outcome.borrow().exchanges[0].complete);
        assert!(outcome.borrow().error.is_none());
    }

    #[test]
    fn a_short_body_or_garbage_is_an_error() {
        let (mut s, outcome, _) = session(vec![ClientRequest::get("h", "/")]);
        sent(&mut s);
        s.input(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            Instant::from_secs(1),
        );
        s.peer_closed();
        assert!(
            outcome
                .borrow()
                .error
                .as_deref()
                .unwrap()
                .contains("before the body was complete")
        );
        let (mut s, outcome, _) = session(vec![ClientRequest::get("h", "/")]);
        sent(&mut s);
        s.input(b"SSH-2.0-OpenSSH\r\n\r\n", Instant::from_secs(1));
        assert!(
            outcome
                .borrow()
                .error
                .as_deref()
                .unwrap()
                .contains("malformed response head")
        );
        assert!(s.wants_close());
    }
}
