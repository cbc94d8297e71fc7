//! HTTP/1.1 (RFC 9110, RFC 9112), sans-IO: bytes in, requests out; responses in, bytes
//! out. Nothing here touches a socket or reads a clock.
//!
//! Modelled on hyper's `proto/h1`: [`decode`] turns bytes into requests and enforces the
//! limits, [`encode`] turns a response into bytes (streaming bodies it never holds whole),
//! [`response`] is the client's side: response bytes into a head and a streamed body.

mod chunked;
pub mod decode;
pub mod encode;
pub mod response;

pub use decode::{Decoded, RequestDecoder};
pub use encode::{Body, Outgoing, Response};
pub use response::{ResponseDecoder, ResponseHead};

/// Bounds on what a client may send. Each breaks with its own status code.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Request line plus headers. Past this: 431 (RFC 6585 §5). 16 KiB is twice what
    /// browsers send with a full cookie jar, and what most servers allow.
    pub max_head: usize,
    /// Header fields. Past this: 431. Real clients send 5 to 30.
    pub max_headers: usize,
    /// Request body, Content-Length or chunked. Past this: 413 (RFC 9110 §15.5.14).
    /// Bodies are held whole for the handler, so this bounds memory per connection.
    pub max_body: usize,
}

/// The most header fields any `--max-headers` may allow: the parser's array lives on the
/// stack.
pub const MAX_HEADERS_CEILING: usize = 128;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 16 * 1024,
            max_headers: 64,
            max_body: 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// A complete request: head and whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub version: Version,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Bytes of the request line and headers, with the blank line.
    pub head_bytes: usize,
}

impl Request {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether any `Connection` header lists `token` (RFC 9110 §7.6.1).
    pub fn connection_has(&self, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Persistent unless the client said otherwise: HTTP/1.1 keeps the connection open
    /// unless `Connection: close`; HTTP/1.0 closes it unless `Connection: keep-alive`
    /// (RFC 9112 §9.3).
    pub fn keep_alive(&self) -> bool {
        match self.version {
            Version::Http11 => !self.connection_has("close"),
            Version::Http10 => self.connection_has("keep-alive"),
        }
    }

    /// The path part of the target, without the query.
    pub fn path(&self) -> &str {
        self.target.split(['?', '#']).next().unwrap_or("")
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// A request that gets an error status instead of reaching the handler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {reason}")]
pub struct HttpError {
    pub status: u16,
    pub reason: String,
}

impl HttpError {
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        HttpError {
            status,
            reason: reason.into(),
        }
    }
}

/// The reason phrase for a status code (RFC 9110 §15).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}
