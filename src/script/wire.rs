//! IPv4 packets as the script writes and reads them: TCP, UDP and ICMP, built with their
//! checksums and read back into plain fields. Written here rather than borrowed from the
//! stack so that the script checks the stack with a parser of its own.

use std::net::Ipv4Addr;

use super::ast::TcpOpt;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
/// Default TTL of injected packets (Linux's default, RFC 1700's 64).
const TTL: u8 = 64;

/// A packet read off the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ip_header_len: usize,
    pub total_len: usize,
    pub body: SeenBody,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SeenBody {
    Tcp(SeenTcp),
    Udp {
        sport: u16,
        dport: u16,
        payload_len: usize,
    },
    Icmp {
        icmp_type: u8,
        code: u8,
    },
    Other(u8),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SeenTcp {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// The reserved bits (between the data offset and the flags, RFC 9293 §3.1).
    pub reserved: u8,
    pub win: u16,
    pub urg: u16,
    /// The header length in 32-bit words.
    pub data_offset: u8,
    pub options: Vec<TcpOpt>,
    /// Options of kinds the script's language has no words for: (kind, length).
    pub unknown_options: Vec<(u8, u8)>,
    pub payload_len: usize,
    pub payload_zero: bool,
}

/// Reads an IPv4 packet; `None` if it is not one (IPv6, truncated, ...).
pub fn parse(b: &[u8]) -> Option<Seen> {
    if b.len() < 20 || b[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(b[0] & 0x0F) * 4;
    let total = usize::from(u16::from_be_bytes([b[2], b[3]]));
    if ihl < 20 || total < ihl || b.len() < ihl {
        return None;
    }
    // A GSO super-segment from the TUN may say 0 or less than its size; trust the buffer.
    let end = if total == 0 || total > b.len() {
        b.len()
    } else {
        total
    };
    let src = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
    let dst = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
    let l4 = &b[ihl..end];
    let body = match b[9] {
        PROTO_TCP if l4.len() >= 20 => {
            let off = usize::from(l4[12] >> 4) * 4;
            if off < 20 || off > l4.len() {
                return None;
            }
            let (options, unknown_options) = parse_options(&l4[20..off]);
            let payload = &l4[off..];
            SeenBody::Tcp(SeenTcp {
                sport: u16::from_be_bytes([l4[0], l4[1]]),
                dport: u16::from_be_bytes([l4[2], l4[3]]),
                seq: u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]),
                ack: u32::from_be_bytes([l4[8], l4[9], l4[10], l4[11]]),
                data_offset: l4[12] >> 4,
                reserved: l4[12] & 0x0F,
                flags: l4[13],
                win: u16::from_be_bytes([l4[14], l4[15]]),
                urg: u16::from_be_bytes([l4[18], l4[19]]),
                options,
                unknown_options,
                payload_len: payload.len(),
                payload_zero: payload.iter().all(|&x| x == 0),
            })
        }
        PROTO_UDP if l4.len() >= 8 => SeenBody::Udp {
            sport: u16::from_be_bytes([l4[0], l4[1]]),
            dport: u16::from_be_bytes([l4[2], l4[3]]),
            payload_len: l4.len() - 8,
        },
        PROTO_ICMP if l4.len() >= 4 => SeenBody::Icmp {
            icmp_type: l4[0],
            code: l4[1],
        },
        p => SeenBody::Other(p),
    };
    Some(Seen {
        src,
        dst,
        ip_header_len: ihl,
        total_len: end,
        body,
    })
}

fn parse_options(mut o: &[u8]) -> (Vec<TcpOpt>, Vec<(u8, u8)>) {
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    while let Some(&kind) = o.first() {
        match kind {
            0 => {
                out.push(TcpOpt::Eol);
                // RFC 9293 §3.1: the end of the list; what follows is padding.
                break;
            }
            1 => {
                out.push(TcpOpt::Nop);
                o = &o[1..];
                continue;
            }
            _ => {}
        }
        let Some(&len) = o.get(1) else { break };
        let len = usize::from(len);
        if len < 2 || len > o.len() {
            break;
        }
        let d = &o[2..len];
        match (kind, len) {
            (2, 4) => out.push(TcpOpt::Mss(u16::from_be_bytes([d[0], d[1]]))),
            (3, 3) => out.push(TcpOpt::WScale(d[0])),
            (4, 2) => out.push(TcpOpt::SackOk),
            (5, _) if (len - 2) % 8 == 0 => out.push(TcpOpt::Sack(
                d.chunks_exact(8)
                    .map(|c| {
                        (
                            u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                            u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
                        )
                    })
                    .collect(),
            )),
            (8, 10) => out.push(TcpOpt::Timestamp {
                val: u32::from_be_bytes([d[0], d[1], d[2], d[3]]),
                ecr: u32::from_be_bytes([d[4], d[5], d[6], d[7]]),
            }),
            _ => unknown.push((kind, len as u8)),
        }
        o = &o[len..];
    }
    (out, unknown)
}

