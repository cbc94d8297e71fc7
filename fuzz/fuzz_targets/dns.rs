//! The DNS responder (src/dns.rs): `Zone::answer` and `describe` on any datagram. Beyond
//! not panicking, every reply must be a message other resolvers read: it parses back with
//! synack's own parser as a response to the query (same id, same question), and a strict
//! reader written here walks it to its last byte: names whose compression pointers only
//! point back at names already written (RFC 1035 §4.1.4), records whose lengths fit, no
//! byte left over, and a size a UDP reply may have.

#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use synack::dns::{self, Outcome, Zone};

const ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

fn u16_at(b: &[u8], at: usize) -> Result<u16, String> {
    match b.get(at..at + 2) {
        Some(x) => Ok(u16::from_be_bytes([x[0], x[1]])),
        None => Err(format!("runs out at {at}")),
    }
}

/// Walks a name strictly; returns where it ends.
fn name(msg: &[u8], start: usize) -> Result<usize, String> {
    let mut at = start;
    let mut end = None;
    let mut len = 0;
    let mut lowest = start;
    loop {
        let l = *msg.get(at).ok_or(format!("name runs out at {at}"))?;
        match l {
            0 => return Ok(end.unwrap_or(at + 1)),
            l if l & 0xC0 == 0xC0 => {
                let target = usize::from(u16_at(msg, at)? & 0x3FFF);
                if target >= lowest || target < 12 {
                    return Err(format!(
                        "pointer at {at} to {target}: not back at an earlier name"
                    ));
                }
                end.get_or_insert(at + 2);
                lowest = target;
                at = target;
            }
            l if l & 0xC0 != 0 => return Err(format!("label type {l:#x} at {at}")),
            l => {
                len += usize::from(l) + 1;
                if len > 255 {
                    return Err("name longer than 255 bytes".into());
                }
                at += 1 + usize::from(l);
            }
        }
    }
}

fn strict(msg: &[u8]) -> Result<(), String> {
    let counts = [
        u16_at(msg, 4)?,
        u16_at(msg, 6)?,
        u16_at(msg, 8)?,
        u16_at(msg, 10)?,
    ];
    if counts[0] > 1 {
        return Err(format!("{} questions", counts[0]));
    }
    let mut at = 12;
    for _ in 0..counts[0] {
        at = name(msg, at)? + 4;
    }
    for _ in 0..counts[1] + counts[2] + counts[3] {
        at = name(msg, at)?;
        let rdlength = usize::from(u16_at(msg, at + 8)?);
        at += 10 + rdlength;
    }
    if at != msg.len() {
        return Err(format!(
            "the records end at {at}, the message at {}",
            msg.len()
        ));
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let zone = Zone::new(vec!["synack.test".into(), "www.synack.test".into()], ADDR);
    let _ = dns::describe(data);
    let mut out = Vec::new();
    match zone.answer(data, &mut out) {
        Outcome::Dropped(_) => assert!(out.is_empty(), "a dropped query left a reply"),
        Outcome::Reply(a) => {
            assert!(out.len() <= 1232, "a reply of {} bytes", out.len());
            let m = dns::parse(&out)
                .unwrap_or_else(|e| panic!("our reply does not parse with our parser: {e:?}"));
            assert!(m.response, "the reply is not a response");
            assert_eq!(m.id, a.id, "the reply's id");
            assert_eq!(
                u16::from(m.rcode) & 0xF,
                (a.rcode as u16) & 0xF,
                "the reply's rcode"
            );
            if let Some(q) = m.question.as_ref().filter(|_| !a.name.starts_with('(')) {
                assert_eq!(q.name, a.name, "the reply's question");
            }
            assert_eq!(m.first_a, a.answer, "the reply's answer");
            if a.answer.is_some() {
                assert_eq!(a.answer, Some(ADDR));
            }
            strict(&out).unwrap_or_else(|e| panic!("a strict reader refuses our reply: {e}"));
            let said = dns::describe(&out);
            assert!(!said.contains("malformed"), "{said}");
        }
    }
});
