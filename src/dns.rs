//! A small authoritative DNS responder (RFC 1035), sans-IO: a query's bytes in, the
//! answer's bytes out. It knows a few names, all at the stack's address.
//!
//! - a name it knows, type A (or ANY): one A record;
//! - a name it knows, any other type (AAAA included): NOERROR with no answer (RFC 2308 §2.2
//!   "NODATA"), so resolvers fall back to A rather than failing;
//! - any other name: NXDOMAIN;
//! - a query it cannot read past the header: FORMERR; one not even that long, or a
//!   response sent to it: dropped (the caller counts it). A name that does not parse is
//!   one it cannot read: a compression pointer into the header, forward, or in a loop, a
//!   label over 63 bytes, a name over 255;
//! - a query with EDNS (an OPT record, RFC 6891): the same answer with our OPT record
//!   (UDP payload 1232, version 0); an EDNS version above 0: BADVERS, with our OPT.
//!
//! Replies write the question's name out in full; the only compression pointer in them
//! is the answer's, to that name (RFC 1035 §4.1.4).
//!
//! The same reader describes DNS packets for the capture's comments.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
/// The EDNS pseudo-record (RFC 6891 §6.1.2).
pub const TYPE_OPT: u16 = 41;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;

/// TTL of our answers: short, because the names live as long as one synack run.
pub const TTL: u32 = 60;

/// The UDP payload size our OPT record advertises (RFC 6891 §6.2.5): 1232 bytes fit the
/// IPv6 minimum MTU of 1280 without fragmentation, the size DNS Flag Day 2020 agreed on.
pub const EDNS_PAYLOAD: u16 = 1232;

/// The highest EDNS version we speak (RFC 6891 §6.1.3).
pub const EDNS_VERSION: u8 = 0;

/// The DNS header's length (RFC 1035 §4.1.1).
const HEADER: usize = 12;

/// The longest name on the wire, length octets and the root's zero included (RFC 1035
/// §2.3.4).
const MAX_NAME_WIRE: usize = 255;

/// Response codes (RFC 1035 §4.1.1; BADVERS is an extended one, RFC 6891 §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    NoError = 0,
    FormErr = 1,
    NxDomain = 3,
    NotImp = 4,
    Refused = 5,
    /// The query's EDNS version is higher than ours (RFC 6891 §6.1.3). Twelve bits: the
    /// header carries the low four (0), the OPT record's TTL the high eight (1).
    BadVers = 16,
}

impl Rcode {
    pub fn name(self) -> &'static str {
        Self::from_code(self as u16)
    }

    fn from_code(code: u16) -> &'static str {
        match code {
            0 => "NOERROR",
            1 => "FORMERR",
            2 => "SERVFAIL",
            3 => "NXDOMAIN",
            4 => "NOTIMP",
            5 => "REFUSED",
            16 => "BADVERS",
            _ => "RCODE?",
        }
    }
}

/// A record type as dig writes it.
pub fn type_name(qtype: u16) -> String {
    match qtype {
        TYPE_A => "A".into(),
        TYPE_AAAA => "AAAA".into(),
        TYPE_ANY => "ANY".into(),
        TYPE_OPT => "OPT".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        12 => "PTR".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        33 => "SRV".into(),
        65 => "HTTPS".into(),
        other => format!("TYPE{other}"),
    }
}

/// Why a DNS message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Shorter than the 12-byte header: nothing to answer to.
    NoHeader,
    /// The header is there, the rest is not right: answer FORMERR.
    Body(&'static str),
}

/// What a message's OPT record says (RFC 6891 §6.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// The largest UDP payload the sender can take.
    pub payload: u16,
    pub version: u8,
    /// The upper eight bits of the twelve-bit RCODE.
    pub ext_rcode: u8,
    /// DNSSEC OK (RFC 3225 §3).
    pub dnssec_ok: bool,
}

