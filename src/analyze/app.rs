//! What a segment carries for the application, read from the start of its payload: TLS
//! records (RFC 8446 §5.1: type, version, length) and the handshake messages in them
//! (§4: ClientHello, ServerHello ...), or an HTTP/1.1 request or status line (RFC 9112
//! §3, §4). Only as much as the capture holds is read; nothing here is trusted.

use std::collections::HashMap;

/// The most labels remembered for retransmissions (a retransmitted ClientHello is still
/// one): past this, a retransmission's label is worked out again or left out.
const REMEMBERED_LABELS: usize = 1 << 16;

/// TLS's largest record body: 2^14 bytes of plaintext plus up to 2048 of expansion
/// (RFC 5246 §6.2.3; TLS 1.3 allows 256, RFC 8446 §5.2). A "record" longer than this is
/// not TLS.
const MAX_RECORD: usize = (1 << 14) + 2048;

/// The longest request target shown; a long one is cut with an ellipsis.
const MAX_TARGET: usize = 40;

/// What a connection's payload turned out to be, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Unknown,
    Tls,
    Http,
    /// Neither: nothing is labelled.
    Other,
}

/// One direction of a connection, as its payload is read.
#[derive(Default)]
pub struct Reader {
    /// Where the next TLS record header starts, in relative sequence numbers; `None`
    /// when the reader lost its place (a gap, or a header the capture cut).
    next_record: Option<u32>,
    /// This side sent ChangeCipherSpec: its handshake records are encrypted now.
    encrypted: bool,
    /// Labels by starting sequence number, for the retransmissions of labelled segments.
    labels: HashMap<u32, String>,
}

fn plausible_record(b: &[u8]) -> bool {
    matches!(b, [20..=23, 3, 0..=4, hi, lo, ..]
        if usize::from(u16::from_be_bytes([*hi, *lo])) <= MAX_RECORD)
}

/// What the first payload of a connection says it speaks.
pub fn sniff(payload: &[u8]) -> Protocol {
    if payload.is_empty() {
        Protocol::Unknown
    } else if plausible_record(payload) {
        Protocol::Tls
    } else if request_line(payload).is_some() || status_line(payload).is_some() {
        Protocol::Http
    } else {
        Protocol::Other
    }
}

fn handshake_name(t: u8) -> Option<&'static str> {
    Some(match t {
        0 => "HelloRequest",
        1 => "ClientHello",
        2 => "ServerHello",
        4 => "NewSessionTicket",
        5 => "EndOfEarlyData",
        8 => "EncryptedExtensions",
        11 => "Certificate",
        12 => "ServerKeyExchange",
        13 => "CertificateRequest",
        14 => "ServerHelloDone",
        15 => "CertificateVerify",
        16 => "ClientKeyExchange",
        20 => "Finished",
        24 => "KeyUpdate",
        _ => return None,
    })
}

/// Appends `name`, or counts it when it repeats the last one ("Application Data x3").
fn push(names: &mut Vec<(String, u32)>, name: &str) {
    match names.last_mut() {
        Some((last, n)) if last == name => *n += 1,
        _ => names.push((name.to_owned(), 1)),
    }
}

