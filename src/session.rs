//! One connection's conversation: TCP bytes in, HTTP requests decoded in order, handled,
//! and responses encoded back out, one at a time, so pipelined requests are answered in
//! the order they came (RFC 9112 §9.3.2).
//!
//! The session never sees a socket: the stack hands it bytes and lends it buffers.

use std::io;
use std::time::Duration;

use smoltcp::time::Instant;

use crate::app::App;
use crate::http::{Decoded, Limits, Outgoing, RequestDecoder, Response, Version};
use crate::journey::{ConnId, Journal, Stage, What};

/// How long a client may take to send one request, from its first byte. Past this it
/// gets 408 and the connection closes: a slowloris client cannot hold a slot forever.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a kept-alive connection may sit idle between requests before it gets 408
/// and is closed. Browsers keep idle connections for about a minute; half that is
/// common on servers.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub request: Duration,
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            request: DEFAULT_REQUEST_TIMEOUT,
            idle: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// A response that has been completely handed to the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub status: u16,
    pub wire_bytes: u64,
}

pub struct Session {
    id: ConnId,
    decoder: RequestDecoder,
    current: Option<Outgoing>,
    /// No more requests will be read: the last response is (or will be) the final one.
    closing: bool,
    peer_eof: bool,
    /// When the connection last finished a response or opened (for the idle timeout).
    idle_since: Instant,
    /// When the first byte of the request being read arrived (for the request timeout).
    request_started: Option<Instant>,
    timeouts: Timeouts,
    finished: Option<Finished>,
    /// The Date header value, rebuilt once a second at most.
    date: (i64, String),
}

impl Session {
    pub fn new(id: ConnId, limits: Limits, timeouts: Timeouts, now: Instant) -> Self {
        Session {
            id,
            decoder: RequestDecoder::new(limits),
            current: None,
            closing: false,
            peer_eof: false,
            idle_since: now,
            request_started: None,
            timeouts,
            finished: None,
            date: (-1, String::new()),
        }
    }

    pub fn id(&self) -> ConnId {
        self.id
    }

    /// How many bytes the session takes now. Zero while it is closing or its buffer is
    /// full: the bytes stay in the socket and the advertised window shrinks.
    pub fn room(&self) -> usize {
        if self.closing { 0 } else { self.decoder.room() }
    }

    /// Takes request bytes; returns how many it took.
    pub fn input(&mut self, data: &[u8], now: Instant) -> usize {
        if self.closing {
            return 0;
        }
        let n = self.decoder.input(data);
        if n > 0 && self.request_started.is_none() {
            self.request_started = Some(now);
        }
        n
    }

    /// The peer sent FIN: what is buffered is all there will be.
    pub fn peer_closed(&mut self) {
        self.peer_eof = true;
    }

    /// Decodes and answers requests for as long as no response is in flight.
    pub fn process(&mut self, now: Instant, app: &App, journal: &mut Journal) {
        while self.current.is_none() && !self.closing {
            match self.decoder.decode() {
                Decoded::NeedMore => {
                    if self.peer_eof {
                        // The client half-closed: a partial request can never complete.
                        self.closing = true;
                    }
                    if !self.decoder.in_progress() {
                        self.request_started = None;
                    }
                    return;
                }
                Decoded::Continue => {
                    self.current = Some(Outgoing::continue_100(Version::Http11));
                }
                Decoded::Error(e) => {
                    journal.record(
                        Some(self.id),
                        now.total_micros(),
                        Stage::Parse,
                        What::Rejected {
                            status: e.status,
                            reason: e.reason.clone(),
                        },
                    );
                    self.respond(
                        now,
                        journal,
                        Response::text(e.status, e.reason),
                        Version::Http11,
                        false,
                        false,
                    );
                }
                Decoded::Request(req) => {
                    let t = now.total_micros();
                    let body_bytes = req.body.len();
                    journal.record(
                        Some(self.id),
                        t,
                        Stage::Parse,
                        What::Parsed {
                            method: req.method.clone(),
                            path: req.target.clone(),
                            version: req.version.as_str(),
                            headers: req.headers.len(),
                            head_bytes: req.head_bytes,
                            body_bytes,
                        },
                    );
                    // Handler time is measured on the monotonic clock: it is compute time,
                    // not protocol time, and is all a reader wants from it.
                    let started = std::time::Instant::now();
                    let handled = app.handle(&req, journal.get(self.id));
                    let duration_us = started.elapsed().as_micros() as u64;
                    if let Some(d) = handled.decoded {
                        journal.record(
                            Some(self.id),
                            t,
                            Stage::Decode,
                            What::Decoded {
                                content_type: d.content_type,
                                bytes: d.bytes,
                                ok: d.ok,
                                detail: d.detail,
                            },
                        );
                    }
                    journal.record(
                        Some(self.id),
                        t,
                        Stage::Process,
                        What::Processed {
                            route: handled.route,
                            duration_us,
                        },
                    );
                    let keep_alive = req.keep_alive() && !self.peer_eof;
                    self.respond(
                        now,
                        journal,
                        handled.response,
                        req.version,
                        req.is_head(),
                        keep_alive,
                    );
                }
            }
        }
    }

    fn respond(
        &mut self,
        now: Instant,
        journal: &mut Journal,
        response: Response,
        version: Version,
        head_only: bool,
        keep_alive: bool,
    ) {
        let secs = now.secs();
        if self.date.0 != secs {
            self.date = (secs, crate::clock::http_date(secs.max(0) as u64));
        }
        let out = Outgoing::new(response, version, head_only, keep_alive, &self.date.1);
        journal.record(
            Some(self.id),
            now.total_micros(),
            Stage::Respond,
            What::Responded {
                status: out.status,
                length: out.body_len(),
                streamed: out.is_streamed(),
                keep_alive,
            },
        );
        if let Some(rec) = journal.get_mut(self.id) {
            rec.requests += 1;
        }
        if !keep_alive {
            self.closing = true;
        }
        self.request_started = None;
        self.current = Some(out);
    }