pub fn encode_options(options: &[TcpOpt]) -> Vec<u8> {
    let mut o = Vec::new();
    for opt in options {
        match opt {
            TcpOpt::Eol => o.push(0),
            TcpOpt::Nop => o.push(1),
            TcpOpt::Mss(m) => o.extend([2, 4, (m >> 8) as u8, *m as u8]),
            TcpOpt::WScale(s) => o.extend([3, 3, *s]),
            TcpOpt::SackOk => o.extend([4, 2]),
            TcpOpt::Sack(blocks) => {
                o.extend([5, (2 + 8 * blocks.len()) as u8]);
                for (l, r) in blocks {
                    o.extend(l.to_be_bytes());
                    o.extend(r.to_be_bytes());
                }
            }
            TcpOpt::Timestamp { val, ecr } => {
                o.extend([8, 10]);
                o.extend(val.to_be_bytes());
                o.extend(ecr.to_be_bytes());
            }
        }
    }
    // The header is whole 32-bit words; pad with end-of-list (RFC 9293 §3.1).
    while o.len() % 4 != 0 {
        o.push(0);
    }
    o
}

/// The fields of a TCP segment to build.
#[derive(Debug, Clone)]
pub struct TcpOut<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub win: u16,
    pub urg: u16,
    pub options: &'a [TcpOpt],
    /// Zero bytes of payload, as packetdrill sends.
    pub payload_len: usize,
}

pub fn build_tcp(t: &TcpOut<'_>) -> Vec<u8> {
    let opts = encode_options(t.options);
    let tcp_len = 20 + opts.len() + t.payload_len;
    let mut p = ipv4_header(t.src, t.dst, PROTO_TCP, tcp_len);
    let h = p.len();
    p.extend(t.sport.to_be_bytes());
    p.extend(t.dport.to_be_bytes());
    p.extend(t.seq.to_be_bytes());
    p.extend(t.ack.to_be_bytes());
    p.push((((20 + opts.len()) / 4) as u8) << 4);
    p.push(t.flags);
    p.extend(t.win.to_be_bytes());
    p.extend([0, 0]);
    p.extend(t.urg.to_be_bytes());
    p.extend(&opts);
    p.resize(h + tcp_len, 0);
    let sum = l4_checksum(t.src, t.dst, PROTO_TCP, &p[h..]);
    p[h + 16..h + 18].copy_from_slice(&sum.to_be_bytes());
    p
}

pub fn build_udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, len: usize) -> Vec<u8> {
    let mut p = ipv4_header(src, dst, PROTO_UDP, 8 + len);
    let h = p.len();
    p.extend(sport.to_be_bytes());
    p.extend(dport.to_be_bytes());
    p.extend(((8 + len) as u16).to_be_bytes());
    p.extend([0, 0]);
    p.resize(h + 8 + len, 0);
    let mut sum = l4_checksum(src, dst, PROTO_UDP, &p[h..]);
    if sum == 0 {
        // RFC 768: a computed zero is sent as all ones.
        sum = 0xFFFF;
    }
    p[h + 6..h + 8].copy_from_slice(&sum.to_be_bytes());
    p
}

/// An ICMP error quoting `quoted` (an IP header and the first 8 bytes after it, RFC 792).
pub fn build_icmp(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    icmp_type: u8,
    code: u8,
    mtu: Option<u16>,
    quoted: &[u8],
) -> Vec<u8> {
    let mut p = ipv4_header(src, dst, PROTO_ICMP, 8 + quoted.len());
    let h = p.len();
    p.extend([icmp_type, code, 0, 0, 0, 0]);
    // RFC 1191 §4: "fragmentation needed" carries the next-hop MTU in the low half.
    p.extend(mtu.unwrap_or(0).to_be_bytes());
    p.extend(quoted);
    let sum = fold(sum_bytes(0, &p[h..]));
    p[h + 2..h + 4].copy_from_slice(&sum.to_be_bytes());
    p
}

fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4_len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(20 + l4_len);
    p.extend([0x45, 0]);
    p.extend(((20 + l4_len) as u16).to_be_bytes());
    // Identification 0 with Don't Fragment, as Linux sends small segments.
    p.extend([0, 0, 0x40, 0, TTL, proto, 0, 0]);
    p.extend(src.octets());
    p.extend(dst.octets());
    let sum = fold(sum_bytes(0, &p));
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p
}

fn sum_bytes(mut acc: u32, b: &[u8]) -> u32 {
    let mut chunks = b.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xFFFF {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    !(acc as u16)
}

/// The TCP or UDP checksum over the pseudo-header and `seg` (RFC 9293 §3.1).
fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, seg: &[u8]) -> u16 {
    let mut acc = sum_bytes(0, &src.octets());
    acc = sum_bytes(acc, &dst.octets());
    acc += u32::from(proto) + seg.len() as u32;
    fold(sum_bytes(acc, seg))
}

/// Completes the TCP or UDP checksum of a packet whose sender left it partial (a TUN
/// with checksum offload hands over the pseudo-header sum only), so that captures show a
/// packet that Wireshark accepts.
pub fn complete_checksum(p: &mut [u8]) {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return;
    }
    let ihl = usize::from(p[0] & 0x0F) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    let end = if total >= ihl && total <= p.len() && total != 0 {
        total
    } else {
        p.len()
    };
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let proto = p[9];
    let at = match proto {
        PROTO_TCP => 16,
        PROTO_UDP => 6,
        _ => return,
    };
    if end < ihl + at + 2 {
        return;
    }
    p[ihl + at..ihl + at + 2].copy_from_slice(&[0, 0]);
    let mut sum = l4_checksum(src, dst, proto, &p[ihl..end]);
    if proto == PROTO_UDP && sum == 0 {
        sum = 0xFFFF;
    }
    p[ihl + at..ihl + at + 2].copy_from_slice(&sum.to_be_bytes());
}

/// Whether the IPv4 header checksum is right.
pub fn ip_checksum_ok(p: &[u8]) -> bool {
    let ihl = usize::from(p[0] & 0x0F) * 4;
    p.len() >= ihl && fold(sum_bytes(0, &p[..ihl])) == 0
}

/// Cuts a TCP super-segment (TSO/GSO) into the segments of at most `mss` bytes that a
/// NIC would put on the wire, as the kernel's own GSO does: the sequence number and IP
/// identification advance, FIN and PSH stay on the last piece, CWR on the first, and
/// every piece gets its checksums. Anything else comes back whole.
pub fn split_tso(p: &[u8], mss: usize) -> Vec<Vec<u8>> {
    let whole = || vec![p.to_vec()];
    if mss == 0 || p.len() < 40 || p[0] >> 4 != 4 || p[9] != PROTO_TCP {
        return whole();
    }
    let ihl = usize::from(p[0] & 0x0F) * 4;
    if p.len() < ihl + 20 {
        return whole();
    }
    let doff = usize::from(p[ihl + 12] >> 4) * 4;
    let head = ihl + doff;
    if doff < 20 || p.len() <= head + mss {
        return whole();
    }
    let payload = &p[head..];
    let id = u16::from_be_bytes([p[4], p[5]]);
    let seq = u32::from_be_bytes([p[ihl + 4], p[ihl + 5], p[ihl + 6], p[ihl + 7]]);
    let flags = p[ihl + 13];
    let n = payload.len().div_ceil(mss);
    let mut out = Vec::with_capacity(n);
    for (i, chunk) in payload.chunks(mss).enumerate() {
        let mut s = Vec::with_capacity(head + chunk.len());
        s.extend_from_slice(&p[..head]);
        s.extend_from_slice(chunk);
        s[2..4].copy_from_slice(&((head + chunk.len()) as u16).to_be_bytes());
        s[4..6].copy_from_slice(&id.wrapping_add(i as u16).to_be_bytes());
        s[10..12].copy_from_slice(&[0, 0]);
        let sum = fold(sum_bytes(0, &s[..ihl]));
        s[10..12].copy_from_slice(&sum.to_be_bytes());
        let off = (i * mss) as u32;
        s[ihl + 4..ihl + 8].copy_from_slice(&seq.wrapping_add(off).to_be_bytes());
        let mut f = flags;
        if i + 1 < n {
            f &= !(super::ast::flag::FIN | super::ast::flag::PSH);
        }
        if i > 0 {
            f &= !super::ast::flag::CWR;
        }
        s[ihl + 13] = f;
        complete_checksum(&mut s);
        out.push(s);
    }
    out
}
