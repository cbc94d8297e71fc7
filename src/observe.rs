//! The independent observer: reads IP packets with etherparse (never with smoltcp, which
//! wrote or will read them) and says what each TCP segment is in its connection's life.
//!
//! The capture uses it to comment packets, the stack uses it to learn what smoltcp does not
//! expose (the options of the peer's SYN, our ISN), and tests use the same parser to check
//! the stack's output. Nothing here allocates per packet: the tracker's map grows by one
//! entry per connection and shrinks when the connection ends.

use std::collections::HashMap;
use std::net::SocketAddrV4;

use etherparse::{IpNumber, Ipv4Slice, TcpOptionElement, TcpSlice};

/// Which way a packet crossed the device, seen from synack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From the kernel (the peer) into synack.
    In,
    /// From synack out to the kernel.
    Out,
}

/// A connection's endpoints as seen from synack: `local` is ours, `remote` the peer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FourTuple {
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
}

impl std::fmt::Display for FourTuple {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} <-> {}", self.local, self.remote)
    }
}

/// Options carried by a SYN or SYN-ACK (RFC 9293 §3.2, RFC 7323 §2, RFC 2018 §2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SynOptions {
    pub mss: Option<u16>,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    pub timestamps: bool,
}

/// The TCP header fields of one segment, copied out of the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub seq: u32,
    pub ack: u32,
    pub syn: bool,
    pub ack_flag: bool,
    pub fin: bool,
    pub rst: bool,
    pub psh: bool,
    pub window: u16,
    pub payload_len: u32,
    pub options: SynOptions,
}

impl Segment {
    /// SYN, FIN or RST: a segment that opens or ends a connection.
    pub fn is_control(&self) -> bool {
        self.syn || self.fin || self.rst
    }

    /// Parses an IPv4 packet carrying TCP. Anything else (UDP, ICMP, IPv6, fragments,
    /// truncated or malformed headers) is `None`: the observer only comments what it can read.
    pub fn parse(packet: &[u8]) -> Option<Segment> {
        let ip = Ipv4Slice::from_slice(packet).ok()?;
        if ip.payload_ip_number() != IpNumber::TCP || ip.is_payload_fragmented() {
            return None;
        }
        let header = ip.header();
        let tcp = TcpSlice::from_slice(ip.payload().payload).ok()?;
        let mut options = SynOptions::default();
        if tcp.syn() {
            for option in tcp.options_iterator().flatten() {
                match option {
                    TcpOptionElement::MaximumSegmentSize(mss) => options.mss = Some(mss),
                    TcpOptionElement::WindowScale(shift) => options.window_scale = Some(shift),
                    TcpOptionElement::SelectiveAcknowledgementPermitted => {
                        options.sack_permitted = true
                    }
                    TcpOptionElement::Timestamp(..) => options.timestamps = true,
                    _ => {}
                }
            }
        }
        Some(Segment {
            src: SocketAddrV4::new(header.source_addr(), tcp.source_port()),
            dst: SocketAddrV4::new(header.destination_addr(), tcp.destination_port()),
            seq: tcp.sequence_number(),
            ack: tcp.acknowledgment_number(),
            syn: tcp.syn(),
            ack_flag: tcp.ack(),
            fin: tcp.fin(),
            rst: tcp.rst(),
            psh: tcp.psh(),
            window: tcp.window_size(),
            payload_len: tcp.payload().len() as u32,
            options,
        })
    }

    /// The connection this segment belongs to, from synack's side.
    pub fn tuple(&self, dir: Direction) -> FourTuple {
        match dir {
            Direction::In => FourTuple {
                local: self.dst,
                remote: self.src,
            },
            Direction::Out => FourTuple {
                local: self.src,
                remote: self.dst,
            },
        }
    }

    /// Sequence space the segment occupies: SYN and FIN count one each (RFC 9293 §3.4).
    pub fn seq_len(&self) -> u32 {
        self.payload_len + u32::from(self.syn) + u32::from(self.fin)
    }

    /// A one-line summary like tcpdump's: flags, seq, ack, length, window.
    pub fn flags_text(&self) -> &'static str {
        match (self.syn, self.fin, self.rst, self.ack_flag) {
            (true, _, _, false) => "SYN",
            (true, _, _, true) => "SYN-ACK",
            (_, _, true, true) => "RST-ACK",
            (_, _, true, false) => "RST",
            (_, true, _, _) => "FIN-ACK",
            _ if self.psh => "PSH-ACK",
            _ => "ACK",
        }
    }
}