    pub fn has_output(&self) -> bool {
        self.current.is_some()
    }

    /// Fills `buf` with response bytes. An error means a streamed body failed after its
    /// head was sent: the only honest thing left is to abort the connection.
    pub fn output(&mut self, buf: &mut [u8], now: Instant) -> io::Result<usize> {
        let Some(out) = self.current.as_mut() else {
            return Ok(0);
        };
        let n = out.fill(buf)?;
        if out.is_done() {
            if out.status != 100 {
                self.finished = Some(Finished {
                    status: out.status,
                    wire_bytes: out.wire_len(),
                });
                self.idle_since = now;
            }
            self.current = None;
        }
        Ok(n)
    }

    /// The response that completed in the last [`output`](Self::output), once.
    pub fn take_finished(&mut self) -> Option<Finished> {
        self.finished.take()
    }

    /// Everything is sent and nothing more will be read: time for our FIN.
    pub fn wants_close(&self) -> bool {
        self.closing && self.current.is_none()
    }

    /// When [`poll_timeout`](Self::poll_timeout) has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        if self.current.is_some() || self.closing {
            return None;
        }
        Some(match self.request_started {
            Some(t) => t + self.timeouts.request.into(),
            None => self.idle_since + self.timeouts.idle.into(),
        })
    }

    /// Answers 408 and closes if the client took too long (RFC 9110 §15.5.9).
    pub fn poll_timeout(&mut self, now: Instant, journal: &mut Journal) {
        let Some(deadline) = self.deadline() else {
            return;
        };
        if now < deadline {
            return;
        }
        let reason = if self.decoder.in_progress() {
            format!(
                "request not complete within {} s",
                self.timeouts.request.as_secs()
            )
        } else {
            format!("connection idle for {} s", self.timeouts.idle.as_secs())
        };
        journal.record(
            Some(self.id),
            now.total_micros(),
            Stage::Parse,
            What::Rejected {
                status: 408,
                reason: reason.clone(),
            },
        );
        self.respond(
            now,
            journal,
            Response::text(408, reason),
            Version::Http11,
            false,
            false,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(session: &mut Session, journal: &mut Journal, input: &[u8]) -> String {
        let now = Instant::from_secs(100);
        session.input(input, now);
        let app = App::default();
        let mut out = Vec::new();
        let mut buf = [0u8; 1000];
        loop {
            session.process(now, &app, journal);
            if !session.has_output() {
                break;
            }
            let n = session.output(&mut buf, now).unwrap();
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(out).unwrap()
    }

    fn setup() -> (Session, Journal) {
        let mut journal = Journal::silent();
        let local = "10.77.0.2:80".parse().unwrap();
        let id = journal.open(local, "10.77.0.1:5000".parse().unwrap(), 0);
        (
            Session::new(
                id,
                Limits::default(),
                Timeouts::default(),
                Instant::from_secs(100),
            ),
            journal,
        )
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let (mut s, mut j) = setup();
        let out = run(
            &mut s,
            &mut j,
            b"GET /bytes/1 HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\nGET /echo HTTP/1.1\r\n\r\n",
        );
        let statuses: Vec<&str> = out
            .match_indices("HTTP/1.1 ")
            .map(|(i, _)| &out[i + 9..i + 12])
            .collect();
        assert_eq!(statuses, ["200", "404", "200"]);
        assert!(!s.wants_close());
        assert_eq!(j.get(s.id()).unwrap().requests, 3);
    }

    #[test]
    fn connection_close_ends_after_the_response() {
        let (mut s, mut j) = setup();
        let out = run(
            &mut s,
            &mut j,
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        );
        assert_eq!(
            out.matches("HTTP/1.1 200").count(),
            1,
            "the second request is not answered"
        );
        assert!(out.contains("Connection: close"));
        assert!(s.wants_close());
    }

    #[test]
    fn malformed_gets_400_and_close() {
        let (mut s, mut j) = setup();
        let out = run(&mut s, &mut j, b"BLAH\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 400 Bad Request"), "{out}");
        assert!(s.wants_close());
    }

    #[test]
    fn slow_request_gets_408() {
        let (mut s, mut j) = setup();
        s.input(b"GET / HT", Instant::from_secs(100));
        s.process(Instant::from_secs(100), &App::default(), &mut j);
        assert_eq!(s.deadline(), Some(Instant::from_secs(110)));
        s.poll_timeout(Instant::from_secs(109), &mut j);
        assert!(!s.has_output());
        s.poll_timeout(Instant::from_secs(110), &mut j);
        let mut buf = [0u8; 500];
        let n = s.output(&mut buf, Instant::from_secs(110)).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 408 Request Timeout"));
        assert!(s.wants_close());
    }

    #[test]
    fn idle_connection_gets_408_after_the_idle_timeout() {
        let (mut s, mut j) = setup();
        assert_eq!(s.deadline(), Some(Instant::from_secs(130)));
        s.poll_timeout(Instant::from_secs(130), &mut j);
        assert!(s.has_output());
    }

    #[test]
    fn peer_half_close_still_gets_its_answer() {
        let (mut s, mut j) = setup();
        s.input(b"GET / HTTP/1.1\r\n\r\n", Instant::from_secs(100));
        s.peer_closed();
        let out = run(&mut s, &mut j, b"");
        assert!(out.starts_with("HTTP/1.1 200"));
        assert!(out.contains("Connection: close"));
        assert!(s.wants_close());
    }
}
