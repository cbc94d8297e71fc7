//! What the node writes itself, in front of smoltcp: resets for closed ports, ACKs from
//! TIME-WAIT and challenge ACKs, and the TCP checksum check before a SYN costs anything.
//!
//! Built with smoltcp's wire types (they are the node's own representation); the
//! observer that comments and checks the result reads it back with etherparse.

use std::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

use crate::observe::Segment;

/// The TTL of segments we build (Linux's default `ip_default_ttl`).
const TTL: u8 = 64;

/// A segment with no payload: a RST, a bare ACK, or (with `syn`) a SYN-ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bare {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub seq: u32,
    /// `Some` sets the ACK flag.
    pub ack: Option<u32>,
    pub rst: bool,
    pub window: u16,
    /// A SYN, with these options.
    pub syn: Option<SynOptions>,
}

/// The options of a SYN-ACK we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynOptions {
    pub mss: u16,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
}

impl Bare {
    /// Writes the IPv4 packet into `out` (cleared first).
    pub fn emit(&self, out: &mut Vec<u8>) {
        let tcp = TcpRepr {
            src_port: self.src.port(),
            dst_port: self.dst.port(),
            control: match (self.rst, self.syn) {
                (true, _) => TcpControl::Rst,
                (false, Some(_)) => TcpControl::Syn,
                (false, None) => TcpControl::None,
            },
            seq_number: TcpSeqNumber(self.seq as i32),
            ack_number: self.ack.map(|a| TcpSeqNumber(a as i32)),
            window_len: self.window,
            window_scale: self.syn.and_then(|o| o.window_scale),
            max_seg_size: self.syn.map(|o| o.mss),
            sack_permitted: self.syn.is_some_and(|o| o.sack_permitted),
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        let ip = Ipv4Repr {
            src_addr: *self.src.ip(),
            dst_addr: *self.dst.ip(),
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: TTL,
        };
        out.clear();
        out.resize(ip.buffer_len() + tcp.buffer_len(), 0);
        let caps = ChecksumCapabilities::default();
        let mut packet = Ipv4Packet::new_unchecked(&mut out[..]);
        ip.emit(&mut packet, &caps);
        // RFC 6864 §4.1: an atomic datagram (DF set) may carry ID 0, as Linux's do.
        packet.set_dont_frag(true);
        packet.set_ident(0);
        packet.fill_checksum();
        let mut segment = TcpPacket::new_unchecked(packet.payload_mut());
        tcp.emit(
            &mut segment,
            &IpAddress::Ipv4(*self.src.ip()),
            &IpAddress::Ipv4(*self.dst.ip()),
            &caps,
        );
    }
}

/// The answer of a port with nothing behind it (RFC 9293 §3.10.7.1): to a segment with
/// ACK, `<SEQ=SEG.ACK><CTL=RST>`; to one without, `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`,
/// where SEG.LEN counts SYN and FIN. A RST is never answered.
pub fn reset_for(seg: &Segment) -> Option<Bare> {
    if seg.rst {
        return None;
    }
    let (seq, ack) = if seg.ack_flag {
        (seg.ack, None)
    } else {
        (0, Some(seg.seq.wrapping_add(seg.seq_len())))
    };
    Some(Bare {
        src: seg.dst,
        dst: seg.src,
        seq,
        ack,
        rst: true,
        window: 0,
        syn: None,
    })
}

/// Whether the TCP checksum of `packet` (an IPv4 packet carrying TCP, already parsed as
/// `seg`) is right. Checked before a SYN allocates anything: a corrupted SYN must not
/// take a place in the SYN queue.
pub fn tcp_checksum_ok(packet: &[u8]) -> bool {
    let Ok(ip) = Ipv4Packet::new_checked(packet) else {
        return false;
    };
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
        return false;
    };
    tcp.verify_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst))
}

/// Copies `packet` (an IPv4 packet carrying TCP, checksums already verified) into `out`
/// without its FIN flag, checksum made right again.
pub fn without_fin(packet: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(packet);
    let mut ip = Ipv4Packet::new_unchecked(&mut out[..]);
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let mut tcp = TcpPacket::new_unchecked(ip.payload_mut());
    tcp.set_fin(false);
    tcp.fill_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst));
}

/// Cuts the payload of `packet` (an IPv4 packet carrying TCP, as smoltcp wrote it) to
/// its first `keep` bytes; a FIN goes with the bytes cut off. Lengths and checksums are
/// made right again.
pub fn trim_payload(packet: &mut Vec<u8>, keep: usize) {
    let Ok(ip) = Ipv4Packet::new_checked(&packet[..]) else {
        return;
    };
    let ip_len = usize::from(ip.header_len());
    let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
        return;
    };
    let end = ip_len + usize::from(tcp.header_len()) + keep;
    if end >= packet.len() {
        return;
    }
    packet.truncate(end);
    let mut ip = Ipv4Packet::new_unchecked(&mut packet[..]);
    ip.set_total_len(end as u16);
    ip.fill_checksum();
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let mut tcp = TcpPacket::new_unchecked(ip.payload_mut());
    tcp.set_fin(false);
    tcp.fill_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst));
}

/// Why an IPv4 packet is not taken, in the words its capture comment uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpRefused {
    Malformed(Malformed),
    Checksum,
    NotForUs(Ipv4Addr),
    Martian(Ipv4Addr, &'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    Short(usize),
    Version(u8),
    HeaderLength(usize, usize),
    TotalLength(usize, usize),
}