fn join(names: &[(String, u32)]) -> Option<String> {
    let parts: Vec<String> = names
        .iter()
        .map(|(name, n)| {
            if *n > 1 {
                format!("{name} x{n}")
            } else {
                name.clone()
            }
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

impl Reader {
    /// The label of a segment of this direction: `seq` its relative sequence number,
    /// `len` its payload length on the wire, `payload` what the capture holds of it,
    /// `new` whether it carries data never seen before (not a retransmission).
    pub fn label(
        &mut self,
        protocol: Protocol,
        seq: u32,
        len: u32,
        payload: &[u8],
        new: bool,
    ) -> Option<String> {
        if len == 0 {
            return None;
        }
        if !new {
            return self.labels.get(&seq).cloned();
        }
        let label = match protocol {
            Protocol::Tls => self.tls(seq, len, payload),
            Protocol::Http => http(payload),
            Protocol::Unknown | Protocol::Other => None,
        };
        if let Some(l) = &label
            && self.labels.len() < REMEMBERED_LABELS
        {
            self.labels.insert(seq, l.clone());
        }
        label
    }

    fn tls(&mut self, seq: u32, len: u32, payload: &[u8]) -> Option<String> {
        // Where in this segment the next record starts; lost, a segment that starts with
        // something that looks like a record header picks the thread up again.
        let mut at = match self.next_record {
            Some(next) if next.wrapping_sub(seq) < len => next.wrapping_sub(seq) as usize,
            // The next record starts beyond this segment: it is all inside one record.
            Some(next) if next.wrapping_sub(seq) < 1 << 31 => return None,
            _ if plausible_record(payload) => 0,
            _ => {
                self.next_record = None;
                return None;
            }
        };
        let len = len as usize;
        let mut names = Vec::new();
        while at < len {
            let Some(header) = payload.get(at..at + 5) else {
                // The capture cut the header: the place is lost until a segment starts
                // with a record again.
                self.next_record = None;
                return join(&names);
            };
            if !plausible_record(header) {
                self.next_record = None;
                return join(&names);
            }
            let body = usize::from(u16::from_be_bytes([header[3], header[4]]));
            match header[0] {
                20 => {
                    self.encrypted = true;
                    push(&mut names, "ChangeCipherSpec");
                }
                21 if self.encrypted => push(&mut names, "Alert (encrypted)"),
                21 => push(&mut names, "Alert"),
                22 if self.encrypted => push(&mut names, "Handshake (encrypted)"),
                22 => {
                    // The handshake messages inside, as far as they were captured.
                    let end = (at + 5 + body).min(payload.len());
                    let mut m = at + 5;
                    let mut any = false;
                    while let Some(&[t, a, b, c]) = payload.get(m..m + 4).filter(|_| m < end) {
                        push(&mut names, handshake_name(t).unwrap_or("Handshake"));
                        any = true;
                        m += 4 + (usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c));
                    }
                    if !any {
                        push(&mut names, "Handshake");
                    }
                }
                _ => push(&mut names, "Application Data"),
            }
            at += 5 + body;
        }
        self.next_record = Some(seq.wrapping_add(at as u32));
        join(&names)
    }
}

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// `GET /path` from the start of a request (RFC 9112 §3: method SP target SP version).
fn request_line(p: &[u8]) -> Option<String> {
    let line = first_line(p);
    let mut words = line.splitn(3, |&b| b == b' ');
    let method = std::str::from_utf8(words.next()?).ok()?;
    if !METHODS.contains(&method) {
        return None;
    }
    let target = words.next()?;
    // A target cut by the capture (no version after it) is still shown, marked cut.
    let whole = words.next().is_some_and(|v| v.starts_with(b"HTTP/"));
    let mut t = String::from_utf8_lossy(target).into_owned();
    if t.chars().count() > MAX_TARGET {
        t = t.chars().take(MAX_TARGET).collect::<String>() + "...";
    } else if !whole {
        t.push_str("...");
    }
    Some(format!("{method} {t}"))
}

/// `200 OK` from the start of a response (RFC 9112 §4: version SP status SP reason).
fn status_line(p: &[u8]) -> Option<String> {
    let line = first_line(p);
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let status = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !status.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let reason = rest.get(6..).unwrap_or_default();
    let reason: String = String::from_utf8_lossy(reason).chars().take(30).collect();
    Some(
        format!("{} {reason}", String::from_utf8_lossy(status))
            .trim_end()
            .to_owned(),
    )
}

fn first_line(p: &[u8]) -> &[u8] {
    let end = p
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(p.len());
    &p[..end.min(200)]
}

fn http(payload: &[u8]) -> Option<String> {
    request_line(payload).or_else(|| status_line(payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut r = vec![kind, 3, 3];
        r.extend_from_slice(&(body.len() as u16).to_be_bytes());
        r.extend_from_slice(body);
        r
    }

    fn handshake(t: u8, len: usize) -> Vec<u8> {
        let mut h = vec![t, 0, (len >> 8) as u8, len as u8];
        h.extend(std::iter::repeat_n(0u8, len));
        h
    }

    #[test]
    fn tls_records_and_handshake_messages_are_named() {
        let hello = record(22, &handshake(1, 200));
        assert_eq!(sniff(&hello), Protocol::Tls);
        let mut r = Reader::default();
        let label = |r: &mut Reader, seq: u32, p: &[u8]| {
            r.label(Protocol::Tls, seq, p.len() as u32, p, true)
        };
        assert_eq!(label(&mut r, 1, &hello).as_deref(), Some("ClientHello"));
        // TLS 1.2's second flight in one record, then ChangeCipherSpec and Finished.
        let mut flight = handshake(2, 70);
        flight.extend(handshake(11, 300));
        flight.extend(handshake(14, 0));
        let mut p = record(22, &flight);
        p.extend(record(20, &[1]));
        p.extend(record(22, &[9; 40]));
        let mut s = Reader::default();
        assert_eq!(
            label(&mut s, 1, &p).as_deref(),
            Some(
                "ServerHello, Certificate, ServerHelloDone, ChangeCipherSpec, Handshake (encrypted)"
            )
        );
        // Application data records, one spanning two segments.
        let mut data = record(23, &[0; 100]);
        data.extend(record(23, &[0; 100]));
        data.extend(record(23, &[0; 3000]));
        let seq = 1 + p.len() as u32;
        let (a, b) = data.split_at(1460);
        assert_eq!(
            label(&mut s, seq, a).as_deref(),
            Some("Application Data x3")
        );
        assert_eq!(label(&mut s, seq + 1460, b), None, "inside a record");
        // The retransmission of a labelled segment keeps its label.
        assert_eq!(
            s.label(Protocol::Tls, seq, 1460, a, false).as_deref(),
            Some("Application Data x3")
        );
    }

    #[test]
    fn a_cut_capture_keeps_what_the_headers_say() {
        // Only the first 20 bytes of a 1000-byte ClientHello record were captured: the
        // name is read, and the next record is still found at its place.
        let hello = record(22, &handshake(1, 995));
        let mut r = Reader::default();
        let l = r.label(Protocol::Tls, 1, hello.len() as u32, &hello[..20], true);
        assert_eq!(l.as_deref(), Some("ClientHello"));
        let next = record(23, &[0; 10]);
        let l = r.label(Protocol::Tls, 1 + hello.len() as u32, 15, &next, true);
        assert_eq!(l.as_deref(), Some("Application Data"));
        // A header the capture cut in half: the thread is lost, then picked up again.
        let l = r.label(Protocol::Tls, 1016, 2000, &[23, 3], true);
        assert_eq!(l, None);
        let l = r.label(Protocol::Tls, 5000, 15, &next, true);
        assert_eq!(l.as_deref(), Some("Application Data"));
    }

    #[test]
    fn http_request_and_status_lines() {
        assert_eq!(sniff(b"GET / HTTP/1.1\r\nHost: x\r\n"), Protocol::Http);
        assert_eq!(http(b"GET / HTTP/1.1\r\n").as_deref(), Some("GET /"));
        assert_eq!(
            http(b"POST /json HTTP/1.1\r\n").as_deref(),
            Some("POST /json")
        );
        assert_eq!(
            http(b"HTTP/1.1 200 OK\r\ncontent-length: 5").as_deref(),
            Some("200 OK")
        );
        assert_eq!(http(b"HTTP/1.1 404\r\n").as_deref(), Some("404"));
        // Cut by the capture inside the target.
        assert_eq!(http(b"GET /bytes/20").as_deref(), Some("GET /bytes/20..."));
        assert_eq!(http(b"xx GET /"), None);
        assert_eq!(http(b"HTTP/1.1 2x0 OK"), None);
        assert_eq!(sniff(b"\x00\x01binary"), Protocol::Other);
    }
}