/// What a segment means in its connection's life, as far as the packets alone tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Handshake 1/3: the active opener's SYN.
    Syn,
    /// Handshake 2/3.
    SynAck,
    /// Handshake 3/3: the ACK of the SYN-ACK.
    HandshakeAck,
    /// A FIN (first transmission or retransmission).
    Fin,
    /// The segment that first acknowledges the other side's FIN.
    AckOfFin,
    /// A FIN that at the same time acknowledges the other side's FIN.
    FinAckOfFin,
    Rst,
    /// Anything else: data and plain ACKs.
    Other,
}

/// One segment, read and classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub dir: Direction,
    pub segment: Segment,
    pub role: Role,
}

impl Observed {
    pub fn tuple(&self) -> FourTuple {
        self.segment.tuple(self.dir)
    }

    /// The packet's own comment: which handshake or teardown step it is. `None` for
    /// data and plain ACKs, which need no comment (and so cost no allocation).
    pub fn describe(&self) -> Option<String> {
        let s = &self.segment;
        let text = match self.role {
            Role::Syn => {
                let mut t = format!("SYN, handshake 1/3, ISN {}", s.seq);
                push_options(&mut t, &s.options, s.window);
                t
            }
            Role::SynAck => {
                let mut t = format!(
                    "SYN-ACK, handshake 2/3, ISN {}, ACK {} (peer ISN+1)",
                    s.seq, s.ack
                );
                push_options(&mut t, &s.options, s.window);
                t
            }
            Role::HandshakeAck => format!("ACK, handshake 3/3, ACK {} (ISN+1)", s.ack),
            Role::Fin => format!("FIN, seq {}", s.seq.wrapping_add(s.payload_len)),
            Role::AckOfFin => format!("ACK of FIN, ACK {}", s.ack),
            Role::FinAckOfFin => format!(
                "FIN, seq {}, also ACK of peer's FIN (ACK {})",
                s.seq.wrapping_add(s.payload_len),
                s.ack
            ),
            Role::Rst => format!("RST, seq {}", s.seq),
            Role::Other => return None,
        };
        Some(text)
    }
}

fn push_options(text: &mut String, options: &SynOptions, window: u16) {
    use std::fmt::Write;
    let _ = write!(text, ", window {window}");
    if let Some(mss) = options.mss {
        let _ = write!(text, ", MSS {mss}");
    }
    if let Some(ws) = options.window_scale {
        let _ = write!(text, ", wscale {ws}");
    }
    if options.sack_permitted {
        text.push_str(", SACK-permitted");
    }
    if options.timestamps {
        text.push_str(", timestamps");
    }
}

/// The observer's memory of one connection: what it needs to recognise the third
/// handshake segment and the ACK of each FIN. The node keeps one in each connection; the
/// [`Tracker`] keeps them in a map for readers that have no connection table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Track {
    /// After a SYN-ACK: the ACK number that completes the handshake and who sends it.
    handshake_ack: Option<(Direction, u32)>,
    /// The sequence number just past each side's FIN, until the other side ACKs it.
    fin_end_in: Option<u32>,
    fin_end_out: Option<u32>,
    /// FINs acknowledged so far (both ways).
    fins_acked: u8,
}

impl Track {
    /// What `s`, a segment of this connection going `dir`, means in its life.
    pub fn classify(&mut self, dir: Direction, s: &Segment) -> Role {
        if s.rst {
            *self = Track::default();
            return Role::Rst;
        }
        if s.syn && !s.ack_flag {
            *self = Track::default();
            return Role::Syn;
        }
        if s.syn {
            self.handshake_ack = Some((dir.reverse(), s.seq.wrapping_add(1)));
            return Role::SynAck;
        }
        let mut role = Role::Other;
        if let Some((who, ack)) = self.handshake_ack
            && who == dir
            && s.ack_flag
            && s.ack == ack
        {
            self.handshake_ack = None;
            if s.payload_len == 0 && !s.fin {
                role = Role::HandshakeAck;
            }
        }
        // Did this segment acknowledge the other side's FIN for the first time?
        let peer_fin = match dir {
            Direction::In => &mut self.fin_end_out,
            Direction::Out => &mut self.fin_end_in,
        };
        let acks_fin = match *peer_fin {
            Some(end) if s.ack_flag && seq_ge(s.ack, end) => {
                *peer_fin = None;
                self.fins_acked += 1;
                true
            }
            _ => false,
        };
        if s.fin {
            let end = s.seq.wrapping_add(s.seq_len());
            match dir {
                Direction::In => self.fin_end_in = Some(end),
                Direction::Out => self.fin_end_out = Some(end),
            }
            if acks_fin {
                Role::FinAckOfFin
            } else {
                Role::Fin
            }
        } else if acks_fin {
            Role::AckOfFin
        } else {
            role
        }
    }

