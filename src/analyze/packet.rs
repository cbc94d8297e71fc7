//! The TCP and UDP headers of a captured IPv4 packet, read with etherparse's lax slices so
//! that a packet cut short by the capture's snap length still gives its headers, and its
//! lengths come from the IP header rather than from the bytes that happen to be there.

use std::net::SocketAddrV4;

use etherparse::{IpNumber, LaxIpv4Slice, TcpHeaderSlice, TcpOptionElement, UdpHeaderSlice};

use crate::observe::{Segment, SynOptions};

/// A TCP segment as captured.
pub struct Tcp<'a> {
    /// Its header fields; `payload_len` is the length on the wire.
    pub seg: Segment,
    /// The start of its payload, as far as it was captured.
    pub payload: &'a [u8],
    /// Fewer bytes were captured than the packet had on the wire.
    pub cut: bool,
}

/// The IP packet's payload (after its header) with the length it had on the wire.
struct Inner<'a> {
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    /// The captured bytes after the IP header.
    bytes: &'a [u8],
    /// Their length on the wire.
    len: usize,
    cut: bool,
}

/// IPv4 carrying `proto`, not a fragment, with at least its header captured.
fn ipv4(ip: &[u8], ip_len: usize, proto: IpNumber) -> Option<Inner<'_>> {
    let (v4, _) = LaxIpv4Slice::from_slice(ip).ok()?;
    let payload = v4.payload();
    if payload.ip_number != proto || payload.fragmented {
        return None;
    }
    let header = v4.header();
    let header_len = usize::from(header.ihl()) * 4;
    let total = usize::from(header.total_len());
    // A total length shorter than the header itself (0 from a NIC doing segmentation
    // offload, captured before it filled it in) says nothing: take the record's length.
    let total = if total >= header_len {
        total
    } else {
        ip_len.max(ip.len())
    };
    Some(Inner {
        src: header.source_addr(),
        dst: header.destination_addr(),
        bytes: payload.payload,
        len: total.saturating_sub(header_len),
        cut: payload.incomplete || ip_len > ip.len(),
    })
}

/// The fixed 20 bytes of a TCP header (RFC 9293 §3.1), for a packet cut inside its
/// options: everything but the options is still known.
fn fixed_header(b: &[u8]) -> Option<(u16, u16, u32, u32, usize, u8, u16)> {
    let b: &[u8; 20] = b.get(..20)?.try_into().ok()?;
    let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let offset = usize::from(b[12] >> 4) * 4;
    (offset >= 20).then_some((
        u16_at(0),
        u16_at(2),
        u32_at(4),
        u32_at(8),
        offset,
        b[13],
        u16_at(14),
    ))
}

/// The TCP segment in `ip` (captured bytes of an IPv4 packet `ip_len` long on the wire).
pub fn tcp(ip: &[u8], ip_len: usize) -> Option<Tcp<'_>> {
    let inner = ipv4(ip, ip_len, IpNumber::TCP)?;
    let mut options = SynOptions::default();
    let (sport, dport, seq, ack, offset, flags, window) =
        match TcpHeaderSlice::from_slice(inner.bytes) {
            Ok(h) => {
                if h.syn() {
                    for option in h.options_iterator().flatten() {
                        match option {
                            TcpOptionElement::MaximumSegmentSize(mss) => options.mss = Some(mss),
                            TcpOptionElement::WindowScale(shift) => {
                                options.window_scale = Some(shift)
                            }
                            TcpOptionElement::SelectiveAcknowledgementPermitted => {
                                options.sack_permitted = true
                            }
                            TcpOptionElement::Timestamp(..) => options.timestamps = true,
                            _ => {}
                        }
                    }
                }
                let s = h.slice();
                (
                    h.source_port(),
                    h.destination_port(),
                    h.sequence_number(),
                    h.acknowledgment_number(),
                    s.len(),
                    s[13],
                    h.window_size(),
                )
            }
            // Cut inside the options (or a data offset past the packet): the fixed part is
            // still there, unless the packet is too short even for that.
            Err(_) if inner.cut => fixed_header(inner.bytes)?,
            Err(_) => return None,
        };
    let seg = Segment {
        src: SocketAddrV4::new(inner.src, sport),
        dst: SocketAddrV4::new(inner.dst, dport),
        seq,
        ack,
        syn: flags & 0x02 != 0,
        ack_flag: flags & 0x10 != 0,
        fin: flags & 0x01 != 0,
        rst: flags & 0x04 != 0,
        psh: flags & 0x08 != 0,
        window,
        payload_len: u32::try_from(inner.len.saturating_sub(offset)).unwrap_or(u32::MAX),
        options,
    };
    Some(Tcp {
        seg,
        payload: inner.bytes.get(offset..).unwrap_or_default(),
        cut: inner.cut,
    })
}