/// The parts of a message the responder and the capture need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: u16,
    pub response: bool,
    pub opcode: u8,
    pub recursion_desired: bool,
    /// The whole RCODE: the header's four bits, and with EDNS the OPT record's eight above.
    pub rcode: u16,
    pub questions: u16,
    pub answers: u16,
    /// The first question, if there is one.
    pub question: Option<Question>,
    /// The first A record in the answer section, if any (responses only).
    pub first_a: Option<Ipv4Addr>,
    /// The OPT record in the additional section, if there is one.
    pub edns: Option<Edns>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Lower case, dot-separated, no trailing dot; a dot or an unprintable byte inside a
    /// label is escaped as in a zone file (`\.`, `\DDD`, RFC 1035 §5.1).
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// Where the question's name starts in the message.
    name_at: usize,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

/// Walks the name at `at` (RFC 1035 §4.1.4), handing each label to `label`, and returns
/// where the name ends in the message (after the first pointer, if there is one).
///
/// A compression pointer must point to "a prior occurrence of the same name": here,
/// strictly before the labels being read, so every jump goes backwards and no loop can
/// form, and never into the 12-byte header, where no name lives. Labels are at most 63
/// bytes (the length octet's top bits 01 and 10 are not lengths, RFC 6891 §5), a name at
/// most 255 bytes on the wire (RFC 1035 §2.3.4).
fn walk_name(msg: &[u8], at: usize, mut label: impl FnMut(&[u8])) -> Result<usize, &'static str> {
    let mut at = at;
    // Where the run of labels now being read began: a pointer must land before it.
    let mut run_start = at;
    let mut end = None;
    let mut wire = 1; // the root's zero octet
    loop {
        let len = *msg.get(at).ok_or("name runs past the end")?;
        match len {
            0 => return Ok(end.unwrap_or(at + 1)),
            l if l & 0xC0 == 0xC0 => {
                let target = usize::from(u16_at(msg, at).ok_or("truncated pointer")? & 0x3FFF);
                if target < HEADER {
                    return Err("compression pointer into the header");
                }
                if target >= run_start {
                    return Err(
                        "compression pointer that does not point back (a loop or a forward pointer)",
                    );
                }
                end.get_or_insert(at + 2);
                at = target;
                run_start = target;
            }
            l if l > 63 => return Err("label longer than 63 bytes"),
            l => {
                let l = usize::from(l);
                let bytes = msg
                    .get(at + 1..at + 1 + l)
                    .ok_or("label runs past the end")?;
                wire += 1 + l;
                if wire > MAX_NAME_WIRE {
                    return Err("name longer than 255 bytes");
                }
                label(bytes);
                at += 1 + l;
            }
        }
    }
}

/// Reads a name at `at` as text (see [`Question::name`]); returns it and where it ends.
fn read_name(msg: &[u8], at: usize) -> Result<(String, usize), &'static str> {
    let mut name = String::new();
    let end = walk_name(msg, at, |label| {
        if !name.is_empty() {
            name.push('.');
        }
        for &c in label {
            match c {
                b'.' | b'\\' => {
                    name.push('\\');
                    name.push(c as char);
                }
                c if c.is_ascii_graphic() => name.push(c.to_ascii_lowercase() as char),
                c => {
                    let _ = write!(name, "\\{c:03}");
                }
            }
        }
    })?;
    Ok((name, end))
}