    /// Both FINs are acknowledged: nothing is left to recognise.
    pub fn is_done(&self) -> bool {
        self.fins_acked >= 2 && self.fin_end_in.is_none() && self.fin_end_out.is_none()
    }
}

impl Direction {
    pub fn reverse(self) -> Direction {
        match self {
            Direction::In => Direction::Out,
            Direction::Out => Direction::In,
        }
    }
}

/// The most connections the tracker remembers. Past that it forgets everything and starts
/// again: comments on connections alive at that moment degrade, the process stays bounded.
pub const MAX_TRACKED: usize = 65_536;

/// Classifies segments into [`Role`]s by remembering a little per connection.
#[derive(Debug, Default)]
pub struct Tracker {
    conns: HashMap<FourTuple, Track>,
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads one packet. `None` if it is not an IPv4 TCP segment.
    pub fn observe(&mut self, dir: Direction, packet: &[u8]) -> Option<Observed> {
        let segment = Segment::parse(packet)?;
        let role = self.classify(dir, &segment);
        Some(Observed { dir, segment, role })
    }

    fn classify(&mut self, dir: Direction, s: &Segment) -> Role {
        let key = s.tuple(dir);
        if s.rst || (s.syn && !s.ack_flag) {
            // A RST ends what we knew; a new SYN on a known tuple is a new connection
            // (or a retransmitted SYN).
            self.conns.remove(&key);
            return Track::default().classify(dir, s);
        }
        if s.syn && !self.conns.contains_key(&key) && self.conns.len() >= MAX_TRACKED {
            self.conns.clear();
        }
        let track = match self.conns.get_mut(&key) {
            Some(t) => t,
            None if s.syn => self.conns.entry(key).or_default(),
            None => return Track::default().classify(dir, s),
        };
        let role = track.classify(dir, s);
        if track.is_done() {
            self.conns.remove(&key);
        }
        role
    }

    /// Connections the tracker currently remembers.
    pub fn tracked(&self) -> usize {
        self.conns.len()
    }
}

