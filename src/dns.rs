//! A small authoritative DNS responder (RFC 1035), sans-IO: a query's bytes in, the
//! answer's bytes out. It knows a few names, all at the stack's address.
//!
//! - a name it knows, type A (or ANY): one A record;
//! - a name it knows, any other type (AAAA included): NOERROR with no answer (RFC 2308 §2.2
//!   "NODATA"), so resolvers fall back to A rather than failing;
//! - any other name: NXDOMAIN;
//! - a query it cannot read past the header: FORMERR; one not even that long, or a
//!   response sent to it: dropped (the caller counts it).
//!
//! The same reader describes DNS packets for the capture's comments.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;

/// TTL of our answers: short, because the names live as long as one synack run.
pub const TTL: u32 = 60;

/// Response codes (RFC 1035 §4.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    NoError = 0,
    FormErr = 1,
    NxDomain = 3,
    NotImp = 4,
    Refused = 5,
}

impl Rcode {
    pub fn name(self) -> &'static str {
        match self {
            Rcode::NoError => "NOERROR",
            Rcode::FormErr => "FORMERR",
            Rcode::NxDomain => "NXDOMAIN",
            Rcode::NotImp => "NOTIMP",
            Rcode::Refused => "REFUSED",
        }
    }

    fn from_code(code: u8) -> &'static str {
        match code {
            0 => "NOERROR",
            1 => "FORMERR",
            2 => "SERVFAIL",
            3 => "NXDOMAIN",
            4 => "NOTIMP",
            5 => "REFUSED",
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

/// The parts of a message the responder and the capture need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: u16,
    pub response: bool,
    pub opcode: u8,
    pub recursion_desired: bool,
    pub rcode: u8,
    pub questions: u16,
    pub answers: u16,
    /// The first question, if there is one.
    pub question: Option<Question>,
    /// The first A record in the answer section, if any (responses only).
    pub first_a: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Lower case, dot-separated, no trailing dot.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// Where the question ends in the message.
    end: usize,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Reads a name at `at` (RFC 1035 §4.1.4; pointers followed, at most 16 of them).
/// Returns the name and where it ends in the message (after the first pointer, if any).
fn read_name(msg: &[u8], mut at: usize) -> Result<(String, usize), &'static str> {
    let mut name = String::new();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(at).ok_or("name runs past the end")? as usize;
        match len {
            0 => break,
            l if l & 0xC0 == 0xC0 => {
                let target = (u16_at(msg, at).ok_or("truncated pointer")? & 0x3FFF) as usize;
                end.get_or_insert(at + 2);
                jumps += 1;
                if jumps > 16 || target >= msg.len() {
                    return Err("bad compression pointer");
                }
                at = target;
            }
            l if l > 63 => return Err("label longer than 63 bytes"),
            l => {
                let label = msg
                    .get(at + 1..at + 1 + l)
                    .ok_or("label runs past the end")?;
                if !name.is_empty() {
                    name.push('.');
                }
                for &c in label {
                    name.push(if c.is_ascii_graphic() {
                        c.to_ascii_lowercase() as char
                    } else {
                        '?'
                    });
                }
                if name.len() > 253 {
                    return Err("name longer than 253 bytes");
                }
                at += 1 + l;
            }
        }
    }
    Ok((name, end.unwrap_or(at + 1)))
}