/// Reads a message's header, first question, first A answer and OPT record. Every
/// record is checked for length, so a message that reads here also reads in a strict
/// parser.
pub fn parse(msg: &[u8]) -> Result<Message, Malformed> {
    if msg.len() < HEADER {
        return Err(Malformed::NoHeader);
    }
    let flags = u16_at(msg, 2).unwrap_or(0);
    let mut m = Message {
        id: u16_at(msg, 0).unwrap_or(0),
        response: flags & 0x8000 != 0,
        opcode: ((flags >> 11) & 0xF) as u8,
        recursion_desired: flags & 0x0100 != 0,
        rcode: flags & 0xF,
        questions: u16_at(msg, 4).unwrap_or(0),
        answers: u16_at(msg, 6).unwrap_or(0),
        question: None,
        first_a: None,
        edns: None,
    };
    let authority = u16_at(msg, 8).unwrap_or(0);
    let additional = u16_at(msg, 10).unwrap_or(0);
    let mut at = HEADER;
    for i in 0..m.questions {
        let (name, after) = read_name(msg, at).map_err(Malformed::Body)?;
        let qtype = u16_at(msg, after).ok_or(Malformed::Body("question type missing"))?;
        let qclass = u16_at(msg, after + 2).ok_or(Malformed::Body("question class missing"))?;
        if i == 0 {
            m.question = Some(Question {
                name,
                qtype,
                qclass,
                name_at: at,
            });
        }
        at = after + 4;
    }
    for (count, section) in [(m.answers, 0), (authority, 1), (additional, 2)] {
        for _ in 0..count {
            let mut root = true;
            let after = walk_name(msg, at, |_| root = false).map_err(Malformed::Body)?;
            let (Some(rtype), Some(class), Some(ttl), Some(len)) = (
                u16_at(msg, after),
                u16_at(msg, after + 2),
                u32_at(msg, after + 4),
                u16_at(msg, after + 8),
            ) else {
                return Err(Malformed::Body("record header runs past the end"));
            };
            let data = after + 10;
            let rdata = msg
                .get(data..data + usize::from(len))
                .ok_or(Malformed::Body("record data runs past the end"))?;
            match (section, rtype) {
                (0, TYPE_A) if class == CLASS_IN && m.first_a.is_none() => {
                    if let [a, b, c, d] = *rdata {
                        m.first_a = Some(Ipv4Addr::new(a, b, c, d));
                    }
                }
                (2, TYPE_OPT) => {
                    // RFC 6891 §6.1.1: one OPT at most, owned by the root.
                    if m.edns.is_some() {
                        return Err(Malformed::Body("more than one OPT record"));
                    }
                    if !root {
                        return Err(Malformed::Body("OPT record not owned by the root"));
                    }
                    let edns = Edns {
                        payload: class,
                        ext_rcode: (ttl >> 24) as u8,
                        version: (ttl >> 16) as u8,
                        dnssec_ok: ttl & 0x8000 != 0,
                    };
                    m.rcode |= u16::from(edns.ext_rcode) << 4;
                    m.edns = Some(edns);
                }
                _ => {}
            }
            at = data + usize::from(len);
        }
    }
    Ok(m)
}

/// What the responder did with a query, for the journey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    pub id: u16,
    pub name: String,
    pub qtype: u16,
    pub rcode: Rcode,
    pub answer: Option<Ipv4Addr>,
}

/// The responder's verdict on one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The reply is in the output buffer.
    Reply(Answered),
    /// No reply: the datagram was not a query we can answer to.
    Dropped(&'static str),
}

/// The names the responder answers for, and the address they have.
#[derive(Debug, Clone)]
pub struct Zone {
    names: Vec<String>,
    addr: Ipv4Addr,
}

/// Checks a name for `--name`: letters, digits and hyphens in labels of 1 to 63, at most
/// 253 in all (RFC 1035 §2.3.1, RFC 1123 §2.1).
pub fn valid_name(name: &str) -> Result<String, String> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let ok_label = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(ok_label) {
        return Err(format!(
            "{name:?} is not a DNS name (labels of letters, digits and hyphens, 1 to 63 long, dot-separated)"
        ));
    }
    Ok(name)
}

