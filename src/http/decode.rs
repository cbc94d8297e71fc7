//! Request decoding: httparse for the head, then the body framed by Content-Length or
//! chunked transfer coding (RFC 9112 §6, §7.1), with every limit enforced as bytes arrive.

use super::chunked::{Dechunker, Piece};
use super::{HttpError, Limits, MAX_HEADERS_CEILING, Request, Version};

/// What the decoder has for the caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A complete request.
    Request(Request),
    /// The head asked for `Expect: 100-continue` and the body has not come yet: send the
    /// interim response (RFC 9110 §10.1.1). Reported once per request.
    Continue,
    /// Not enough bytes yet.
    NeedMore,
    /// The request is broken or too big; answer with this status, then close.
    Error(HttpError),
}

#[derive(Debug)]
enum Framing {
    Length(usize),
    Chunked(Dechunker),
}

#[derive(Debug)]
enum State {
    Head,
    Body {
        request: Request,
        framing: Framing,
        expect_continue: bool,
    },
    Failed(HttpError),
}

/// Turns a connection's bytes into requests, one at a time, in order.
#[derive(Debug)]
pub struct RequestDecoder {
    buf: Vec<u8>,
    limits: Limits,
    state: State,
}

impl RequestDecoder {
    pub fn new(limits: Limits) -> Self {
        let limits = Limits {
            max_headers: limits.max_headers.min(MAX_HEADERS_CEILING),
            ..limits
        };
        RequestDecoder {
            buf: Vec::new(),
            limits,
            state: State::Head,
        }
    }

    /// How many more bytes [`input`](Self::input) would take now. Zero means the caller
    /// should leave them in the socket: the receive window closes and the client waits.
    pub fn room(&self) -> usize {
        (self.limits.max_head + 16 * 1024).saturating_sub(self.buf.len())
    }

