//! Packets built from fuzz input, byte by byte with right checksums (so they get past the
//! stack's checks and reach its state machines), and what a peer of the stack needs to
//! build its next segment: the sequence numbers each side has reached.

use std::net::Ipv4Addr;

use arbitrary::Arbitrary;

use crate::check::{fold, pseudo, sum};

/// A TCP option as a peer might send it (RFC 9293 §3.2, RFC 7323, RFC 2018), or raw bytes.
#[derive(Arbitrary, Debug, Clone)]
pub enum TcpOpt {
    Mss(u16),
    WindowScale(u8),
    SackPermitted,
    /// Up to four blocks, relative to the segment's ACK number.
    Sack(Vec<(i16, u16)>),
    Timestamp(u32, u32),
    Nop,
    End,
    Raw(Vec<u8>),
}

/// Encodes options, padded to a multiple of 4 and cut at TCP's 40 bytes.
pub fn options(opts: &[TcpOpt], ack: u32) -> Vec<u8> {
    let mut o = Vec::new();
    for opt in opts {
        match opt {
            TcpOpt::Mss(m) => o.extend_from_slice(&[2, 4, (m >> 8) as u8, *m as u8]),
            TcpOpt::WindowScale(s) => o.extend_from_slice(&[3, 3, *s]),
            TcpOpt::SackPermitted => o.extend_from_slice(&[4, 2]),
            TcpOpt::Sack(blocks) => {
                let blocks = &blocks[..blocks.len().min(4)];
                o.extend_from_slice(&[5, 2 + 8 * blocks.len() as u8]);
                for &(start, len) in blocks {
                    let left = ack.wrapping_add(start as i32 as u32);
                    o.extend_from_slice(&left.to_be_bytes());
                    o.extend_from_slice(&left.wrapping_add(u32::from(len)).to_be_bytes());
                }
            }
            TcpOpt::Timestamp(a, b) => {
                o.extend_from_slice(&[8, 10]);
                o.extend_from_slice(&a.to_be_bytes());
                o.extend_from_slice(&b.to_be_bytes());
            }
            TcpOpt::Nop => o.push(1),
            TcpOpt::End => o.push(0),
            TcpOpt::Raw(bytes) => o.extend_from_slice(bytes),
        }
    }
    o.truncate(40);
    while !o.len().is_multiple_of(4) {
        o.push(0);
    }
    o
}

/// TCP header flags.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

/// One TCP segment's fields.
#[derive(Debug, Clone)]
pub struct Tcp<'a> {
    pub src: (Ipv4Addr, u16),
    pub dst: (Ipv4Addr, u16),
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub urgent: u16,
    pub options: &'a [u8],
    pub payload: &'a [u8],
}

/// The TCP segment (header, options, payload) with its checksum.
pub fn tcp_segment(t: &Tcp<'_>) -> Vec<u8> {
    let header_len = 20 + t.options.len();
    let mut s = Vec::with_capacity(header_len + t.payload.len());
    s.extend_from_slice(&t.src.1.to_be_bytes());
    s.extend_from_slice(&t.dst.1.to_be_bytes());
    s.extend_from_slice(&t.seq.to_be_bytes());
    s.extend_from_slice(&t.ack.to_be_bytes());
    s.push(((header_len / 4) as u8) << 4);
    s.push(t.flags);
    s.extend_from_slice(&t.window.to_be_bytes());
    s.extend_from_slice(&[0, 0]);
    s.extend_from_slice(&t.urgent.to_be_bytes());
    s.extend_from_slice(t.options);
    s.extend_from_slice(t.payload);
    let c = !fold(sum(pseudo(t.src.0, t.dst.0, 6, s.len()), &s));
    s[16..18].copy_from_slice(&c.to_be_bytes());
    s
}

/// A UDP datagram with its checksum.
pub fn udp_datagram(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut s = Vec::with_capacity(len);
    s.extend_from_slice(&src.1.to_be_bytes());
    s.extend_from_slice(&dst.1.to_be_bytes());
    s.extend_from_slice(&(len as u16).to_be_bytes());
    s.extend_from_slice(&[0, 0]);
    s.extend_from_slice(payload);
    let c = !fold(sum(pseudo(src.0, dst.0, 17, len), &s));
    // RFC 768: a computed zero is sent as all ones.
    let c = if c == 0 { 0xFFFF } else { c };
    s[6..8].copy_from_slice(&c.to_be_bytes());
    s
}

/// An ICMP message with its checksum.
pub fn icmp_message(kind: u8, code: u8, rest: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut s = vec![kind, code, 0, 0];
    s.extend_from_slice(&rest);
    s.extend_from_slice(payload);
    let c = !fold(sum(0, &s));
    s[2..4].copy_from_slice(&c.to_be_bytes());
    s
}

/// IPv4 header fields that fragments change.
#[derive(Debug, Clone, Copy)]
pub struct Ip {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub id: u16,
    pub ttl: u8,
    pub dont_fragment: bool,
    pub more_fragments: bool,
    /// In 8-byte units.
    pub offset: u16,
}

impl Ip {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8) -> Self {
        Ip {
            src,
            dst,
            protocol,
            id: 0,
            ttl: 64,
            dont_fragment: true,
            more_fragments: false,
            offset: 0,
        }
    }
}

/// An IPv4 packet around `payload` (cut at 65535 bytes in all).
pub fn ipv4(ip: &Ip, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(65_535 - 20)];
    let total = 20 + payload.len();
    let mut p = Vec::with_capacity(total);
    p.push(0x45);
    p.push(0);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&ip.id.to_be_bytes());
    let frag = (u16::from(ip.dont_fragment) << 14)
        | (u16::from(ip.more_fragments) << 13)
        | (ip.offset & 0x1FFF);
    p.extend_from_slice(&frag.to_be_bytes());
    p.push(ip.ttl);
    p.push(ip.protocol);
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&ip.src.octets());
    p.extend_from_slice(&ip.dst.octets());
    let c = !fold(sum(0, &p));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// Cuts a datagram's payload into IPv4 fragments at the given 8-byte-unit sizes
/// (RFC 791 §3.2); the last fragment takes what is left.
pub fn fragments(ip: &Ip, payload: &[u8], sizes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    for &units in sizes {
        let len = (usize::from(units).max(1)) * 8;
        if at + len >= payload.len() {
            break;
        }
        let f = Ip {
            dont_fragment: false,
            more_fragments: true,
            offset: (at / 8) as u16,
            ..*ip
        };
        out.push(ipv4(&f, &payload[at..at + len]));
        at += len;
    }
    let last = Ip {
        dont_fragment: false,
        more_fragments: false,
        offset: (at / 8) as u16,
        ..*ip
    };
    out.push(ipv4(&last, &payload[at..]));
    out
}