/// RFC 9293 §3.4: sequence numbers compare modulo 2^32.
pub fn seq_ge(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use build::{Flags, addr, tcp};

    const SYN: Flags = Flags {
        syn: true,
        ack: false,
        fin: false,
        rst: false,
    };
    const SYNACK: Flags = Flags {
        syn: true,
        ack: true,
        fin: false,
        rst: false,
    };
    const ACK: Flags = Flags {
        syn: false,
        ack: true,
        fin: false,
        rst: false,
    };
    const FIN: Flags = Flags {
        syn: false,
        ack: true,
        fin: true,
        rst: false,
    };

    #[test]
    fn a_whole_connection_is_classified_step_by_step() {
        let (c, s) = (addr(1, 40000), addr(2, 80));
        let mut t = Tracker::new();
        let mut role = |dir, p: Vec<u8>| t.observe(dir, &p).unwrap().role;
        assert_eq!(role(Direction::In, tcp(c, s, 100, 0, SYN, b"")), Role::Syn);
        assert_eq!(
            role(Direction::Out, tcp(s, c, 500, 101, SYNACK, b"")),
            Role::SynAck
        );
        assert_eq!(
            role(Direction::In, tcp(c, s, 101, 501, ACK, b"")),
            Role::HandshakeAck
        );
        assert_eq!(
            role(Direction::In, tcp(c, s, 101, 501, ACK, b"GET")),
            Role::Other
        );
        assert_eq!(
            role(Direction::Out, tcp(s, c, 501, 104, FIN, b"")),
            Role::Fin
        );
        assert_eq!(
            role(Direction::In, tcp(c, s, 104, 502, FIN, b"")),
            Role::FinAckOfFin
        );
        assert_eq!(
            role(Direction::Out, tcp(s, c, 502, 105, ACK, b"")),
            Role::AckOfFin
        );
        assert_eq!(t.tracked(), 0, "a finished connection is forgotten");
    }

    #[test]
    fn handshake_ack_must_acknowledge_the_syn_ack() {
        let (c, s) = (addr(1, 40000), addr(2, 80));
        let mut t = Tracker::new();
        t.observe(Direction::Out, &tcp(s, c, 500, 101, SYNACK, b""));
        let wrong = t
            .observe(Direction::In, &tcp(c, s, 101, 999, ACK, b""))
            .unwrap();
        assert_eq!(wrong.role, Role::Other);
    }

    #[test]
    fn syn_options_are_read() {
        let p = tcp(addr(1, 1), addr(2, 80), 7, 0, SYN, b"");
        let mut p2 = p.clone();
        // Rebuild with options through etherparse's header type.
        let ip = Ipv4Slice::from_slice(&p).unwrap();
        let mut h = TcpSlice::from_slice(ip.payload().payload)
            .unwrap()
            .to_header();
        h.set_options(&[
            TcpOptionElement::MaximumSegmentSize(1460),
            TcpOptionElement::SelectiveAcknowledgementPermitted,
            TcpOptionElement::WindowScale(7),
        ])
        .unwrap();
        let mut ip_h = ip.header().to_header();
        ip_h.set_payload_len(h.header_len()).unwrap();
        h.checksum = h.calc_checksum_ipv4(&ip_h, &[]).unwrap();
        p2.clear();
        ip_h.write(&mut p2).unwrap();
        h.write(&mut p2).unwrap();
        let s = Segment::parse(&p2).unwrap();
        assert_eq!(s.options.mss, Some(1460));
        assert_eq!(s.options.window_scale, Some(7));
        assert!(s.options.sack_permitted);
        let text = Observed {
            dir: Direction::In,
            segment: s,
            role: Role::Syn,
        }
        .describe()
        .unwrap();
        assert!(text.starts_with("SYN, handshake 1/3, ISN 7"), "{text}");
        assert!(
            text.contains("MSS 1460") && text.contains("wscale 7"),
            "{text}"
        );
    }

    #[test]
    fn garbage_is_not_a_segment() {
        assert!(Segment::parse(&[]).is_none());
        assert!(Segment::parse(&[0x45, 0, 0]).is_none());
        assert!(Segment::parse(&[0xff; 60]).is_none());
        let mut p = tcp(addr(1, 1), addr(2, 80), 7, 0, SYN, b"");
        p.truncate(30);
        assert!(Segment::parse(&p).is_none());
    }

    #[test]
    fn sequence_comparison_wraps() {
        assert!(seq_ge(5, u32::MAX - 5));
        assert!(!seq_ge(u32::MAX - 5, 5));
        assert!(seq_ge(7, 7));
    }

    /// Builds a little IPv4 + TCP packet with etherparse; tests of everything that reads
    /// packets use it.
    mod build {
        use super::*;
        use etherparse::PacketBuilder;

        #[derive(Default, Clone, Copy)]
        pub struct Flags {
            pub syn: bool,
            pub ack: bool,
            pub fin: bool,
            pub rst: bool,
        }

        pub fn tcp(
            src: SocketAddrV4,
            dst: SocketAddrV4,
            seq: u32,
            ack: u32,
            flags: Flags,
            payload: &[u8],
        ) -> Vec<u8> {
            let mut b = PacketBuilder::ipv4(src.ip().octets(), dst.ip().octets(), 64).tcp(
                src.port(),
                dst.port(),
                seq,
                64_000,
            );
            if flags.syn {
                b = b.syn();
            }
            if flags.ack {
                b = b.ack(ack);
            }
            if flags.fin {
                b = b.fin();
            }
            if flags.rst {
                b = b.rst();
            }
            let mut out = Vec::with_capacity(b.size(payload.len()));
            b.write(&mut out, payload)
                .expect("writing to a Vec cannot fail");
            out
        }

        pub fn addr(last: u8, port: u16) -> SocketAddrV4 {
            SocketAddrV4::new(std::net::Ipv4Addr::new(10, 77, 0, last), port)
        }
    }
}
