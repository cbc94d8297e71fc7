//! Everything that is not a TCP connection: UDP (the DNS responder and the DNS client),
//! ICMP (smoltcp answers echo requests), and fragments waiting for their datagram.

use std::net::Ipv4Addr;

use etherparse::{Icmpv4Type, IpNumber, Ipv4Slice};
use smoltcp::time::Instant;
use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet};

use super::device::OnePacket;
use super::fragments::Offered;
use super::{Node, append};

impl Node {
    /// A datagram that is not TCP: into the node's other sockets.
    pub(super) fn misc_in(&mut self, now: Instant, packet: &[u8]) {
        // smoltcp drops these without a word: count them, say so, and spare it the work.
        if let Some(unfit) = unfit(packet) {
            match unfit {
                Unfit::Checksum(_) => self.counters.dropped_checksum += 1,
                Unfit::Malformed(_) => self.counters.dropped_malformed += 1,
            }
            self.note_in(format_args!("dropped: {}", unfit.why()));
            return;
        }
        if self.cfg.notes {
            self.describe_misc_in(packet);
        }
        self.unreachable_resolver(packet);
        let mtu = self.cfg.mtu;
        let first_out = self.out.len();
        self.iface.poll_ingress_single(
            now,
            &mut OnePacket::with(packet, &mut self.out, mtu),
            &mut self.misc,
        );
        if self.out.len() > first_out && is_echo_request(packet) {
            self.counters.icmp_echo += 1;
        }
        self.misc_turn_from(now, first_out);
    }

    /// The DNS sockets' turn (a datagram came, or their timer fired).
    pub(super) fn misc_turn(&mut self, now: Instant) {
        let first_out = self.out.len();
        self.misc_turn_from(now, first_out);
    }

    fn misc_turn_from(&mut self, now: Instant, first_out: usize) {
        let mtu = self.cfg.mtu;
        if let Some(resolver) = self.resolver.as_mut() {
            resolver.serve(&mut self.misc, now, &mut self.journal, &mut self.counters);
        }
        while self.iface.poll_egress(
            now,
            &mut OnePacket::empty(&mut self.out, mtu),
            &mut self.misc,
        ) != smoltcp::iface::PollResult::None
        {}
        // After egress: smoltcp's DNS socket gives up while sending its last retry.
        self.poll_lookups(now);
        if self.cfg.notes {
            let dns_port = self.cfg.dns_port;
            for i in first_out..self.out.len() {
                if let Some(out) = self.out.get_mut(i) {
                    describe_out(&out.data, dns_port, &mut out.note);
                }
            }
        }
        self.reassembly.expire(now);
        let next = [
            self.iface.poll_at(now, &self.misc),
            self.reassembly.next_expiry(),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|t| t.max(now + smoltcp::time::Duration::from_micros(100)));
        self.schedule_misc(next);
    }

    /// A fragment: held until its datagram is whole, then handled as one packet.
    pub(super) fn fragment_in(&mut self, now: Instant, packet: &[u8]) {
        let id = u16::from_be_bytes([packet[4], packet[5]]);
        match self.reassembly.offer(now, packet) {
            Offered::Held { fragments, offset } => {
                self.note_in(format_args!(
                    "IPv4 fragment (id {id}, offset {offset}): held until the datagram is whole ({fragments} so far)"
                ));
                let next = self.reassembly.next_expiry();
                self.schedule_misc(next);
            }
            Offered::Duplicate { offset } => {
                self.note_in(format_args!(
                    "IPv4 fragment (id {id}, offset {offset}): a duplicate of bytes already here, ignored as Linux does; the datagram waits on"
                ));
            }
            Offered::Complete { fragments, bytes } => {
                self.counters.fragments_reassembled += 1;
                self.note_in(format_args!(
                    "IPv4 fragment (id {id}): completes a datagram of {bytes} B from {fragments} fragments"
                ));
                // Lent out and given back, so the buffer serves the next datagram too.
                let whole = self.reassembly.take_datagram();
                self.dispatch(now, &whole);
                self.reassembly.restore(whole);
            }
            Offered::Dropped(why) => {
                self.counters.dropped_malformed += 1;
                self.note_in(format_args!("IPv4 fragment dropped: {why}"));
            }
            Offered::Discarded { why, fragments } => {
                self.counters.dropped_malformed += 1;
                let s = if fragments == 1 { "" } else { "s" };
                self.note_in(format_args!(
                    "IPv4 fragment {why} (id {id}, {fragments} earlier fragment{s} given up)"
                ));
            }
        }
    }

