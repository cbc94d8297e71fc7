//! Response decoding for the client: httparse for the head, then the body framed as RFC
//! 9112 §6.3 says (no body, Content-Length, chunked, or until the server closes), handed
//! out as it arrives so a body of any size streams through without being held.

use super::chunked::{Dechunker, Piece};
use super::{HttpError, MAX_HEADERS_CEILING};

/// The longest response head we read: the same bound the server puts on requests.
const MAX_HEAD: usize = 64 * 1024;

/// A response's status line and headers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResponseHead {
    pub version: &'static str,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub head_bytes: usize,
}

impl ResponseHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the decoder found, in order.
pub enum Event<'a> {
    /// A 1xx interim response (RFC 9110 §15.2); the final one follows.
    Interim(u16),
    Head(ResponseHead),
    Body(&'a [u8]),
    /// The response is complete.
    Done,
}

#[derive(Debug)]
enum Framing {
    Length(u64),
    Chunked(Dechunker),
    /// Until the server closes (RFC 9112 §6.3 item 8).
    UntilClose,
}

#[derive(Debug)]
enum State {
    Head,
    Body(Framing),
    Done,
}

/// Decodes one response.
#[derive(Debug)]
pub struct ResponseDecoder {
    /// The head while it is incomplete; a partial chunk-size line later.
    buf: Vec<u8>,
    state: State,
    /// The request was HEAD: whatever the headers say, no body follows (§6.3 item 1).
    head_request: bool,
}

fn malformed(why: impl Into<String>) -> HttpError {
    HttpError::new(502, why)
}

impl ResponseDecoder {
    pub fn new(head_request: bool) -> Self {
        ResponseDecoder {
            buf: Vec::new(),
            state: State::Head,
            head_request,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Takes bytes from the connection; returns how many belong to this response (the
    /// rest, if any, are not ours to read). Errors say why the response is malformed.
    pub fn input(
        &mut self,
        mut data: &[u8],
        out: &mut dyn FnMut(Event<'_>),
    ) -> Result<usize, HttpError> {
        let total = data.len();
        loop {
            match &mut self.state {
                State::Done => return Ok(total - data.len()),
                State::Head => {
                    let take = data.len().min(MAX_HEAD + 1 - self.buf.len().min(MAX_HEAD));
                    let before = self.buf.len();
                    self.buf.extend_from_slice(&data[..take]);
                    match self.parse_head(out)? {
                        // The head ended inside what we just took: give the rest back.
                        Some(head_len) => data = &data[head_len - before..],
                        None if self.buf.len() > MAX_HEAD => {
                            return Err(malformed(format!(
                                "response head longer than {MAX_HEAD} bytes"
                            )));
                        }
                        None => return Ok(total),
                    }
                }
                State::Body(Framing::Length(left)) => {
                    let n = (*left).min(data.len() as u64) as usize;
                    if n > 0 {
                        out(Event::Body(&data[..n]));
                    }
                    *left -= n as u64;
                    data = &data[n..];
                    if *left > 0 {
                        return Ok(total);
                    }
                    self.finish(out);
                }
                State::Body(Framing::UntilClose) => {
                    if !data.is_empty() {
                        out(Event::Body(data));
                    }
                    return Ok(total);
                }
                State::Body(Framing::Chunked(chunk)) => {
                    // A chunk-size line split across reads waits in `buf` for the rest.
                    self.buf.extend_from_slice(data);
                    let used = chunk.decode(&self.buf, MAX_HEAD, &mut |p| emit(p, out))?;
                    if chunk.is_done() {
                        // What follows the last chunk is not this response's.
                        let extra = self.buf.len() - used;
                        self.buf.clear();
                        self.finish(out);
                        return Ok(total - extra);
                    }
                    self.buf.drain(..used);
                    if self.buf.len() > MAX_HEAD {
                        return Err(malformed("chunk line too long"));
                    }
                    return Ok(total);
                }
            }
        }
    }

    /// The server closed the connection: a body delimited by the close is complete; any
    /// other unfinished response is an error (RFC 9112 §8).
    pub fn eof(&mut self, out: &mut dyn FnMut(Event<'_>)) -> Result<(), HttpError> {
        match &self.state {
            State::Done => Ok(()),
            State::Body(Framing::UntilClose) => {
                self.finish(out);
                Ok(())
            }
            State::Head => Err(malformed(
                "the server closed before a complete response head",
            )),
            State::Body(_) => Err(malformed("the server closed before the body was complete")),
        }
    }

    fn finish(&mut self, out: &mut dyn FnMut(Event<'_>)) {
        self.state = State::Done;
        out(Event::Done);
    }

    /// Parses the head in `buf` if it is complete; returns its length. Interim (1xx)
    /// heads are reported and skipped.
    fn parse_head(&mut self, out: &mut dyn FnMut(Event<'_>)) -> Result<Option<usize>, HttpError> {
        let mut consumed = 0;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS_CEILING];
            let mut parsed = httparse::Response::new(&mut headers);
            let len = match parsed.parse(&self.buf[consumed..]) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => {
                    self.buf.drain(..consumed);
                    return Ok(None);
                }
                Err(e) => return Err(malformed(format!("malformed response head: {e}"))),
            };
            let status = parsed.code.unwrap_or(0);
            if (100..200).contains(&status) && status != 101 {
                out(Event::Interim(status));
                consumed += len;
                continue;
            }
            let head = ResponseHead {
                version: if parsed.version == Some(0) {
                    "HTTP/1.0"
                } else {
                    "HTTP/1.1"
                },
                status,
                reason: parsed.reason.unwrap_or_default().to_owned(),
                headers: parsed
                    .headers
                    .iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value).into_owned();
                        (h.name.to_owned(), value)
                    })
                    .collect(),
                head_bytes: len,
            };
            let framing = self.framing(&head)?;
            out(Event::Head(head));
            let end = consumed + len;
            self.buf.clear();
            match framing {
                None => self.finish(out),
                Some(f) => self.state = State::Body(f),
            }
            return Ok(Some(end));
        }
    }

    /// RFC 9112 §6.3, in its order.
    fn framing(&self, head: &ResponseHead) -> Result<Option<Framing>, HttpError> {
        if self.head_request || matches!(head.status, 204 | 304) || head.status < 200 {
            return Ok(None);
        }
        if let Some(te) = head.header("transfer-encoding") {
            let last = te.rsplit(',').next().unwrap_or_default().trim();
            return Ok(Some(if last.eq_ignore_ascii_case("chunked") {
                Framing::Chunked(Dechunker::default())
            } else {
                Framing::UntilClose
            }));
        }
        if let Some(cl) = head.header("content-length") {
            let n = cl
                .trim()
                .parse::<u64>()
                .map_err(|_| malformed(format!("bad Content-Length {cl:?}")))?;
            return Ok(if n == 0 {
                None
            } else {
                Some(Framing::Length(n))
            });
        }
        Ok(Some(Framing::UntilClose))
    }
}

fn emit(piece: Piece<'_>, out: &mut dyn FnMut(Event<'_>)) -> Result<(), HttpError> {
    if let Piece::Data(data) = piece {
        out(Event::Body(data));
    }
    Ok(())
}
