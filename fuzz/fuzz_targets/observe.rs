//! The packet observer (src/observe.rs): `Segment::parse`, `Tracker::observe` and
//! `Observed::describe` on a stream of packets both ways, raw or built as segments of a
//! few connections whose numbers follow on. What must hold: whatever the observer reads
//! out of a packet agrees with smoltcp's own reading of it (two parsers, one packet);
//! its lengths fit in the packet; only a handshake or teardown step gets words; the
//! tracker stays within its bound.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use smoltcp::wire::{IpProtocol, Ipv4Packet, TcpPacket};
use synack::observe::{Direction, MAX_TRACKED, Role, Segment, Tracker};
use synack_fuzz::capture::Frame;

#[derive(Arbitrary, Debug)]
struct Packet {
    inbound: bool,
    frame: Frame,
}

/// Sequence, acknowledgment, SYN, FIN, RST, ACK, window, payload length.
type Fields = (u32, u32, bool, bool, bool, bool, u16, usize);

/// smoltcp's reading of the same packet, where it reads one.
fn smoltcp_reads(p: &[u8]) -> Option<Fields> {
    let ip = Ipv4Packet::new_checked(p).ok()?;
    if ip.next_header() != IpProtocol::Tcp || ip.more_frags() || ip.frag_offset() != 0 {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    Some((
        tcp.seq_number().0 as u32,
        tcp.ack_number().0 as u32,
        tcp.syn(),
        tcp.fin(),
        tcp.rst(),
        tcp.ack(),
        tcp.window_len(),
        tcp.payload().len(),
    ))
}

fuzz_target!(|packets: Vec<Packet>| {
    let mut tracker = Tracker::new();
    let mut flows = synack_fuzz::capture::Flows::default();
    for p in packets.iter().take(512) {
        let bytes = flows.ip(&p.frame);
        let dir = if p.inbound {
            Direction::In
        } else {
            Direction::Out
        };
        let parsed = Segment::parse(&bytes);
        if let Some(s) = parsed {
            assert!(
                s.payload_len as usize + 40 <= bytes.len(),
                "a payload longer than the packet"
            );
            assert_eq!(
                s.seq_len(),
                s.payload_len + u32::from(s.syn) + u32::from(s.fin)
            );
            assert_eq!(s.tuple(dir).local, if p.inbound { s.dst } else { s.src });
            if let Some(theirs) = smoltcp_reads(&bytes) {
                let ours = (
                    s.seq,
                    s.ack,
                    s.syn,
                    s.fin,
                    s.rst,
                    s.ack_flag,
                    s.window,
                    s.payload_len as usize,
                );
                assert_eq!(
                    ours, theirs,
                    "etherparse and smoltcp read the segment differently"
                );
            }
        }
        let observed = tracker.observe(dir, &bytes);
        assert_eq!(observed.is_some(), parsed.is_some());
        if let Some(o) = observed {
            assert_eq!(o.segment, parsed.unwrap());
            let words = o.describe();
            assert_eq!(
                words.is_none(),
                o.role == Role::Other,
                "{:?}: {words:?}",
                o.role
            );
            if o.segment.rst {
                assert_eq!(o.role, Role::Rst);
            }
        }
        assert!(tracker.tracked() <= MAX_TRACKED);
    }
});