    /// Whether one of the node's datagram sockets (the DNS responder's, a lookup's, an
    /// application's) is bound to `port`. The set holds a handful, not one per connection.
    pub(super) fn udp_port_held(&self, port: u16) -> bool {
        self.misc.iter().any(|(_, s)| match s {
            smoltcp::socket::Socket::Udp(u) => u.endpoint().port == port,
            _ => false,
        })
    }

    fn describe_misc_in(&mut self, packet: &[u8]) {
        let Ok(ip) = Ipv4Slice::from_slice(packet) else {
            return;
        };
        let payload = ip.payload().payload;
        match ip.payload_ip_number() {
            IpNumber::UDP => {
                let Ok(udp) = etherparse::UdpSlice::from_slice(payload) else {
                    append(&mut self.in_note, format_args!("malformed UDP"));
                    return;
                };
                if Some(udp.destination_port()) == self.cfg.dns_port || udp.source_port() == 53 {
                    let text = crate::dns::describe(udp.payload());
                    append(&mut self.in_note, format_args!("{text}"));
                } else if self.udp_port_held(udp.destination_port()) {
                    append(
                        &mut self.in_note,
                        format_args!(
                            "UDP to port {}, {} B, for a socket of ours",
                            udp.destination_port(),
                            udp.payload().len()
                        ),
                    );
                } else {
                    append(
                        &mut self.in_note,
                        format_args!(
                            "UDP to port {}: nothing listens (ICMP port unreachable)",
                            udp.destination_port()
                        ),
                    );
                }
            }
            IpNumber::ICMP => {
                if let Ok(icmp) = etherparse::Icmpv4Slice::from_slice(payload) {
                    let text = icmp_text(icmp.icmp_type());
                    append(&mut self.in_note, format_args!("{text}"));
                }
            }
            other => append(
                &mut self.in_note,
                format_args!("IP protocol {}: not spoken here", other.0),
            ),
        }
    }

    /// An ICMP port unreachable quoting our DNS query: the resolver is not there, and the
    /// lookup fails now rather than after its retries (RFC 1122 §4.1.3.3).
    fn unreachable_resolver(&mut self, packet: &[u8]) {
        let Some(server) = self.lookups.as_ref().map(|l| l.server()) else {
            return;
        };
        let Some(quoted) = port_unreachable_quote(packet) else {
            return;
        };
        if quoted == (server, 53) {
            self.fail_lookups(super::LookupError::Unreachable(server));
        }
    }
}

/// Why smoltcp will drop a datagram for the node's other sockets before any of them sees
/// it (it says nothing and counts nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unfit {
    Checksum(&'static str),
    Malformed(&'static str),
}

impl Unfit {
    fn why(self) -> &'static str {
        match self {
            Unfit::Checksum(why) | Unfit::Malformed(why) => why,
        }
    }
}

/// Checks what smoltcp will check (the node keeps its default checksum capabilities,
/// every checksum verified on receipt) with smoltcp's own code, so that the count is
/// exactly what it drops.
fn unfit(packet: &[u8]) -> Option<Unfit> {
    // The node let through only IPv4 with a whole header and a right header checksum
    // (reassembled datagrams carry a fresh one).
    let ip = Ipv4Packet::new_checked(packet).ok()?;
    let (src, dst) = (
        IpAddress::Ipv4(ip.src_addr()),
        IpAddress::Ipv4(ip.dst_addr()),
    );
    match ip.next_header() {
        IpProtocol::Udp => {
            let Ok(udp) = smoltcp::wire::UdpPacket::new_checked(ip.payload()) else {
                return Some(Unfit::Malformed(
                    "malformed UDP (shorter than its length says)",
                ));
            };
            // RFC 768: the checksum covers a pseudo header, the UDP header and the data;
            // an all-zero field means the sender computed none, which smoltcp accepts.
            (!udp.verify_checksum(&src, &dst)).then_some(Unfit::Checksum("bad UDP checksum"))
        }
        IpProtocol::Icmp => {
            let Ok(icmp) = smoltcp::wire::Icmpv4Packet::new_checked(ip.payload()) else {
                return Some(Unfit::Malformed("malformed ICMP (shorter than its header)"));
            };
            // RFC 792: the checksum covers the whole ICMP message.
            (!icmp.verify_checksum()).then_some(Unfit::Checksum("bad ICMP checksum"))
        }
        _ => None,
    }
}