/// A UDP datagram to or from port 53 with at least a DNS header's worth of payload
/// captured: (source, destination, the payload as captured).
pub fn udp53(ip: &[u8], ip_len: usize) -> Option<(SocketAddrV4, SocketAddrV4, &[u8])> {
    let inner = ipv4(ip, ip_len, IpNumber::UDP)?;
    let udp = UdpHeaderSlice::from_slice(inner.bytes).ok()?;
    let payload = inner.bytes.get(8..)?;
    if udp.source_port() != 53 && udp.destination_port() != 53 || payload.len() < 12 {
        return None;
    }
    // The UDP length field bounds the payload when the link padded the frame.
    let end = usize::from(udp.length()).saturating_sub(8).max(12);
    let payload = payload.get(..end).unwrap_or(payload);
    Some((
        SocketAddrV4::new(inner.src, udp.source_port()),
        SocketAddrV4::new(inner.dst, udp.destination_port()),
        payload,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(payload: usize) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1000, 80, 7, 65535)
            .ack(9)
            .psh();
        let mut ip = Vec::new();
        b.write(&mut ip, &vec![b'x'; payload]).unwrap();
        ip
    }

    #[test]
    fn a_whole_packet_reads_as_the_observer_reads_it() {
        let ip = packet(100);
        let t = tcp(&ip, ip.len()).unwrap();
        assert_eq!(Some(t.seg), Segment::parse(&ip));
        assert_eq!(t.payload.len(), 100);
        assert!(!t.cut);
    }

    #[test]
    fn a_cut_packet_keeps_its_length_from_the_ip_header() {
        let ip = packet(1400);
        for keep in [60, 45, 40] {
            let t = tcp(&ip[..keep], ip.len()).unwrap();
            assert_eq!(t.seg.payload_len, 1400, "{keep} bytes captured");
            assert_eq!((t.seg.seq, t.seg.ack, t.seg.window), (7, 9, 65535));
            assert!(t.seg.psh && t.seg.ack_flag && t.cut);
            assert_eq!(t.payload.len(), keep - 40);
        }
        // Less than the fixed TCP header: nothing to read.
        assert!(tcp(&ip[..39], ip.len()).is_none());
        assert!(tcp(&ip[..10], ip.len()).is_none());
    }

    #[test]
    fn a_cut_inside_the_options_still_gives_the_fixed_header() {
        let b = etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1000, 80, 7, 65535)
            .syn()
            .options(&[
                TcpOptionElement::MaximumSegmentSize(1460),
                TcpOptionElement::Timestamp(1, 2),
            ])
            .unwrap();
        let mut ip = Vec::new();
        b.write(&mut ip, &[]).unwrap();
        let t = tcp(&ip[..48], ip.len()).unwrap();
        assert!(t.seg.syn);
        assert_eq!(t.seg.payload_len, 0);
        assert_eq!(t.payload, b"");
        // Whole, its options are read.
        assert_eq!(tcp(&ip, ip.len()).unwrap().seg.options.mss, Some(1460));
    }

    #[test]
    fn nonsense_lengths_never_panic() {
        let mut ip = packet(10);
        // A data offset of 15 words (60 bytes) in a 50-byte packet.
        ip[32] = 0xf0;
        assert!(tcp(&ip, ip.len()).is_none());
        assert!(tcp(&ip, 4000).is_some_and(|t| t.payload.is_empty()));
        // A total length of 0 (segmentation offload): the record's length counts.
        let mut ip = packet(10);
        ip[2..4].copy_from_slice(&[0, 0]);
        assert_eq!(tcp(&ip, ip.len()).unwrap().seg.payload_len, 10);
        assert_eq!(tcp(&[], 0).map(|t| t.cut), None);
    }
}
