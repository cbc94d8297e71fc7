//! The server's side of a connection: TCP bytes in, HTTP requests decoded in order,
//! handled, and responses encoded back out, one at a time, so pipelined requests are
//! answered in the order they came (RFC 9112 §9.3.2).

use std::io;

use smoltcp::time::Instant;

use std::sync::Arc;

use rustls::ServerConfig;

use crate::app::App;
use crate::http::{Decoded, Limits, Outgoing, RequestDecoder, Response, Version};
use crate::journey::{ConnId, Journal, Stage, What};
use crate::tls::TlsSession;

use super::tls_layer::{TLS_PIECE, TlsLayer};
use super::{Conversation, Finished, Timeouts};

pub struct ServerSession {
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
    /// TLS between the TCP bytes and HTTP, on the HTTPS port.
    tls: Option<TlsLayer>,
}

impl ServerSession {
    pub fn new(id: ConnId, limits: Limits, timeouts: Timeouts, now: Instant) -> Self {
        ServerSession {
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
            tls: None,
        }
    }

    /// A session that speaks TLS (the HTTPS port). If rustls cannot even start, the
    /// session closes at once.
    pub fn with_tls(
        id: ConnId,
        limits: Limits,
        timeouts: Timeouts,
        now: Instant,
        config: Arc<ServerConfig>,
    ) -> Self {
        let mut session = Self::new(id, limits, timeouts, now);
        match TlsSession::server(config) {
            Ok(conn) => session.tls = Some(TlsLayer::new(conn, now)),
            Err(e) => {
                log::warn!("connection #{id}: {e}");
                session.closing = true;
            }
        }
        session
    }

    /// Moves decrypted request bytes from rustls into the decoder, as far as it has room.
    fn pump_plaintext(&mut self, now: Instant) {
        let Some(tls) = self.tls.as_mut() else { return };
        loop {
            let room = self.decoder.room().min(tls.scratch.len());
            if room == 0 {
                return;
            }
            let n = tls.conn.read_plaintext(&mut tls.scratch[..room]);
            if n == 0 {
                return;
            }
            self.decoder.input(&tls.scratch[..n]);
            tls.plain_in += n as u64;
            if self.request_started.is_none() {
                self.request_started = Some(now);
            }
        }
    }

    fn serve_requests(&mut self, now: Instant, app: &App, journal: &mut Journal) {
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

    /// On the HTTPS port: records out of rustls, fed with the encoder's plaintext.
    fn output_tls(&mut self, buf: &mut [u8], now: Instant) -> io::Result<usize> {
        let mut n = 0;
        loop {
            let tls = self.tls.as_mut().expect("output_tls is called with TLS");
            let sent = tls.conn.transmit(&mut buf[n..]);
            tls.records_out += sent as u64;
            n += sent;
            if n == buf.len() {
                return Ok(n);
            }
            if tls.plain_sent < tls.plain.len() {
                let took = tls.conn.send_plaintext(&tls.plain[tls.plain_sent..]);
                tls.plain_sent += took;
                tls.plain_out += took as u64;
                if took == 0 && !tls.conn.wants_transmit() {
                    return Ok(n);
                }
                continue;
            }
            let Some(out) = self.current.as_mut() else {
                // The final response is all in rustls: close_notify goes after it, before
                // our FIN (RFC 8446 §6.1).
                if self.closing && !tls.notified {
                    tls.notified = true;
                    tls.conn.close();
                    continue;
                }
                return Ok(n);
            };
            tls.plain.resize(TLS_PIECE, 0);
            let filled = out.fill(&mut tls.plain)?;
            tls.plain.truncate(filled);
            tls.plain_sent = 0;
            self.after_fill(now);
        }
    }

    /// Bookkeeping once the encoder has handed out more of the response.
    fn after_fill(&mut self, now: Instant) {
        let Some(out) = self.current.as_ref() else {
            return;
        };
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
    }
}

impl Conversation for ServerSession {
    fn id(&self) -> ConnId {
        self.id
    }

    /// How many bytes the session takes now. Zero while it is closing or its buffer is
    /// full: the bytes stay in the socket and the advertised window shrinks.
    fn room(&self) -> usize {
        if self.closing { 0 } else { self.decoder.room() }
    }