impl Zone {
    /// `names` must have passed [`valid_name`].
    pub fn new(names: Vec<String>, addr: Ipv4Addr) -> Self {
        Zone { names, addr }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Answers one query datagram, writing the reply into `out` (cleared first).
    ///
    /// The reply's question is the query's name written out in full, never the query's
    /// own compression pointers copied as they came (they point into the query, not into
    /// the reply); the answer's owner points at that question, a name this reply holds.
    pub fn answer(&self, query: &[u8], out: &mut Vec<u8>) -> Outcome {
        out.clear();
        let msg = match parse(query) {
            Ok(m) => m,
            Err(Malformed::NoHeader) => return Outcome::Dropped("shorter than a DNS header"),
            Err(Malformed::Body(why)) => {
                let id = u16_at(query, 0).unwrap_or(0);
                let flags = u16_at(query, 2).unwrap_or(0);
                if flags & 0x8000 != 0 {
                    return Outcome::Dropped("a malformed response, not a query");
                }
                let opcode = ((flags >> 11) & 0xF) as u8;
                let head = Head {
                    id,
                    opcode,
                    rd: flags & 0x0100 != 0,
                    rcode: Rcode::FormErr,
                };
                head.write(out, 0, 0, 0);
                return Outcome::Reply(Answered {
                    id,
                    name: format!("({why})"),
                    qtype: 0,
                    rcode: Rcode::FormErr,
                    answer: None,
                });
            }
        };
        if msg.response {
            // Answering a response could start a loop between two responders.
            return Outcome::Dropped("a response, not a query");
        }
        let (name, qtype) = msg
            .question
            .as_ref()
            .map_or((String::new(), 0), |q| (q.name.clone(), q.qtype));
        // RFC 6891 §6.1.1: a query with an OPT record gets one back.
        let opt = msg.edns.map(|e| e.dnssec_ok);
        let mut head = Head {
            id: msg.id,
            opcode: msg.opcode,
            rd: msg.recursion_desired,
            rcode: Rcode::FormErr,
        };
        let reply = |head: &Head, out: &mut Vec<u8>, answer| {
            head.write_opt(out, opt);
            Outcome::Reply(Answered {
                id: msg.id,
                name: name.clone(),
                qtype,
                rcode: head.rcode,
                answer,
            })
        };
        let question = match (&msg.question, msg.questions) {
            (Some(q), 1) => q,
            // RFC 9619: a query has exactly one question.
            _ => {
                head.write(out, 0, 0, u16::from(opt.is_some()));
                return reply(&head, out, None);
            }
        };
        head.rcode = if msg.edns.is_some_and(|e| e.version > EDNS_VERSION) {
            // RFC 6891 §6.1.3: a version we do not speak; our OPT says which we do.
            Rcode::BadVers
        } else if msg.opcode != 0 {
            Rcode::NotImp
        } else if question.qclass != CLASS_IN && question.qclass != TYPE_ANY {
            Rcode::Refused
        } else if self.names.contains(&question.name) {
            Rcode::NoError
        } else {
            Rcode::NxDomain
        };
        let with_a = head.rcode == Rcode::NoError && matches!(question.qtype, TYPE_A | TYPE_ANY);
        head.write(out, 1, u16::from(with_a), u16::from(opt.is_some()));
        let written = walk_name(query, question.name_at, |label| {
            out.push(label.len() as u8);
            out.extend_from_slice(label);
        });
        debug_assert!(written.is_ok(), "parse has read this name already");
        out.push(0);
        out.extend_from_slice(&question.qtype.to_be_bytes());
        out.extend_from_slice(&question.qclass.to_be_bytes());
        if with_a {
            // RFC 1035 §4.1.4: the question's name, which this reply holds at offset 12.
            out.extend_from_slice(&(0xC000 | HEADER as u16).to_be_bytes());
            out.extend_from_slice(&TYPE_A.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&TTL.to_be_bytes());
            out.extend_from_slice(&4u16.to_be_bytes());
            out.extend_from_slice(&self.addr.octets());
        }
        reply(&head, out, with_a.then_some(self.addr))
    }
}

/// The header fields of a reply that come from the query or the verdict.
struct Head {
    id: u16,
    opcode: u8,
    rd: bool,
    rcode: Rcode,
}

impl Head {
    /// The 12-byte header with these section counts.
    fn write(&self, out: &mut Vec<u8>, qd: u16, an: u16, ar: u16) {
        // QR = 1, AA = 1 (these names are ours), RA = 0 (we do not recurse); the low four
        // bits of the RCODE (RFC 6891 §6.1.3).
        let flags = 0x8000
            | (u16::from(self.opcode & 0xF) << 11)
            | 0x0400
            | (u16::from(self.rd) << 8)
            | (self.rcode as u16 & 0xF);
        for word in [self.id, flags, qd, an, 0, ar] {
            out.extend_from_slice(&word.to_be_bytes());
        }
    }

