//! The chunked transfer coding (RFC 9112 §7.1), decoded as bytes arrive: shared by the
//! request decoder (server) and the response decoder (client).

use super::HttpError;

/// The longest chunk-size line (with extensions) we read before calling it malformed.
const MAX_CHUNK_LINE: usize = 1024;

/// What the decoder found in the bytes it was given.
pub enum Piece<'a> {
    /// A chunk of this many bytes is announced (its data follows as [`Piece::Data`]).
    Size(usize),
    Data(&'a [u8]),
}

#[derive(Debug, Clone, Copy, Default)]
pub enum Dechunker {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(usize),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields until an empty line.
    Trailers,
    Done,
}

impl Dechunker {
    /// Decodes as much of `buf` as is complete, handing each piece to `out`; returns how
    /// many bytes were used (the rest is an incomplete line: offer it again with more).
    /// Trailer lines may be up to `max_trailer` bytes.
    pub fn decode(
        &mut self,
        buf: &[u8],
        max_trailer: usize,
        out: &mut dyn FnMut(Piece<'_>) -> Result<(), HttpError>,
    ) -> Result<usize, HttpError> {
        let mut pos = 0;
        loop {
            match *self {
                Dechunker::Size => {
                    let Some(line) = take_line(&buf[pos..], MAX_CHUNK_LINE)? else {
                        return Ok(pos);
                    };
                    pos += line.len() + 2;
                    let size = parse_chunk_size(line)?;
                    out(Piece::Size(size))?;
                    *self = if size == 0 {
                        Dechunker::Trailers
                    } else {
                        Dechunker::Data(size)
                    };
                }
                Dechunker::Data(left) => {
                    let n = left.min(buf.len() - pos);
                    if n == 0 {
                        return Ok(pos);
                    }
                    out(Piece::Data(&buf[pos..pos + n]))?;
                    pos += n;
                    *self = if left == n {
                        Dechunker::DataEnd
                    } else {
                        Dechunker::Data(left - n)
                    };
                }
                Dechunker::DataEnd => {
                    let rest = &buf[pos..];
                    if rest.len() < 2 {
                        return Ok(pos);
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(HttpError::new(400, "chunk data not followed by CRLF"));
                    }
                    pos += 2;
                    *self = Dechunker::Size;
                }
                Dechunker::Trailers => {
                    // Trailer fields are read and dropped (RFC 9112 §7.1.2).
                    let Some(line) = take_line(&buf[pos..], max_trailer)? else {
                        return Ok(pos);
                    };
                    pos += line.len() + 2;
                    if line.is_empty() {
                        *self = Dechunker::Done;
                    }
                }
                Dechunker::Done => return Ok(pos),
            }
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Dechunker::Done)
    }
}

/// The bytes before the next CRLF, if the CRLF has arrived.
fn take_line(buf: &[u8], max: usize) -> Result<Option<&[u8]>, HttpError> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(i) if i <= max => Ok(Some(&buf[..i])),
        Some(_) => Err(HttpError::new(400, "chunk line too long")),
        None if buf.len() > max + 1 => Err(HttpError::new(400, "chunk line too long")),
        None => Ok(None),
    }
}

/// `chunk-size [ chunk-ext ]` (RFC 9112 §7.1): hex digits, extensions ignored.
fn parse_chunk_size(line: &[u8]) -> Result<usize, HttpError> {
    let hex = line.split(|&b| b == b';').next().unwrap_or_default();
    let hex = std::str::from_utf8(hex)
        .map_err(|_| HttpError::new(400, "bad chunk size"))?
        .trim();
    if hex.is_empty() || hex.len() > 15 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(HttpError::new(400, format!("bad chunk size {hex:?}")));
    }
    usize::from_str_radix(hex, 16).map_err(|_| HttpError::new(400, "bad chunk size"))
}
