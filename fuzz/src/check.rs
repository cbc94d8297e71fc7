//! A packet the stack sent, read back with etherparse and checked by hand: the IPv4 header
//! and its checksum, the lengths, and the TCP, UDP or ICMP checksum over what it covers
//! (RFC 791 §3.1, RFC 9293 §3.1, RFC 768, RFC 792). smoltcp wrote the packet; this reader
//! shares no code with it.

use std::net::Ipv4Addr;

use etherparse::{IpNumber, Ipv4Slice, TcpSlice, UdpSlice};

/// What a checked packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    /// A TCP segment: its flags and sequence space, to follow the connection.
    Tcp {
        src_port: u16,
        dst_port: u16,
        seq: u32,
        ack: Option<u32>,
        syn: bool,
        fin: bool,
        rst: bool,
        payload_len: usize,
    },
    Udp {
        src_port: u16,
        dst_port: u16,
        payload_len: usize,
    },
    Icmp {
        kind: u8,
        code: u8,
    },
    /// A fragment of a bigger datagram: its transport header is checked when whole.
    Fragment,
}

/// The 16-bit ones' complement sum of `data` (RFC 1071), not yet complemented.
pub fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

pub fn fold(mut acc: u32) -> u16 {
    while acc > 0xFFFF {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    acc as u16
}

/// A checksum over `data` (which includes the checksum field) is right when the sum is
/// all ones.
fn sums_to_ones(acc: u32) -> bool {
    fold(acc) == 0xFFFF
}

/// The TCP/UDP pseudo-header's sum (RFC 9293 §3.1).
pub fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: usize) -> u32 {
    let mut acc = sum(0, &src.octets());
    acc = sum(acc, &dst.octets());
    acc += u32::from(protocol);
    acc += len as u32;
    acc
}

/// Checks a packet the node at `me` sent on a link of `mtu`. Returns what it carries,
/// or why it is wrong.
pub fn sent(packet: &[u8], me: Ipv4Addr, mtu: usize) -> Result<Carried, String> {
    let ip = Ipv4Slice::from_slice(packet).map_err(|e| format!("not IPv4: {e}"))?;
    let h = ip.header();
    if usize::from(h.total_len()) != packet.len() {
        return Err(format!(
            "IPv4 total length {} but the packet is {} bytes",
            h.total_len(),
            packet.len()
        ));
    }
    if packet.len() > mtu {
        return Err(format!("{} bytes on a link of MTU {mtu}", packet.len()));
    }
    if !sums_to_ones(sum(0, h.slice())) {
        return Err("bad IPv4 header checksum".into());
    }
    if h.source_addr() != me {
        return Err(format!("sent from {}, not from {me}", h.source_addr()));
    }
    if h.ttl() == 0 {
        return Err("TTL 0".into());
    }
    if ip.is_payload_fragmented() {
        return Ok(Carried::Fragment);
    }
    let payload = ip.payload().payload;
    let (src, dst) = (h.source_addr(), h.destination_addr());
    match ip.payload_ip_number() {
        IpNumber::TCP => {
            let tcp = TcpSlice::from_slice(payload).map_err(|e| format!("bad TCP: {e}"))?;
            if !sums_to_ones(sum(pseudo(src, dst, 6, payload.len()), payload)) {
                return Err("bad TCP checksum".into());
            }
            if tcp.syn() && (tcp.rst() || tcp.fin()) {
                return Err("SYN with RST or FIN".into());
            }
            if tcp.rst() && !tcp.payload().is_empty() {
                return Err("RST with data".into());
            }
            Ok(Carried::Tcp {
                src_port: tcp.source_port(),
                dst_port: tcp.destination_port(),
                seq: tcp.sequence_number(),
                ack: tcp.ack().then(|| tcp.acknowledgment_number()),
                syn: tcp.syn(),
                fin: tcp.fin(),
                rst: tcp.rst(),
                payload_len: tcp.payload().len(),
            })
        }
        IpNumber::UDP => {
            let udp = UdpSlice::from_slice(payload).map_err(|e| format!("bad UDP: {e}"))?;
            if usize::from(udp.length()) != payload.len() {
                return Err(format!(
                    "UDP length {} in {} bytes",
                    udp.length(),
                    payload.len()
                ));
            }
            // RFC 768: zero means no checksum was computed.
            if udp.checksum() != 0
                && !sums_to_ones(sum(pseudo(src, dst, 17, payload.len()), payload))
            {
                return Err("bad UDP checksum".into());
            }
            Ok(Carried::Udp {
                src_port: udp.source_port(),
                dst_port: udp.destination_port(),
                payload_len: udp.payload().len(),
            })
        }
        IpNumber::ICMP => {
            if payload.len() < 8 {
                return Err(format!("ICMP message of {} bytes", payload.len()));
            }
            if !sums_to_ones(sum(0, payload)) {
                return Err("bad ICMP checksum".into());
            }
            Ok(Carried::Icmp {
                kind: payload[0],
                code: payload[1],
            })
        }
        other => Err(format!("sent IP protocol {}", other.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_segment_passes_and_a_flipped_bit_does_not() {
        let mut p = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 77, 0, 2], [10, 77, 0, 1], 64)
            .tcp(80, 4000, 1, 1000)
            .syn()
            .write(&mut p, &[])
            .unwrap();
        let me = Ipv4Addr::new(10, 77, 0, 2);
        assert!(matches!(
            sent(&p, me, 1500),
            Ok(Carried::Tcp { syn: true, .. })
        ));
        p[25] ^= 4;
        assert_eq!(sent(&p, me, 1500), Err("bad TCP checksum".into()));
    }
}