    /// Our OPT record, if the query had one (`Some(dnssec_ok)`), at the end of the
    /// additional section (RFC 6891 §6.1.2): owner the root, CLASS our UDP payload size,
    /// TTL the RCODE's upper eight bits, version 0, and the DO bit copied from the query
    /// (RFC 3225 §3); no options.
    fn write_opt(&self, out: &mut Vec<u8>, opt: Option<bool>) {
        let Some(dnssec_ok) = opt else { return };
        let ttl = (u32::from(self.rcode as u16 >> 4) << 24)
            | (u32::from(EDNS_VERSION) << 16)
            | (u32::from(dnssec_ok) << 15);
        out.push(0);
        out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        out.extend_from_slice(&EDNS_PAYLOAD.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
    }
}

/// A capture comment for a DNS datagram's payload.
pub fn describe(payload: &[u8]) -> String {
    let m = match parse(payload) {
        Ok(m) => m,
        Err(Malformed::NoHeader) => return "DNS: malformed, shorter than a header".into(),
        Err(Malformed::Body(why)) => {
            let id = u16_at(payload, 0).unwrap_or(0);
            return format!("DNS 0x{id:04x}: malformed ({why})");
        }
    };
    let mut t = format!(
        "DNS {} 0x{:04x}",
        if m.response { "response" } else { "query" },
        m.id
    );
    if let Some(q) = &m.question {
        let _ = write!(t, ": {} {}", type_name(q.qtype), q.name);
    }
    if let Some(e) = m.edns {
        let _ = write!(t, " [EDNS{} {} B]", e.version, e.payload);
    }
    if m.response {
        match m.first_a {
            Some(a) => {
                let _ = write!(t, " -> {a}");
            }
            None => t.push_str(" -> no answer"),
        }
        let _ = write!(t, " ({})", Rcode::from_code(m.rcode));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut q = Vec::new();
        for w in [id, 0x0100, 1, 0, 0, 0] {
            q.extend_from_slice(&w.to_be_bytes());
        }
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q
    }

    fn zone() -> Zone {
        Zone::new(
            vec!["synack.test".into(), "www.synack.test".into()],
            Ipv4Addr::new(10, 77, 0, 2),
        )
    }

    #[test]
    fn a_known_name_gets_an_a_record() {
        let mut out = Vec::new();
        let got = zone().answer(&query(0x1234, "SynAck.Test", TYPE_A), &mut out);
        let Outcome::Reply(a) = got else {
            panic!("{got:?}")
        };
        assert_eq!(
            (a.rcode, a.answer),
            (Rcode::NoError, Some(Ipv4Addr::new(10, 77, 0, 2)))
        );
        let m = parse(&out).unwrap();
        assert!(m.response);
        assert_eq!((m.id, m.rcode, m.answers), (0x1234, 0, 1));
        assert_eq!(m.first_a, Some(Ipv4Addr::new(10, 77, 0, 2)));
        assert!(out[2] & 0x04 != 0, "authoritative");
        assert!(out[2] & 0x01 != 0, "RD copied");
        assert_eq!(
            describe(&out),
            "DNS response 0x1234: A synack.test -> 10.77.0.2 (NOERROR)"
        );
    }

    #[test]
    fn aaaa_is_nodata_and_others_nxdomain() {
        let mut out = Vec::new();
        let Outcome::Reply(a) = zone().answer(&query(1, "synack.test", TYPE_AAAA), &mut out) else {
            panic!()
        };
        assert_eq!((a.rcode, a.answer), (Rcode::NoError, None));
        assert_eq!(parse(&out).unwrap().answers, 0);
        let Outcome::Reply(a) = zone().answer(&query(2, "example.org", TYPE_A), &mut out) else {
            panic!()
        };
        assert_eq!(a.rcode, Rcode::NxDomain);
        assert_eq!(parse(&out).unwrap().rcode, 3);
    }

    #[test]
    fn malformed_queries_get_formerr_or_are_dropped() {
        let mut out = Vec::new();
        assert_eq!(
            zone().answer(b"short", &mut out),
            Outcome::Dropped("shorter than a DNS header")
        );
        let mut q = query(7, "synack.test", TYPE_A);
        q.truncate(q.len() - 3);
        let Outcome::Reply(a) = zone().answer(&q, &mut out) else {
            panic!()
        };
        assert_eq!(a.rcode, Rcode::FormErr);
        assert_eq!(parse(&out).unwrap().id, 7);
        let mut two = query(8, "synack.test", TYPE_A);
        two[5] = 2;
        let Outcome::Reply(a) = zone().answer(&two, &mut out) else {
            panic!()
        };
        assert_eq!(a.rcode, Rcode::FormErr);
        let mut response = query(9, "synack.test", TYPE_A);
        response[2] |= 0x80;
        assert!(matches!(
            zone().answer(&response, &mut out),
            Outcome::Dropped(_)
        ));
        // A pointer loop is caught.
        let mut lp = query(10, "a", TYPE_A);
        lp.splice(12..14, [0xC0, 0x0C]);
        assert!(matches!(
            zone().answer(&lp, &mut out),
            Outcome::Reply(Answered {
                rcode: Rcode::FormErr,
                ..
            })
        ));
    }

    /// An OPT record (RFC 6891 §6.1.2) for the additional section: root owner, `payload`
    /// as CLASS, extended RCODE, version and DO in the TTL, and one COOKIE option as dig
    /// sends (RFC 7873 §4).
    fn opt(payload: u16, version: u8, dnssec_ok: bool) -> Vec<u8> {
        let mut o = vec![0];
        o.extend_from_slice(&TYPE_OPT.to_be_bytes());
        o.extend_from_slice(&payload.to_be_bytes());
        let ttl = (u32::from(version) << 16) | (u32::from(dnssec_ok) << 15);
        o.extend_from_slice(&ttl.to_be_bytes());
        let cookie = [10u16.to_be_bytes(), 8u16.to_be_bytes()].concat();
        o.extend_from_slice(&((cookie.len() + 8) as u16).to_be_bytes());
        o.extend_from_slice(&cookie);
        o.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        o
    }

    fn with_opt(mut q: Vec<u8>, opts: &[Vec<u8>]) -> Vec<u8> {
        q[11] = opts.len() as u8;
        for o in opts {
            q.extend_from_slice(o);
        }
        q
    }

    /// A reply as a second, independent parser reads it: smoltcp's `wire::dns` for the
    /// header, question and answers (it refuses pointers that do not point back), and a
    /// strict reader here for the OPT record smoltcp does not know. Every byte must be
    /// accounted for.
    #[derive(Debug, PartialEq, Eq)]
    struct Strict {
        id: u16,
        rcode: u16,
        labels: Vec<Vec<u8>>,
        answers: Vec<Ipv4Addr>,
        /// (payload, version, DO) of the OPT record.
        opt: Option<(u16, u8, bool)>,
    }

    fn strict(reply: &[u8]) -> Strict {
        use smoltcp::wire::{DnsPacket, DnsQuestion, DnsRecord, DnsRecordData};
        let packet = DnsPacket::new_checked(reply).expect("a DNS header");
        assert!(packet.flags().contains(smoltcp::wire::DnsFlags::RESPONSE));
        let mut rest = packet.payload();
        let mut labels = Vec::new();
        for _ in 0..packet.question_count() {
            let (after, q) = DnsQuestion::parse(rest).expect("a question");
            labels = packet
                .parse_name(q.name)
                .map(|l| l.expect("a question name that reads").to_vec())
                .collect();
            rest = after;
        }
        let mut answers = Vec::new();
        for _ in 0..packet.answer_record_count() {
            let (after, r) = DnsRecord::parse(rest).expect("an answer record");
            assert!(
                packet.parse_name(r.name).all(|l| l.is_ok()),
                "the answer's owner reads"
            );
            if let DnsRecordData::A(a) = r.data {
                answers.push(a);
            }
            rest = after;
        }
        assert_eq!(packet.authority_record_count(), 0);
        let mut rcode = u16::from(u8::from(packet.rcode()));
        let mut opt = None;
        for _ in 0..packet.additional_record_count() {
            assert!(opt.is_none(), "one OPT at most");
            assert_eq!(rest[0], 0, "OPT owner is the root");
            let field = |at: usize| u16::from_be_bytes([rest[at], rest[at + 1]]);
            assert_eq!(field(1), TYPE_OPT);
            let ttl = u32::from(field(5)) << 16 | u32::from(field(7));
            let len = usize::from(field(9));
            assert_eq!(ttl & 0x7FFF, 0, "Z is zero");
            rcode |= ((ttl >> 24) as u16) << 4;
            opt = Some((field(3), (ttl >> 16) as u8, ttl & 0x8000 != 0));
            rest = &rest[11 + len..];
        }
        assert!(
            rest.is_empty(),
            "{} bytes after the last record",
            rest.len()
        );
        Strict {
            id: packet.transaction_id(),
            rcode,
            labels,
            answers,
            opt,
        }
    }

    fn reply_to(q: &[u8]) -> (Outcome, Vec<u8>) {
        let mut out = Vec::new();
        let got = zone().answer(q, &mut out);
        (got, out)
    }

    #[test]
    fn edns_queries_get_an_opt_record_back() {
        let q = with_opt(query(0x4321, "synack.test", TYPE_A), &[opt(4096, 0, true)]);
        let (got, out) = reply_to(&q);
        assert!(
            matches!(
                got,
                Outcome::Reply(Answered {
                    rcode: Rcode::NoError,
                    ..
                })
            ),
            "{got:?}"
        );
        let r = strict(&out);
        assert_eq!(r.id, 0x4321);
        assert_eq!(r.rcode, 0);
        assert_eq!(r.answers, [Ipv4Addr::new(10, 77, 0, 2)]);
        assert_eq!(
            r.opt,
            Some((EDNS_PAYLOAD, 0, true)),
            "1232 B, version 0, DO copied"
        );
        assert_eq!(
            describe(&out),
            "DNS response 0x4321: A synack.test [EDNS0 1232 B] -> 10.77.0.2 (NOERROR)"
        );
        assert_eq!(
            describe(&q),
            "DNS query 0x4321: A synack.test [EDNS0 4096 B]"
        );
        // NXDOMAIN and NODATA carry it too; without EDNS, no OPT.
        let q = with_opt(query(1, "nope.test", TYPE_A), &[opt(512, 0, false)]);
        let r = strict(&reply_to(&q).1);
        assert_eq!((r.rcode, r.opt), (3, Some((EDNS_PAYLOAD, 0, false))));
        let r = strict(&reply_to(&query(2, "synack.test", TYPE_A)).1);
        assert_eq!(r.opt, None);
    }

    #[test]
    fn an_unknown_edns_version_gets_badvers_with_an_opt_record() {
        let q = with_opt(query(7, "synack.test", TYPE_A), &[opt(1232, 1, false)]);
        let (got, out) = reply_to(&q);
        let Outcome::Reply(a) = got else {
            panic!("{got:?}")
        };
        assert_eq!((a.rcode.name(), a.answer), ("BADVERS", None));
        assert_eq!(out[3] & 0x0F, 0, "the header holds the low four bits of 16");
        let r = strict(&out);
        assert_eq!(r.rcode, 16, "RFC 6891 §6.1.3: BADVERS");
        assert_eq!(
            r.opt,
            Some((EDNS_PAYLOAD, 0, false)),
            "the version we speak"
        );
        assert!(r.answers.is_empty());
        assert_eq!(parse(&out).unwrap().rcode, 16);
        assert!(describe(&out).ends_with("(BADVERS)"), "{}", describe(&out));
    }

    #[test]
    fn broken_opt_records_get_formerr() {
        let two = with_opt(
            query(8, "synack.test", TYPE_A),
            &[opt(1232, 0, false), opt(1232, 0, false)],
        );
        let mut owned = opt(1232, 0, false);
        owned.splice(0..1, [1, b'x', 0]);
        let owned = with_opt(query(9, "synack.test", TYPE_A), &[owned]);
        let mut short = with_opt(query(10, "synack.test", TYPE_A), &[opt(1232, 0, false)]);
        short.truncate(short.len() - 3);
        for q in [two, owned, short] {
            let (got, out) = reply_to(&q);
            assert!(
                matches!(
                    got,
                    Outcome::Reply(Answered {
                        rcode: Rcode::FormErr,
                        ..
                    })
                ),
                "{got:?}"
            );
            assert_eq!(strict(&out).rcode, 1);
        }
    }

    /// The header and question of a query whose name is `name` as raw bytes, then
    /// `tail` after the question.
    fn raw_query(id: u16, name: &[u8], tail: &[u8]) -> Vec<u8> {
        let mut q = Vec::new();
        for w in [id, 0x0100, 1, 0, 0, 0] {
            q.extend_from_slice(&w.to_be_bytes());
        }
        q.extend_from_slice(name);
        q.extend_from_slice(&TYPE_A.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q.extend_from_slice(tail);
        q
    }

    #[test]
    fn names_that_do_not_parse_get_formerr() {
        let long_label = [&[64u8][..], &[b'a'; 64], &[0]].concat();
        let mut too_long = Vec::new();
        for _ in 0..4 {
            too_long.push(63);
            too_long.extend_from_slice(&[b'a'; 63]);
        }
        too_long.extend_from_slice(&[0]); // 4 * 64 + 1 = 257 bytes on the wire
        let cases: [(&str, Vec<u8>); 7] = [
            ("pointer into the header", raw_query(1, &[0xC0, 0x00], &[])),
            ("pointer to itself", raw_query(2, &[0xC0, 0x0C], &[])),
            (
                "a label, then a pointer back to it",
                raw_query(3, &[1, b'a', 0xC0, 0x0C], &[]),
            ),
            // The name the pointer points at is real, but after it: a forward pointer.
            (
                "forward pointer",
                raw_query(4, &[0xC0, 18], b"\x06synack\x04test\x00"),
            ),
            ("label of 64", raw_query(5, &long_label, &[])),
            ("name of 257 bytes", raw_query(6, &too_long, &[])),
            ("reserved label type 0x80", raw_query(7, &[0x80, 0], &[])),
        ];
        for (what, q) in cases {
            let (got, out) = reply_to(&q);
            assert!(
                matches!(
                    got,
                    Outcome::Reply(Answered {
                        rcode: Rcode::FormErr,
                        ..
                    })
                ),
                "{what}: {got:?}"
            );
            let r = strict(&out);
            assert_eq!(
                (r.id, r.rcode),
                (u16::from_be_bytes([q[0], q[1]]), 1),
                "{what}"
            );
        }
        // 255 bytes on the wire is the most a name may have, and is read.
        let mut longest = Vec::new();
        for len in [63u8, 63, 63, 61] {
            longest.push(len);
            longest.extend(std::iter::repeat_n(b'a', usize::from(len)));
        }
        longest.push(0);
        assert_eq!(longest.len(), 255);
        let (got, out) = reply_to(&raw_query(8, &longest, &[]));
        assert!(
            matches!(
                got,
                Outcome::Reply(Answered {
                    rcode: Rcode::NxDomain,
                    ..
                })
            ),
            "{got:?}"
        );
        assert_eq!(strict(&out).labels.len(), 4);
    }

    #[test]
    fn replies_write_the_question_out_and_read_in_a_strict_parser() {
        // The name exactly as asked (DNS 0x20 case randomisation needs it back as sent).
        let q = query(0x0a0b, "sYnAcK.tEsT", TYPE_A);
        let (_, out) = reply_to(&q);
        let r = strict(&out);
        assert_eq!(r.labels, [b"sYnAcK".to_vec(), b"tEsT".to_vec()]);
        assert_eq!(&out[12..q.len()], &q[12..], "the question, byte for byte");
        assert_eq!(r.answers, [Ipv4Addr::new(10, 77, 0, 2)]);
        // A label holding a dot is not two labels: not our name.
        let (got, _) = reply_to(&raw_query(1, b"\x0bsynack.test\x00", &[]));
        let Outcome::Reply(a) = got else { panic!() };
        assert_eq!(
            (a.rcode, a.name.as_str()),
            (Rcode::NxDomain, "synack\\.test")
        );
        for qtype in [TYPE_A, TYPE_AAAA, TYPE_ANY, 16] {
            for name in ["synack.test", "www.synack.test", "other.test"] {
                let (_, out) = reply_to(&query(3, name, qtype));
                let r = strict(&out);
                assert_eq!(r.labels.len(), name.split('.').count());
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut out = Vec::new();
        let mut seed = 0x1234_5678u32;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            let _ = zone().answer(&bytes, &mut out);
            let _ = describe(&bytes);
        }
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(valid_name("Synack.Test."), Ok("synack.test".into()));
        assert!(valid_name("bad_name.test").is_err());
        assert!(valid_name("-x.test").is_err());
        assert!(valid_name("").is_err());
    }
}