    /// Takes request bytes (TLS records on the HTTPS port); returns how many it took.
    fn input(&mut self, data: &[u8], now: Instant) -> usize {
        if self.closing {
            return 0;
        }
        if let Some(tls) = self.tls.as_mut() {
            let taken = match tls.conn.receive(data) {
                Ok(n) => n,
                Err(e) => {
                    // rustls has queued the alert, if any; send it, then close (RFC 8446
                    // §6.2). A close_notify mid-handshake is the peer leaving in good
                    // order (§6.1): not worth more than a debug line.
                    if e.is_orderly_close() {
                        log::debug!("connection #{}: {e}", self.id);
                        self.peer_eof = true;
                    } else {
                        log::info!("connection #{}: {e}", self.id);
                    }
                    self.closing = true;
                    tls.notified = true;
                    return data.len();
                }
            };
            tls.records_in += taken as u64;
            if tls.conn.peer_closed() {
                self.peer_eof = true;
            }
            self.pump_plaintext(now);
            return taken;
        }
        let n = self.decoder.input(data);
        if n > 0 && self.request_started.is_none() {
            self.request_started = Some(now);
        }
        n
    }

    /// The peer sent FIN: what is buffered is all there will be.
    fn peer_closed(&mut self) {
        self.peer_eof = true;
    }

    /// Decodes and answers requests for as long as no response is in flight.
    fn process(&mut self, now: Instant, app: &App, journal: &mut Journal) {
        self.pump_plaintext(now);
        if let Some(tls) = self.tls.as_mut() {
            tls.record(self.id, now, journal);
        }
        self.serve_requests(now, app, journal);
        // The last response is handed over: our close_notify goes before our FIN.
        if self.closing
            && self.current.is_none()
            && let Some(tls) = self.tls.as_mut()
            && !tls.notified
        {
            tls.notified = true;
            tls.conn.close();
        }
    }

    fn has_output(&self) -> bool {
        self.current.is_some()
            || self
                .tls
                .as_ref()
                .is_some_and(|t| t.plain_sent < t.plain.len() || t.conn.wants_transmit())
    }

    /// Fills `buf` with response bytes. An error means a streamed body failed after its
    /// head was sent: the only honest thing left is to abort the connection.
    fn output(&mut self, buf: &mut [u8], now: Instant) -> io::Result<usize> {
        if self.tls.is_some() {
            return self.output_tls(buf, now);
        }
        let Some(out) = self.current.as_mut() else {
            return Ok(0);
        };
        let n = out.fill(buf)?;
        self.after_fill(now);
        Ok(n)
    }

    /// The response that completed in the last [`output`](Self::output), once.
    fn take_finished(&mut self) -> Option<Finished> {
        self.finished.take()
    }

    /// Everything is sent and nothing more will be read: time for our FIN.
    fn wants_close(&self) -> bool {
        self.closing && !self.has_output()
    }

    /// TLS bytes of records sent and of plaintext encrypted since the last call, if this
    /// session speaks TLS (for the journey's encrypt stage).
    fn take_encrypted(&mut self) -> Option<(u64, u64)> {
        Some(self.tls.as_mut()?.take_encrypted())
    }

    /// When [`poll_timeout`](Self::poll_timeout) has something to do.
    fn deadline(&self) -> Option<Instant> {
        if self.current.is_some() || self.closing {
            return None;
        }
        Some(match self.request_started {
            Some(t) => t + self.timeouts.request.into(),
            None => self.idle_since + self.timeouts.idle.into(),
        })
    }

    fn still_sending(&mut self, now: Instant) {
        self.idle_since = self.idle_since.max(now);
        if let Some(t) = self.request_started.as_mut() {
            *t = (*t).max(now);
        }
    }