fn is_echo_request(packet: &[u8]) -> bool {
    Ipv4Slice::from_slice(packet).is_ok_and(|ip| {
        ip.payload_ip_number() == IpNumber::ICMP
            && etherparse::Icmpv4Slice::from_slice(ip.payload().payload)
                .is_ok_and(|i| matches!(i.icmp_type(), Icmpv4Type::EchoRequest(_)))
    })
}

/// The destination (address, UDP port) an ICMP port-unreachable message quotes.
fn port_unreachable_quote(packet: &[u8]) -> Option<(Ipv4Addr, u16)> {
    let ip = Ipv4Slice::from_slice(packet).ok()?;
    if ip.payload_ip_number() != IpNumber::ICMP {
        return None;
    }
    let icmp = etherparse::Icmpv4Slice::from_slice(ip.payload().payload).ok()?;
    let Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port) =
        icmp.icmp_type()
    else {
        return None;
    };
    let quoted = icmp.payload();
    let inner = etherparse::Ipv4HeaderSlice::from_slice(quoted).ok()?;
    if inner.protocol() != IpNumber::UDP {
        return None;
    }
    let udp = quoted.get(inner.slice().len()..inner.slice().len() + 4)?;
    Some((
        inner.destination_addr(),
        u16::from_be_bytes([udp[2], udp[3]]),
    ))
}

fn icmp_text(t: Icmpv4Type) -> String {
    match t {
        Icmpv4Type::EchoRequest(e) => format!("ping: echo request, id {}, seq {}", e.id, e.seq),
        Icmpv4Type::EchoReply(e) => format!("ping: echo reply, id {}, seq {}", e.id, e.seq),
        Icmpv4Type::DestinationUnreachable(d) => format!("ICMP destination unreachable: {d:?}"),
        Icmpv4Type::TimeExceeded(_) => "ICMP time exceeded".into(),
        other => format!("ICMP {other:?}"),
    }
}

