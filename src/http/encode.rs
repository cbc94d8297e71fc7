//! Response encoding: a status line and headers, then a body that is copied, generated or
//! read from a file straight into whatever buffer the caller lends (smoltcp's send
//! buffer), so a 10 GB `/bytes` response never exists in memory.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read};

use super::{Version, reason_phrase};

/// What follows the head.
#[derive(Debug)]
pub enum Body {
    Empty,
    Bytes(Vec<u8>),
    /// `len` bytes of [`pattern_byte`], generated as they are sent.
    Pattern(u64),
    /// A file's first `len` bytes, read as they are sent.
    File(File, u64),
}

impl Body {
    pub fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::Pattern(n) | Body::File(_, n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Generated or read while sending, rather than built whole beforehand.
    pub fn is_streamed(&self) -> bool {
        matches!(self, Body::Pattern(_) | Body::File(..))
    }
}

/// A response as the handler builds it. Framing headers (Content-Length, Connection,
/// Date, Server) are added by [`Outgoing`].
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: Body) -> Self {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_owned())],
            body,
        }
    }

    pub fn text(status: u16, text: impl Into<String>) -> Self {
        let mut text = text.into();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        Self::new(
            status,
            "text/plain; charset=utf-8",
            Body::Bytes(text.into_bytes()),
        )
    }

    pub fn json(status: u16, value: &impl serde::Serialize) -> Self {
        let mut body = serde_json::to_vec_pretty(value)
            .unwrap_or_else(|e| format!("{{\"error\":\"cannot serialise: {e}\"}}").into_bytes());
        body.push(b'\n');
        Self::new(status, "application/json", Body::Bytes(body))
    }

    pub fn html(status: u16, html: impl Into<String>) -> Self {
        Self::new(
            status,
            "text/html; charset=utf-8",
            Body::Bytes(html.into().into_bytes()),
        )
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// The 64 bytes `/bytes/N` repeats: printable, so `curl` on a terminal shows lines, and a
/// known function of the offset, so a client can check every byte.
pub const PATTERN: &[u8; 64] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.\n";

/// The byte at `offset` of any `/bytes/N` body.
pub fn pattern_byte(offset: u64) -> u8 {
    PATTERN[(offset % 64) as usize]
}

/// The pattern repeated, so filling a buffer is a few large copies.
const PATTERN_BLOCK: [u8; 8192 + 64] = {
    let mut block = [0u8; 8192 + 64];
    let mut i = 0;
    while i < block.len() {
        block[i] = PATTERN[i % 64];
        i += 1;
    }
    block
};

fn fill_pattern(buf: &mut [u8], offset: u64) {
    let mut at = (offset % 64) as usize;
    for chunk in buf.chunks_mut(8192) {
        chunk.copy_from_slice(&PATTERN_BLOCK[at..at + chunk.len()]);
        at = (at + chunk.len()) % 64;
    }
}

/// A response on its way out: the encoded head, then the body, handed out in pieces.
#[derive(Debug)]
pub struct Outgoing {
    head: Vec<u8>,
    head_sent: usize,
    body: Body,
    /// Body bytes to send (zero for HEAD, whose head still carries the real length).
    body_len: u64,
    body_sent: u64,
    pub status: u16,
    pub keep_alive: bool,
}

impl Outgoing {
    /// Encodes the head. `head_only` for HEAD requests (RFC 9110 §9.3.2); `date` is the
    /// value of the Date header, from the caller's clock.
    pub fn new(
        response: Response,
        version: Version,
        head_only: bool,
        keep_alive: bool,
        date: &str,
    ) -> Self {
        let len = response.body.len();
        let mut head = String::with_capacity(160);
        let _ = write!(
            head,
            "{} {} {}\r\nServer: synack/{}\r\nDate: {date}\r\n",
            version.as_str(),
            response.status,
            reason_phrase(response.status),
            env!("CARGO_PKG_VERSION")
        );
        for (name, value) in &response.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        let _ = write!(head, "Content-Length: {len}\r\n");
        match (version, keep_alive) {
            (Version::Http11, false) => head.push_str("Connection: close\r\n"),
            (Version::Http10, true) => head.push_str("Connection: keep-alive\r\n"),
            _ => {}
        }
        head.push_str("\r\n");
        Outgoing {
            head: head.into_bytes(),
            head_sent: 0,
            body_len: if head_only { 0 } else { len },
            body: response.body,
            body_sent: 0,
            status: response.status,
            keep_alive,
        }
    }

    /// The interim `100 Continue` (RFC 9110 §15.2.1): a head with no body.
    pub fn continue_100(version: Version) -> Self {
        Outgoing {
            head: format!("{} 100 Continue\r\n\r\n", version.as_str()).into_bytes(),
            head_sent: 0,
            body: Body::Empty,
            body_len: 0,
            body_sent: 0,
            status: 100,
            keep_alive: true,
        }
    }

    /// Copies as much of the rest of the response as fits into `buf`. An error means the
    /// body's file failed mid-way: the head is gone, so the connection must be aborted.
    pub fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        if self.head_sent < self.head.len() {
            let take = (self.head.len() - self.head_sent).min(buf.len());
            buf[..take].copy_from_slice(&self.head[self.head_sent..self.head_sent + take]);
            self.head_sent += take;
            n = take;
        }
        let room = (buf.len() - n) as u64;
        let want = (self.body_len - self.body_sent).min(room) as usize;
        if want == 0 {
            return Ok(n);
        }
        let out = &mut buf[n..n + want];
        let got = match &mut self.body {
            Body::Empty => 0,
            Body::Bytes(b) => {
                let at = self.body_sent as usize;
                out.copy_from_slice(&b[at..at + want]);
                want
            }
            Body::Pattern(_) => {
                fill_pattern(out, self.body_sent);
                want
            }
            Body::File(f, _) => match f.read(out)? {
                0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank")),
                got => got,
            },
        };
        self.body_sent += got as u64;
        Ok(n + got)
    }

    pub fn is_done(&self) -> bool {
        self.head_sent == self.head.len() && self.body_sent == self.body_len
    }

    /// Bytes of head and body this response puts on the wire.
    pub fn wire_len(&self) -> u64 {
        self.head.len() as u64 + self.body_len
    }

    pub fn body_len(&self) -> u64 {
        self.body.len()
    }

    pub fn is_streamed(&self) -> bool {
        self.body.is_streamed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(mut o: Outgoing, step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0; step];
        while !o.is_done() {
            let n = o.fill(&mut buf).unwrap();
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    #[test]
    fn head_and_body() {
        let r = Response::text(200, "hi");
        let bytes = drain(Outgoing::new(r, Version::Http11, false, true, "D"), 7);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Length: 3\r\n"));
        assert!(!text.contains("Connection:"));
        assert!(text.ends_with("\r\n\r\nhi\n"));
    }

    #[test]
    fn head_request_keeps_the_length_and_drops_the_body() {
        let r = Response::new(200, "x/y", Body::Pattern(1000));
        let text = String::from_utf8(drain(
            Outgoing::new(r, Version::Http11, true, false, "D"),
            64,
        ))
        .unwrap();
        assert!(text.contains("Content-Length: 1000\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn pattern_is_exact_at_any_offset_and_step() {
        for step in [1, 63, 64, 65, 1000, 9000, 20_000] {
            let r = Response::new(200, "x", Body::Pattern(50_000));
            let out = drain(Outgoing::new(r, Version::Http11, false, true, "D"), step);
            let body = &out[out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
            assert_eq!(body.len(), 50_000);
            assert!(
                body.iter()
                    .enumerate()
                    .all(|(i, &b)| b == pattern_byte(i as u64)),
                "step {step}"
            );
        }
    }
}