    /// Answers 408 and closes if the client took too long (RFC 9110 §15.5.9).
    fn poll_timeout(&mut self, now: Instant, journal: &mut Journal) {
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

    fn run(session: &mut ServerSession, journal: &mut Journal, input: &[u8]) -> String {
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

    fn setup() -> (ServerSession, Journal) {
        let mut journal = Journal::silent();
        let local = "10.77.0.2:80".parse().unwrap();
        let id = journal.open(local, "10.77.0.1:5000".parse().unwrap(), 0);
        (
            ServerSession::new(
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
            b"GET /bytes/1 HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\nGET /echo HTTP/1.1\r\nHost: x\r\n\r\n",
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
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
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
    fn http11_without_host_gets_400_and_the_journey_says_why() {
        let (mut s, mut j) = setup();
        let out = run(&mut s, &mut j, b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 400 Bad Request"), "{out}");
        assert!(out.contains("Host"), "the body says why: {out}");
        assert!(s.wants_close());
        let rejected: Vec<_> = j
            .get(s.id())
            .unwrap()
            .events
            .iter()
            .filter_map(|e| match &e.what {
                What::Rejected { status, reason } => Some((*status, reason.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert_eq!(rejected[0].0, 400);
        assert!(rejected[0].1.contains("without a Host"), "{rejected:?}");
        // HTTP/1.0 without Host is served.
        let (mut s, mut j) = setup();
        let out = run(&mut s, &mut j, b"GET / HTTP/1.0\r\n\r\n");
        assert!(out.starts_with("HTTP/1.0 200 OK"), "{out}");
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
        s.input(
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            Instant::from_secs(100),
        );
        s.peer_closed();
        let out = run(&mut s, &mut j, b"");
        assert!(out.starts_with("HTTP/1.1 200"));
        assert!(out.contains("Connection: close"));
        assert!(s.wants_close());
    }

    /// A rustls client for synack.test and a server session with a fresh identity, from
    /// client port `port`, speaking `versions`.
    fn tls_pair(
        port: u16,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (rustls::ClientConnection, ServerSession, Journal, Instant) {
        let id = crate::tls::generate(
            &["synack.test".into()],
            std::net::Ipv4Addr::new(10, 77, 0, 2),
        )
        .unwrap();
        let config = crate::tls::server_config(&id, None).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(id.chain[0].clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("synack.test").unwrap();
        let client = rustls::ClientConnection::new(Arc::new(client_config), name).unwrap();
        let (_, mut journal) = setup();
        let conn = journal.open(
            "10.77.0.2:443".parse().unwrap(),
            std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(10, 77, 0, 1), port),
            0,
        );
        let now = Instant::from_secs(100);
        let s = ServerSession::with_tls(conn, Limits::default(), Timeouts::default(), now, config);
        (client, s, journal, now)
    }

    #[test]
    fn a_client_that_says_close_notify_mid_handshake_is_let_go() {
        // TLS 1.3 only: its ClientHello and close_notify fit in one flight.
        let (mut client, mut s, mut journal, now) = tls_pair(5002, &[&rustls::version::TLS13]);
        let mut records = Vec::new();
        client.write_tls(&mut records).unwrap();
        client.send_close_notify();
        while client.wants_write() {
            client.write_tls(&mut records).unwrap();
        }
        assert_eq!(s.input(&records, now), records.len());
        s.process(now, &App::default(), &mut journal);
        let mut wire = vec![0u8; 64 * 1024];
        while s.has_output() {
            if s.output(&mut wire, now).unwrap() == 0 {
                break;
            }
        }
        assert!(s.wants_close(), "the connection closes");
        assert_eq!(s.room(), 0, "and reads nothing more");
    }

    #[test]
    fn https_session_answers_inside_tls_and_says_close_notify() {
        use std::io::{Read, Write};
        let (mut client, mut s, mut journal, now) = tls_pair(5001, rustls::DEFAULT_VERSIONS);
        let app = App::default();
        client
            .writer()
            .write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut wire = vec![0u8; 64 * 1024];
        let mut answer = Vec::new();
        for _ in 0..20 {
            while client.wants_write() {
                let mut records = Vec::new();
                client.write_tls(&mut records).unwrap();
                assert_eq!(s.input(&records, now), records.len());
            }
            s.process(now, &app, &mut journal);
            while s.has_output() {
                let n = s.output(&mut wire, now).unwrap();
                if n == 0 {
                    break;
                }
                let mut slice = &wire[..n];
                while !slice.is_empty() {
                    client.read_tls(&mut slice).unwrap();
                    client.process_new_packets().unwrap();
                }
            }
            let mut buf = [0u8; 4096];
            while let Ok(n) = client.reader().read(&mut buf) {
                if n == 0 {
                    break;
                }
                answer.extend_from_slice(&buf[..n]);
            }
            if s.wants_close() {
                break;
            }
        }
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        assert!(text.contains("\"path\": \"/echo\""));
        assert!(s.wants_close(), "Connection: close, after close_notify");
        assert!(
            client.reader().read(&mut [0u8; 8]).is_ok_and(|n| n == 0),
            "the client saw close_notify"
        );
        let events = &journal.get(s.id()).unwrap().events;
        assert!(events.iter().any(
            |e| matches!(&e.what, What::TlsEstablished { sni: Some(n), .. } if n == "synack.test")
        ));
        let (plain, records) = s.take_encrypted().unwrap();
        assert!(
            plain > 0 && records > plain,
            "records carry overhead: {plain} -> {records}"
        );
    }
}