/// Words for a datagram the node's other sockets sent.
fn describe_out(packet: &[u8], dns_port: Option<u16>, note: &mut String) {
    let Ok(ip) = Ipv4Slice::from_slice(packet) else {
        return;
    };
    let payload = ip.payload().payload;
    match ip.payload_ip_number() {
        IpNumber::UDP => {
            if let Ok(udp) = etherparse::UdpSlice::from_slice(payload)
                && (Some(udp.source_port()) == dns_port || udp.destination_port() == 53)
            {
                let text = crate::dns::describe(udp.payload());
                append(note, format_args!("{text}"));
            }
        }
        IpNumber::ICMP => {
            if let Ok(icmp) = etherparse::Icmpv4Slice::from_slice(payload) {
                let text = icmp_text(icmp.icmp_type());
                append(note, format_args!("{text}"));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use etherparse::PacketBuilder;

    use crate::clock::VIRTUAL_EPOCH;
    use crate::journey::Journal;
    use crate::node::{Config, Node};

    fn node() -> Node {
        let cfg = Config {
            dns_port: Some(53),
            seed: 7,
            ..Config::default()
        };
        let app = crate::app::App::default();
        Node::new(cfg, app, Journal::keeping("server"), VIRTUAL_EPOCH).unwrap()
    }

    /// A DNS query for synack.test (A), from 10.77.0.1:40000, with its UDP checksum.
    fn dns_query() -> Vec<u8> {
        let mut q = Vec::new();
        for w in [0x1234u16, 0x0100, 1, 0, 0, 0] {
            q.extend_from_slice(&w.to_be_bytes());
        }
        for label in ["synack", "test"] {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        let mut out = Vec::new();
        PacketBuilder::ipv4([10, 77, 0, 1], [10, 77, 0, 2], 64)
            .udp(40000, 53)
            .write(&mut out, &q)
            .unwrap();
        out
    }

    /// Hands `packet` to the node: its note, and how many packets it sent back.
    fn send(node: &mut Node, packet: &[u8]) -> (String, usize) {
        node.handle_packet(VIRTUAL_EPOCH, packet);
        let note = node.inbound_note().to_owned();
        let mut sent = 0;
        while let Some(out) = node.next_transmit() {
            sent += 1;
            node.recycle(out);
        }
        (note, sent)
    }

    #[test]
    fn a_udp_datagram_with_a_bad_checksum_is_said_dropped_and_counted() {
        let mut n = node();
        let good = dns_query();
        // A bit flipped in the question's type on the way: the checksum no longer holds.
        let mut bad = good.clone();
        let last = bad.len() - 3;
        bad[last] ^= 0x04;
        let (note, sent) = send(&mut n, &bad);
        assert_eq!(note, "dropped: bad UDP checksum");
        assert_eq!(sent, 0, "smoltcp drops it: no answer");
        let c = n.counters();
        assert_eq!((c.dropped_checksum, c.dns_answered), (1, 0));
        // The same query intact is a query, answered.
        let (note, sent) = send(&mut n, &good);
        assert!(
            note.starts_with("DNS query 0x1234: A synack.test"),
            "{note}"
        );
        assert_eq!(sent, 1);
        assert_eq!(n.counters().dropped_checksum, 1);
        // RFC 768: an all-zero checksum is "none computed", and fine over IPv4.
        let mut none = bad;
        none[26..28].copy_from_slice(&[0, 0]);
        let (note, sent) = send(&mut n, &none);
        assert!(note.starts_with("DNS query 0x1234"), "{note}");
        assert_eq!(sent, 1);
        assert_eq!(n.counters().dropped_checksum, 1);
    }

    #[test]
    fn a_ping_with_a_bad_checksum_is_said_dropped_and_counted() {
        let mut n = node();
        let mut ping = Vec::new();
        PacketBuilder::ipv4([10, 77, 0, 1], [10, 77, 0, 2], 64)
            .icmpv4_echo_request(9, 1)
            .write(&mut ping, &[0xab; 56])
            .unwrap();
        let mut bad = ping.clone();
        bad[40] ^= 0x10;
        assert_eq!(send(&mut n, &bad), ("dropped: bad ICMP checksum".into(), 0));
        assert_eq!(n.counters().dropped_checksum, 1);
        let (note, sent) = send(&mut n, &ping);
        assert!(note.contains("echo request, id 9, seq 1"), "{note}");
        assert_eq!((sent, n.counters().icmp_echo), (1, 1));
    }

    #[test]
    fn an_overlapping_fragment_is_said_to_drop_its_datagram() {
        let mut n = node();
        let fragment = |offset: u16, more: bool, data: &[u8]| {
            let mut p = Vec::new();
            PacketBuilder::ipv4([10, 77, 0, 1], [10, 77, 0, 2], 64)
                .write(&mut p, etherparse::IpNumber::UDP, data)
                .unwrap();
            let fo = (offset / 8) | if more { 0x2000 } else { 0 };
            p[6..8].copy_from_slice(&fo.to_be_bytes());
            p[10..12].copy_from_slice(&[0, 0]);
            let sum = etherparse::checksum::Sum16BitWords::new()
                .add_slice(&p[..20])
                .ones_complement()
                .to_be();
            p[10..12].copy_from_slice(&sum.to_be_bytes());
            p
        };
        let (note, _) = send(&mut n, &fragment(0, true, &[1; 16]));
        assert!(note.contains("held until the datagram is whole"), "{note}");
        let (note, _) = send(&mut n, &fragment(0, true, &[1; 16]));
        assert!(
            note.contains("a duplicate of bytes already here, ignored"),
            "{note}"
        );
        let (note, sent) = send(&mut n, &fragment(8, false, &[2; 16]));
        assert!(
            note.starts_with(
                "IPv4 fragment overlaps an earlier one: the datagram is dropped, as Linux does"
            ),
            "{note}"
        );
        assert!(
            note.ends_with("(id 0, 1 earlier fragment given up)"),
            "{note}"
        );
        assert_eq!(sent, 0);
        let c = n.counters();
        assert_eq!((c.dropped_malformed, c.fragments_reassembled), (1, 0));
    }
}