    /// Takes as many of `data` as there is room for; returns how many.
    pub fn input(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.room());
        self.buf.extend_from_slice(&data[..n]);
        n
    }

    /// Whether part of a request has arrived (so a timeout now is a slow request, not an
    /// idle connection).
    pub fn in_progress(&self) -> bool {
        !self.buf.is_empty() || !matches!(self.state, State::Head)
    }

    /// Bytes received and not yet part of a returned request (pipelined requests wait here).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Decodes what the buffer holds as far as it goes.
    pub fn decode(&mut self) -> Decoded {
        loop {
            match &mut self.state {
                State::Failed(e) => return Decoded::Error(e.clone()),
                State::Head => match self.decode_head() {
                    Ok(true) => continue,
                    Ok(false) => return Decoded::NeedMore,
                    Err(e) => return self.fail(e),
                },
                State::Body {
                    expect_continue, ..
                } => {
                    let expect = std::mem::take(expect_continue);
                    match self.decode_body() {
                        Ok(Some(request)) => {
                            self.state = State::Head;
                            return Decoded::Request(request);
                        }
                        Ok(None) if expect => return Decoded::Continue,
                        Ok(None) => return Decoded::NeedMore,
                        Err(e) => return self.fail(e),
                    }
                }
            }
        }
    }

    fn fail(&mut self, e: HttpError) -> Decoded {
        self.state = State::Failed(e.clone());
        Decoded::Error(e)
    }

    /// Parses the head if it is all here; `Ok(true)` moves on to the body.
    fn decode_head(&mut self) -> Result<bool, HttpError> {
        if self.buf.is_empty() {
            return Ok(false);
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS_CEILING];
        let mut parsed = httparse::Request::new(&mut headers[..self.limits.max_headers]);
        // Only the first `max_head` bytes can be a head we accept: reading past them would
        // make the answer depend on how many bytes the last segment brought (a bad byte
        // just past the limit: 400 in one segment, 431 byte by byte).
        let window = &self.buf[..self.buf.len().min(self.limits.max_head)];
        let head_len = match parsed.parse(window) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if window.len() >= self.limits.max_head {
                    return Err(HttpError::new(
                        431,
                        format!("request head exceeds {} bytes", self.limits.max_head),
                    ));
                }
                return Ok(false);
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HttpError::new(
                    431,
                    format!("more than {} header fields", self.limits.max_headers),
                ));
            }
            Err(httparse::Error::Version) => {
                return match version_verdict(window) {
                    VersionVerdict::Another => Err(HttpError::new(
                        505,
                        "only HTTP/1.0 and HTTP/1.1 are spoken here",
                    )),
                    VersionVerdict::NotHttp => Err(HttpError::new(
                        400,
                        "malformed request: invalid HTTP version",
                    )),
                    // httparse stops at the first byte that is not `HTTP/1.`; whether
                    // that is another version (505) or no version at all (400) shows
                    // only once the line is complete, and the answer must not depend on
                    // where the segment boundary fell.
                    VersionVerdict::Undecided if window.len() < self.limits.max_head => Ok(false),
                    VersionVerdict::Undecided => Err(HttpError::new(
                        431,
                        format!("request head exceeds {} bytes", self.limits.max_head),
                    )),
                };
            }
            Err(e) => return Err(HttpError::new(400, format!("malformed request: {e}"))),
        };
        if head_len > self.limits.max_head {
            return Err(HttpError::new(
                431,
                format!("request head exceeds {} bytes", self.limits.max_head),
            ));
        }
        let version = if parsed.version == Some(0) {
            Version::Http10
        } else {
            Version::Http11
        };
        let method = parsed.method.unwrap_or_default().to_owned();
        let target = parsed.path.unwrap_or_default().to_owned();
        if !target.starts_with('/') && target != "*" {
            return Err(HttpError::new(
                400,
                "request target must be a path (origin-form)",
            ));
        }
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let request = Request {
            method,
            target,
            version,
            headers,
            body: Vec::new(),
            head_bytes: head_len,
        };
        check_host(&request)?;
        let framing = self.framing(&request)?;
        let expect_continue = version == Version::Http11
            && request
                .header("expect")
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        self.buf.drain(..head_len);
        self.state = State::Body {
            request,
            framing,
            expect_continue,
        };
        Ok(true)
    }

    /// RFC 9112 §6.3: how the body's length is known.
    fn framing(&self, request: &Request) -> Result<Framing, HttpError> {
        let te: Vec<&str> = request
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        let cls: Vec<&str> = request
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .collect();
        if !te.is_empty() {
            // §6.1: both present is a smuggling attempt as often as not; refuse it.
            if !cls.is_empty() {
                return Err(HttpError::new(
                    400,
                    "both Transfer-Encoding and Content-Length",
                ));
            }
            if request.version == Version::Http10 {
                return Err(HttpError::new(
                    400,
                    "Transfer-Encoding in an HTTP/1.0 request",
                ));
            }
            // §6.3 item 4: a request whose final coding is not chunked has no knowable length.
            if !te.last().is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
                return Err(HttpError::new(400, "final transfer coding is not chunked"));
            }
            if te.len() > 1 {
                return Err(HttpError::new(
                    501,
                    "only the chunked transfer coding is supported",
                ));
            }
            return Ok(Framing::Chunked(Dechunker::default()));
        }
        let Some(first) = cls.first() else {
            return Ok(Framing::Length(0));
        };
        // §8.6: a list of identical values is one value; anything else is an error.
        if cls.iter().any(|v| v != first) {
            return Err(HttpError::new(400, "conflicting Content-Length values"));
        }
        if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HttpError::new(
                400,
                format!("invalid Content-Length {first:?}"),
            ));
        }
        match first.parse::<usize>() {
            Ok(n) if n <= self.limits.max_body => Ok(Framing::Length(n)),
            _ => Err(HttpError::new(
                413,
                format!(
                    "body of {first} bytes exceeds the limit of {}",
                    self.limits.max_body
                ),
            )),
        }
    }

    fn decode_body(&mut self) -> Result<Option<Request>, HttpError> {
        let max_body = self.limits.max_body;
        let State::Body {
            request, framing, ..
        } = &mut self.state
        else {
            unreachable!("decode_body is only called in the Body state");
        };
        match framing {
            Framing::Length(remaining) => {
                let n = (*remaining).min(self.buf.len());
                request.body.extend_from_slice(&self.buf[..n]);
                self.buf.drain(..n);
                *remaining -= n;
                if *remaining > 0 {
                    return Ok(None);
                }
            }
            Framing::Chunked(chunk) => {
                let body = &mut request.body;
                let used = chunk.decode(&self.buf, self.limits.max_head, &mut |piece| {
                    match piece {
                        Piece::Size(size) if body.len().saturating_add(size) > max_body => {
                            return Err(HttpError::new(
                                413,
                                format!("chunked body exceeds the limit of {max_body}"),
                            ));
                        }
                        Piece::Size(_) => {}
                        Piece::Data(data) => body.extend_from_slice(data),
                    }
                    Ok(())
                })?;
                self.buf.drain(..used);
                if !chunk.is_done() {
                    return Ok(None);
                }
            }
        }
        let request = std::mem::replace(
            request,
            Request {
                method: String::new(),
                target: String::new(),
                version: Version::Http11,
                headers: Vec::new(),
                body: Vec::new(),
                head_bytes: 0,
            },
        );
        Ok(Some(request))
    }
}

/// RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any
/// HTTP/1.1 request message that lacks a Host header field and to any request message
/// that contains more than one Host header field line or a Host header field with an
/// invalid field value." HTTP/1.0 predates Host and may leave it out.
fn check_host(request: &Request) -> Result<(), HttpError> {
    let mut hosts = request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.as_str());
    match (hosts.next(), hosts.next()) {
        (None, _) if request.version == Version::Http11 => Err(HttpError::new(
            400,
            "HTTP/1.1 request without a Host header (RFC 9112 §3.2)",
        )),
        (None, _) => Ok(()),
        (Some(_), Some(_)) => Err(HttpError::new(
            400,
            "more than one Host header (RFC 9112 §3.2)",
        )),
        (Some(host), None) if !valid_host(host) => Err(HttpError::new(
            400,
            format!("invalid Host header {host:?} (RFC 9112 §3.2)"),
        )),
        (Some(_), None) => Ok(()),
    }
}

/// Host = uri-host [ ":" port ] (RFC 9110 §7.2, RFC 3986 §3.2.2): a registered name or
/// IPv4 address, or an IP literal in brackets, then digits after a colon. Empty is
/// allowed: a target with no authority is sent with an empty Host.
fn valid_host(value: &str) -> bool {
    let (host, port) = match value.strip_prefix('[') {
        Some(literal) => match literal.split_once(']') {
            Some((ip, rest)) => {
                let ip_ok = !ip.is_empty()
                    && ip
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
                if !ip_ok {
                    return false;
                }
                match rest {
                    "" => ("", None),
                    _ => match rest.strip_prefix(':') {
                        Some(port) => ("", Some(port)),
                        None => return false,
                    },
                }
            }
            None => return false,
        },
        None => match value.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (value, None),
        },
    };
    // reg-name = *( unreserved / pct-encoded / sub-delims )
    let host_ok = host.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            )
    });
    host_ok && port.is_none_or(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// What a request line that httparse refused for its version says.
#[derive(Debug, PartialEq, Eq)]
enum VersionVerdict {
    /// A well-formed `HTTP/d.d` that is not one we speak: 505 (RFC 9110 §15.6.6).
    Another,
    /// Not an HTTP request line at all: 400.
    NotHttp,
    /// The line is not complete and could still turn out either way.
    Undecided,
}

/// RFC 9112 §2.3: HTTP-version = "HTTP/" DIGIT "." DIGIT. Judges the request line (after
/// the empty lines §2.2 lets a server skip) once it is complete, or says it cannot yet.
fn version_verdict(buf: &[u8]) -> VersionVerdict {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let rest = &buf[start..];
    let (line, complete) = match rest.iter().position(|&b| b == b'\n') {
        Some(end) => (&rest[..end], true),
        None => (rest, false),
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.split(|&b| b == b' ').count() != 3 {
        return VersionVerdict::NotHttp;
    }
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    const SHAPE: &[u8; 8] = b"HTTP/d.d";
    let fits = version.len() <= SHAPE.len()
        && version.iter().zip(SHAPE).all(|(&b, &want)| match want {
            b'd' => b.is_ascii_digit(),
            _ => b == want,
        });
    match (fits, complete) {
        (false, _) => VersionVerdict::NotHttp,
        (true, true) if version.len() == SHAPE.len() => VersionVerdict::Another,
        // A line that ended before its version was whole.
        (true, true) => VersionVerdict::NotHttp,
        (true, false) => VersionVerdict::Undecided,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> RequestDecoder {
        RequestDecoder::new(Limits {
            max_head: 1024,
            max_headers: 8,
            max_body: 100,
        })
    }

    fn one(input: &[u8]) -> Decoded {
        let mut d = decoder();
        assert_eq!(d.input(input), input.len());
        d.decode()
    }

    fn status(d: Decoded) -> u16 {
        match d {
            Decoded::Error(e) => e.status,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn simple_get() {
        let Decoded::Request(r) = one(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n") else {
            panic!()
        };
        assert_eq!(
            (r.method.as_str(), r.path(), r.version),
            ("GET", "/a", Version::Http11)
        );
        assert_eq!(r.header("HOST"), Some("x"));
        assert!(r.keep_alive());
        assert_eq!(r.head_bytes, 32);
    }

    #[test]
    fn byte_by_byte_gives_the_same_request() {
        let input = b"POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        let mut d = decoder();
        for (i, b) in input.iter().enumerate() {
            d.input(std::slice::from_ref(b));
            let got = d.decode();
            if i + 1 < input.len() {
                assert_eq!(got, Decoded::NeedMore, "at byte {i}");
            } else {
                let Decoded::Request(r) = got else {
                    panic!("{got:?}")
                };
                assert_eq!(r.body, b"hello");
            }
        }
    }

    #[test]
    fn pipelined_requests_come_out_in_order() {
        let mut d = decoder();
        d.input(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\n\r\n");
        for want in ["/1", "/2", "/3"] {
            let Decoded::Request(r) = d.decode() else {
                panic!()
            };
            assert_eq!(r.target, want);
        }
        assert_eq!(d.decode(), Decoded::NeedMore);
        assert!(!d.in_progress());
    }

    #[test]
    fn http10_closes_unless_asked() {
        let Decoded::Request(r) = one(b"GET / HTTP/1.0\r\n\r\n") else {
            panic!()
        };
        assert!(!r.keep_alive());
        let Decoded::Request(r) = one(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n") else {
            panic!()
        };
        assert!(r.keep_alive());
        let Decoded::Request(r) =
            one(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: foo, close\r\n\r\n")
        else {
            panic!()
        };
        assert!(!r.keep_alive());
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let Decoded::Request(r) = one(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n1\r\n!\r\n0\r\nT: v\r\n\r\n",
        ) else {
            panic!()
        };
        assert_eq!(r.body, b"hello!");
    }

    #[test]
    fn malformed_is_400() {
        assert_eq!(status(one(b"GARBAGE\r\n\r\n")), 400);
        assert_eq!(
            status(one(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")),
            400
        );
        assert_eq!(
            status(one(b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n")),
            400
        );
        assert_eq!(
            status(one(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n"
            )),
            400
        );
        assert_eq!(
            status(one(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
            )),
            400
        );
        assert_eq!(
            status(one(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
            )),
            400
        );
        assert_eq!(
            status(one(
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
            )),
            400
        );
        assert_eq!(
            status(one(
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"
            )),
            400
        );
    }

    #[test]
    fn other_versions_are_505_and_non_http_is_400() {
        assert_eq!(status(one(b"GET / HTTP/2.0\r\n\r\n")), 505);
        assert_eq!(status(one(b"GET / HTTP/1.2\r\n\r\n")), 505);
        assert_eq!(status(one(b"THIS IS NOT HTTP\r\n\r\n")), 400);
        assert_eq!(status(one(b"GET / FTP/1.0\r\n\r\n")), 400);
    }

    #[test]
    fn too_big_body_is_413_before_it_arrives() {
        assert_eq!(
            status(one(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n"
            )),
            413
        );
        assert_eq!(
            status(one(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n"
            )),
            413
        );
        let chunked = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n";
        assert_eq!(status(one(chunked)), 413);
    }

    #[test]
    fn too_big_head_is_431() {
        let mut d = decoder();
        let mut head = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        while head.len() < 1100 {
            head.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaa\r\n");
        }
        d.input(&head);
        assert_eq!(status(d.decode()), 431);
        let many: String = (0..9).map(|i| format!("H{i}: v\r\n")).collect();
        assert_eq!(
            status(one(
                format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes()
            )),
            431
        );
    }

    #[test]
    fn expect_continue_is_reported_once() {
        let mut d = decoder();
        d.input(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(d.decode(), Decoded::Continue);
        assert_eq!(d.decode(), Decoded::NeedMore);
        d.input(b"hi");
        assert!(matches!(d.decode(), Decoded::Request(r) if r.body == b"hi"));
    }

    /// What a connection's bytes turn into, fed in the given pieces: each request (or
    /// the error status that ends the connection), in order. `Continue` is left out: it
    /// depends on whether the body came with the head, by design.
    fn outcomes(pieces: &[&[u8]]) -> Vec<Result<Request, u16>> {
        let mut d = decoder();
        let mut got = Vec::new();
        for piece in pieces {
            assert_eq!(d.input(piece), piece.len());
            loop {
                match d.decode() {
                    Decoded::Request(r) => got.push(Ok(r)),
                    Decoded::Continue => {}
                    Decoded::NeedMore => break,
                    Decoded::Error(e) => {
                        got.push(Err(e.status));
                        return got;
                    }
                }
            }
        }
        got
    }

    /// Found by the fuzzer (fuzz/regressions/http_decode/): a byte httparse refuses just
    /// past a 16-byte head limit gave 400 in one piece and 431 byte by byte.
    #[test]
    fn a_bad_byte_past_the_head_limit_gets_431_however_it_arrives() {
        let input = b"QQQ \xff\xff\xc9\xff\xff\xff\xff\xff\xff\xff\xc9%\x00";
        let limits = Limits {
            max_head: 16,
            max_headers: 3,
            max_body: 592,
        };
        let mut whole = RequestDecoder::new(limits);
        whole.input(input);
        assert_eq!(status(whole.decode()), 431);
        let mut bytes = RequestDecoder::new(limits);
        let mut last = Decoded::NeedMore;
        for b in input {
            bytes.input(std::slice::from_ref(b));
            last = bytes.decode();
            if last != Decoded::NeedMore {
                break;
            }
        }
        assert_eq!(status(last), 431);
    }

    #[test]
    fn the_answer_does_not_depend_on_how_the_bytes_were_cut() {
        let cases: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"GET / HTTP/1.1\nHost: x\n\n",
            b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/2.0\r\nHost: x\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
            b"\r\nGET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/2.0\rX\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.2\r\n\r\n",
            b"GET / HTTP/9.9\n\n",
            b"GET / HTTP/2\r\n\r\n",
            b"GET / HTTP/1.10\r\n\r\n",
            b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n",
            b"GET / http/1.1\r\n\r\n",
            b"GET / FTP/1.0\r\n\r\n",
            b"THIS IS NOT HTTP\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        ];
        for &case in cases {
            let whole = outcomes(&[case]);
            assert!(
                !whole.is_empty(),
                "{:?} gave nothing",
                String::from_utf8_lossy(case)
            );
            for cut in 1..case.len() {
                assert_eq!(
                    outcomes(&[&case[..cut], &case[cut..]]),
                    whole,
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(case)
                );
            }
            let bytes: Vec<&[u8]> = case.chunks(1).collect();
            assert_eq!(
                outcomes(&bytes),
                whole,
                "{:?} byte by byte",
                String::from_utf8_lossy(case)
            );
        }
        let status = |case: &[u8]| match outcomes(&[case]).last() {
            Some(Err(s)) => *s,
            Some(Ok(_)) => 200,
            None => 0,
        };
        assert_eq!(status(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n"), 505);
        assert_eq!(status(b"GET / HTTP/9.9\n\n"), 505);
        assert_eq!(status(b"\r\nGET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(status(b"GET / HTTP/2.0\rX\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/2\r\n\r\n"), 400);
        assert_eq!(status(b"GET / FTP/1.0\r\n\r\n"), 400);
    }

    #[test]
    fn http11_needs_exactly_one_valid_host() {
        let reason = |input: &[u8]| match one(input) {
            Decoded::Error(e) => (e.status, e.reason),
            other => panic!("expected an error, got {other:?}"),
        };
        let (code, why) = reason(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n");
        assert_eq!(code, 400);
        assert!(why.contains("without a Host"), "{why}");
        let (code, why) = reason(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n");
        assert_eq!(code, 400);
        assert!(why.contains("more than one Host"), "{why}");
        // Two is one too many whatever the version (RFC 9112 §3.2).
        assert_eq!(
            status(one(b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n")),
            400
        );
        for bad in ["a b", "a/b", "x@y", "a:80x", "[::1", "a?b", "a#b"] {
            let input = format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n");
            assert_eq!(status(one(input.as_bytes())), 400, "Host: {bad}");
        }
        for good in [
            "synack.test",
            "SynAck.Test:8080",
            "10.77.0.2",
            "10.77.0.2:80",
            "[::1]:443",
            "[fe80::1]",
            "a_b.x",
            "",
        ] {
            let input = format!("GET / HTTP/1.1\r\nHost: {good}\r\n\r\n");
            assert!(
                matches!(one(input.as_bytes()), Decoded::Request(_)),
                "Host: {good}"
            );
        }
        // HTTP/1.0 predates Host.
        assert!(matches!(
            one(b"GET / HTTP/1.0\r\n\r\n"),
            Decoded::Request(_)
        ));
    }

    #[test]
    fn room_bounds_the_buffer() {
        let mut d = decoder();
        let big = vec![b'a'; 100_000];
        let took = d.input(&big);
        assert!(took < big.len());
        assert_eq!(d.room(), 0);
    }
}