/// Reads a message's header, first question and first A answer.
pub fn parse(msg: &[u8]) -> Result<Message, Malformed> {
    if msg.len() < 12 {
        return Err(Malformed::NoHeader);
    }
    let flags = u16_at(msg, 2).unwrap_or(0);
    let mut m = Message {
        id: u16_at(msg, 0).unwrap_or(0),
        response: flags & 0x8000 != 0,
        opcode: ((flags >> 11) & 0xF) as u8,
        recursion_desired: flags & 0x0100 != 0,
        rcode: (flags & 0xF) as u8,
        questions: u16_at(msg, 4).unwrap_or(0),
        answers: u16_at(msg, 6).unwrap_or(0),
        question: None,
        first_a: None,
    };
    if m.questions == 0 {
        return Ok(m);
    }
    let (name, at) = read_name(msg, 12).map_err(Malformed::Body)?;
    let qtype = u16_at(msg, at).ok_or(Malformed::Body("question type missing"))?;
    let qclass = u16_at(msg, at + 2).ok_or(Malformed::Body("question class missing"))?;
    m.question = Some(Question {
        name,
        qtype,
        qclass,
        end: at + 4,
    });
    if m.response && m.questions == 1 {
        let mut at = at + 4;
        for _ in 0..m.answers {
            let Ok((_, after)) = read_name(msg, at) else {
                break;
            };
            let (Some(rtype), Some(len)) = (u16_at(msg, after), u16_at(msg, after + 8)) else {
                break;
            };
            let data = after + 10;
            if rtype == TYPE_A && len == 4 && msg.len() >= data + 4 {
                m.first_a = Some(Ipv4Addr::new(
                    msg[data],
                    msg[data + 1],
                    msg[data + 2],
                    msg[data + 3],
                ));
                break;
            }
            at = data + len as usize;
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
    pub fn answer(&self, query: &[u8], out: &mut Vec<u8>) -> Outcome {
        out.clear();
        let msg = match parse(query) {
            Ok(m) => m,
            Err(Malformed::NoHeader) => return Outcome::Dropped("shorter than a DNS header"),
            Err(Malformed::Body(why)) => {
                let id = u16_at(query, 0).unwrap_or(0);
                if u16_at(query, 2).is_some_and(|f| f & 0x8000 != 0) {
                    return Outcome::Dropped("a malformed response, not a query");
                }
                self.header(out, id, 0, false, Rcode::FormErr, 0, 0);
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
        let answered = |rcode, answer| {
            let (name, qtype) = msg
                .question
                .as_ref()
                .map_or((String::new(), 0), |q| (q.name.clone(), q.qtype));
            Outcome::Reply(Answered {
                id: msg.id,
                name,
                qtype,
                rcode,
                answer,
            })
        };
        let question = match (&msg.question, msg.questions) {
            (Some(q), 1) => q,
            // RFC 9619: a query has exactly one question.
            _ => {
                self.header(
                    out,
                    msg.id,
                    msg.opcode,
                    msg.recursion_desired,
                    Rcode::FormErr,
                    0,
                    0,
                );
                return answered(Rcode::FormErr, None);
            }
        };
        let rcode = if msg.opcode != 0 {
            Rcode::NotImp
        } else if question.qclass != CLASS_IN && question.qclass != TYPE_ANY {
            Rcode::Refused
        } else if self.names.contains(&question.name) {
            Rcode::NoError
        } else {
            Rcode::NxDomain
        };
        let with_a = rcode == Rcode::NoError && matches!(question.qtype, TYPE_A | TYPE_ANY);
        self.header(
            out,
            msg.id,
            msg.opcode,
            msg.recursion_desired,
            rcode,
            1,
            u16::from(with_a),
        );
        out.extend_from_slice(&query[12..question.end]);
        if with_a {
            out.extend_from_slice(&0xC00Cu16.to_be_bytes()); // the question's name, at 12
            out.extend_from_slice(&TYPE_A.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&TTL.to_be_bytes());
            out.extend_from_slice(&4u16.to_be_bytes());
            out.extend_from_slice(&self.addr.octets());
        }
        answered(rcode, with_a.then_some(self.addr))
    }

    #[allow(clippy::too_many_arguments)]
    fn header(
        &self,
        out: &mut Vec<u8>,
        id: u16,
        opcode: u8,
        rd: bool,
        rcode: Rcode,
        qd: u16,
        an: u16,
    ) {
        // QR = 1, AA = 1 (these names are ours), RA = 0 (we do not recurse).
        let flags =
            0x8000 | (u16::from(opcode & 0xF) << 11) | 0x0400 | (u16::from(rd) << 8) | rcode as u16;
        for word in [id, flags, qd, an, 0, 0] {
            out.extend_from_slice(&word.to_be_bytes());
        }
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