impl std::fmt::Display for IpRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            IpRefused::Malformed(Malformed::Short(n)) => {
                write!(f, "{n} B, shorter than an IPv4 header")
            }
            IpRefused::Malformed(Malformed::Version(v)) => write!(f, "IP version {v}, not 4"),
            IpRefused::Malformed(Malformed::HeaderLength(h, n)) => {
                write!(f, "IPv4 header length {h} B in a packet of {n} B")
            }
            IpRefused::Malformed(Malformed::TotalLength(t, n)) => {
                write!(f, "IPv4 total length {t} B but {n} B came")
            }
            IpRefused::Checksum => write!(f, "bad IPv4 header checksum"),
            IpRefused::NotForUs(dst) => write!(f, "addressed to {dst}, not to us"),
            IpRefused::Martian(src, what) => {
                write!(f, "martian source {src} ({what}, RFC 1812 §5.3.7)")
            }
        }
    }
}

/// Checks an IPv4 packet's header (RFC 791) and destination; returns its source and
/// destination. The node checks the header checksum itself (smoltcp is told not to), so
/// that a corrupted packet is counted and said, not dropped without a word.
pub fn ipv4_admit(packet: &[u8], us: Ipv4Addr) -> Result<(Ipv4Addr, Ipv4Addr), IpRefused> {
    use IpRefused::Malformed as M;
    if packet.len() < 20 {
        return Err(M(Malformed::Short(packet.len())));
    }
    if packet[0] >> 4 != 4 {
        return Err(M(Malformed::Version(packet[0] >> 4)));
    }
    let header = usize::from(packet[0] & 0x0f) * 4;
    if header < 20 || header > packet.len() {
        return Err(M(Malformed::HeaderLength(header, packet.len())));
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if total < header || total > packet.len() {
        return Err(M(Malformed::TotalLength(total, packet.len())));
    }
    let ip = Ipv4Packet::new_unchecked(packet);
    if !ip.verify_checksum() {
        return Err(IpRefused::Checksum);
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    if dst != us {
        return Err(IpRefused::NotForUs(dst));
    }
    Ok((src, dst))
}

/// Whether `src` can be a peer's address, as Linux's martian filter has it: not ours
/// (a LAND attack), not unspecified, loopback, multicast or broadcast, and not our
/// subnet's network or broadcast address.
pub fn martian_source(src: Ipv4Addr, us: Ipv4Addr, prefix: u8) -> Result<(), IpRefused> {
    let what = if src == us {
        "our own address"
    } else if src.is_unspecified() {
        "unspecified"
    } else if src.is_loopback() {
        "loopback"
    } else if src.is_multicast() {
        "multicast"
    } else if src.is_broadcast() {
        "broadcast"
    } else if prefix <= 30 && {
        let mask = u32::MAX << (32 - u32::from(prefix.max(1)));
        let (s, net) = (u32::from(src), u32::from(us) & mask);
        s == net || s == net | !mask
    } {
        "our subnet's network or broadcast address"
    } else {
        return Ok(());
    };
    Err(IpRefused::Martian(src, what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(flags: &str, seq: u32, ack: u32, len: u32) -> Segment {
        Segment {
            src: "10.77.0.1:40000".parse().unwrap(),
            dst: "10.77.0.2:81".parse().unwrap(),
            seq,
            ack,
            syn: flags.contains('S'),
            ack_flag: flags.contains('.'),
            fin: flags.contains('F'),
            rst: flags.contains('R'),
            psh: flags.contains('P'),
            window: 100,
            payload_len: len,
            options: Default::default(),
        }
    }

    #[test]
    fn closed_ports_answer_as_rfc_9293_says() {
        // With ACK: <SEQ=SEG.ACK><CTL=RST>.
        let r = reset_for(&seg(".", 5, 77, 10)).unwrap();
        assert_eq!((r.seq, r.ack, r.rst), (77, None, true));
        // Without: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>; SYN and FIN count one each.
        for (flags, len, ack) in [("S", 0, 101), ("", 0, 100), ("FPU", 0, 101), ("SF", 5, 107)] {
            let r = reset_for(&seg(flags, 100, 0, len)).unwrap();
            assert_eq!((r.seq, r.ack), (0, Some(ack)), "{flags:?}");
        }
        assert_eq!(
            reset_for(&seg("R", 1, 0, 0)),
            None,
            "a RST is never answered"
        );
    }

    #[test]
    fn built_segments_read_back_with_the_independent_parser() {
        let bare = Bare {
            src: "10.77.0.2:80".parse().unwrap(),
            dst: "10.77.0.1:40000".parse().unwrap(),
            seq: 1234,
            ack: Some(5678),
            rst: true,
            window: 0,
            syn: None,
        };
        let mut out = Vec::new();
        bare.emit(&mut out);
        assert!(tcp_checksum_ok(&out));
        let s = Segment::parse(&out).unwrap();
        assert_eq!((s.src, s.dst), (bare.src, bare.dst));
        assert_eq!(
            (s.seq, s.ack, s.rst, s.ack_flag, s.syn),
            (1234, 5678, true, true, false)
        );
        out[30] ^= 1;
        assert!(!tcp_checksum_ok(&out), "a flipped bit is caught");
    }
}
