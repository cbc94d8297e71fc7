//! IPv4 reassembly (RFC 791 §3.2), bounded, in front of the demultiplexer: a datagram's
//! connection is only known once its first fragment (the one with the TCP or UDP
//! header) is here, and the connection's smoltcp socket set must see it whole.
//!
//! Each fragment costs a bounded, small amount of work whatever a peer sends: the
//! received parts of a datagram are a short sorted list of disjoint byte ranges in a
//! fixed array ([`MAX_RANGES`]; RFC 815 keeps the holes between them instead), a
//! fragment finds its place by binary search and joins its neighbours in place, and
//! the payload is copied once into a buffer reserved when the datagram was first seen
//! (buffers are reused, never allocated per fragment). As Linux has done since 2018
//! ("ip: discard IPv4 datagrams with overlapping segments", RFC 5722 §4 for IPv6), a
//! fragment that overlaps data already here discards the whole datagram, while one that
//! repeats data already here (a duplicate on the link) is ignored on its own.

use std::net::Ipv4Addr;

use smoltcp::time::{Duration, Instant};

/// Datagrams reassembled at once; past it the oldest is given up. Bounds memory to
/// 16 x 64 KiB (the payload buffers, reused from one datagram to the next).
pub const MAX_DATAGRAMS: usize = 16;

/// How long the fragments of a datagram wait for the rest (Linux's `ipfrag_time`).
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The most disjoint received parts of one datagram (one more than its holes); a
/// fragment that would make more discards the datagram. Fragments sent in order, in
/// reverse, or shuffled by a network make few: every fragment that touches a part
/// already here joins it, and a 64 KiB datagram at an MTU of 1500 has only 45
/// fragments. An attacker sending 8-byte fragments at every other offset would make
/// thousands. Linux bounds reassembly by memory (`ipfrag_high_thresh`) and FreeBSD by
/// fragments per datagram (`net.inet.ip.maxfragsperpacket`, 16); a cap on the parts
/// keeps each fragment's work at a binary search and a move of at most this many pairs.
pub const MAX_RANGES: usize = 64;

/// The largest IPv4 datagram (RFC 791 §3.1: Total Length is 16 bits).
const MAX_TOTAL: usize = 65_535;

/// The shortest IPv4 header, and the longest (IHL is 4 bits of 32-bit words).
const MIN_HEADER: usize = 20;
const MAX_HEADER: usize = 60;

/// The most payload a datagram can carry: behind the shortest header. The longest
/// payload buffer a datagram needs.
const MAX_PAYLOAD: usize = MAX_TOTAL - MIN_HEADER;

/// Why a datagram was discarded: each completes "IPv4 fragment ...".
pub const OVERLAP: &str = "overlaps an earlier one: the datagram is dropped, as Linux does";
pub const TOO_MANY_HOLES: &str = "leaves its datagram in more than 64 pieces: the datagram is dropped (a bound on reassembly work)";
pub const LENGTHS_DISAGREE: &str =
    "disagrees with the others on the datagram's length: the datagram is dropped";
pub const TOO_LONG: &str = "makes a datagram longer than 65,535 B with its first fragment's header: the datagram is dropped";

/// Why a fragment alone was dropped: its IPv4 header does not hold together. The node
/// checks every header before reassembly and says what exactly; this is for any other
/// caller.
const MALFORMED: &str = "malformed IPv4 header";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    id: u16,
    protocol: u8,
}

/// The received parts of a datagram's payload, as byte ranges: sorted, disjoint, and
/// never touching (parts that touch are joined into one).
#[derive(Debug, Clone, Copy)]
struct Parts {
    parts: [(u32, u32); MAX_RANGES],
    len: usize,
}

/// Where a fragment's bytes fell among the parts already here.
#[derive(Debug, PartialEq, Eq)]
enum Placed {
    /// On new ground: added, joined to the parts it touches.
    Added,
    /// Inside one part already here.
    Duplicate,
    /// Partly on bytes already here.
    Overlap,
    /// On new ground, but as a part of its own, one more than [`MAX_RANGES`].
    Full,
}

impl Parts {
    const EMPTY: Parts = Parts {
        parts: [(0, 0); MAX_RANGES],
        len: 0,
    };

    fn as_slice(&self) -> &[(u32, u32)] {
        &self.parts[..self.len]
    }

    /// The end of the furthest byte received.
    fn end(&self) -> usize {
        self.as_slice().last().map_or(0, |p| p.1 as usize)
    }

    /// Whether the parts are one, from 0 to `total`.
    fn whole(&self, total: usize) -> bool {
        self.as_slice() == [(0, total as u32)]
    }

    /// Places the bytes `start..end` (not empty): a binary search and a move of at most
    /// [`MAX_RANGES`] pairs.
    fn add(&mut self, start: u32, end: u32) -> Placed {
        let parts = self.as_slice();
        // Every part before `i` ends before `start`, with a gap.
        let i = parts.partition_point(|&(_, e)| e < start);
        // Part `i` may end exactly where the new bytes begin: they extend it.
        let left = parts.get(i).is_some_and(|&(_, e)| e == start);
        // The first part that may begin inside the new bytes, or where they end.
        let r = if left { i + 1 } else { i };
        let right = match parts.get(r) {
            Some(&(s, e)) if s <= start && end <= e => return Placed::Duplicate,
            Some(&(s, _)) if s < end => return Placed::Overlap,
            Some(&(s, _)) => s == end,
            None => false,
        };
        match (left, right) {
            (true, true) => {
                self.parts[i].1 = self.parts[r].1;
                self.parts.copy_within(r + 1..self.len, r);
                self.len -= 1;
            }
            (true, false) => self.parts[i].1 = end,
            (false, true) => self.parts[r].0 = start,
            (false, false) => {
                if self.len == MAX_RANGES {
                    return Placed::Full;
                }
                self.parts.copy_within(i..self.len, i + 1);
                self.parts[i] = (start, end);
                self.len += 1;
            }
        }
        Placed::Added
    }
}

#[derive(Debug)]
struct Datagram {
    key: Key,
    started: Instant,
    /// The first fragment's header (offset 0), once it is here (`header_len` > 0).
    header: [u8; MAX_HEADER],
    header_len: usize,
    /// [`MAX_PAYLOAD`] bytes, reused from datagram to datagram: only the bytes in
    /// `parts` are this datagram's.
    payload: Vec<u8>,
    parts: Parts,
    /// The payload's length, once the last fragment (MF clear) is here.
    total: Option<usize>,
    /// Fragments taken (duplicates not counted).
    fragments: usize,
}

/// What a fragment did.
#[derive(Debug, PartialEq, Eq)]
pub enum Offered {
    /// Kept; the datagram is not whole yet.
    Held { fragments: usize, offset: usize },
    /// Its bytes are already here (the link or the sender sent it twice): ignored, and
    /// the datagram waits on (Linux's `IPFRAG_DUP`; RFC 5722 §4 as amended by erratum
    /// 3089).
    Duplicate { offset: usize },
    /// The datagram is whole: [`Reassembly::take_datagram`] hands it over.
    Complete { fragments: usize, bytes: usize },
    /// Not a fragment we can use (it says why); any datagram it belongs to waits on.
    Dropped(&'static str),
    /// The fragment shows its datagram cannot be put together right: the datagram is
    /// given up with the `fragments` taken so far. `why` completes "IPv4 fragment ...".
    Discarded { why: &'static str, fragments: usize },
}

#[derive(Debug, Default)]
pub struct Reassembly {
    /// Oldest first.
    datagrams: Vec<Datagram>,
    /// Payload buffers of datagrams gone, for the next ones: with those in `datagrams`,
    /// never more than [`MAX_DATAGRAMS`].
    spare: Vec<Vec<u8>>,
    /// The last completed datagram, rebuilt as one packet.
    whole: Vec<u8>,
    /// Datagrams given up (timed out or pushed out).
    pub expired: u64,
    /// Datagrams discarded because of a fragment (overlap, too many pieces, lengths
    /// that disagree, too long).
    pub discarded: u64,
    /// Fragments ignored as duplicates.
    pub duplicates: u64,
}

/// A fragment's fields, checked.
struct Fragment<'a> {
    key: Key,
    header: &'a [u8],
    offset: usize,
    more: bool,
    data: &'a [u8],
}

impl<'a> Fragment<'a> {
    fn parse(packet: &'a [u8]) -> Result<Self, &'static str> {
        if packet.len() < MIN_HEADER || packet[0] >> 4 != 4 {
            return Err(MALFORMED);
        }
        let ihl = usize::from(packet[0] & 0xf) * 4;
        let total_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
        if ihl < MIN_HEADER || total_len < ihl || total_len > packet.len() {
            return Err(MALFORMED);
        }
        let flags_offset = u16::from_be_bytes([packet[6], packet[7]]);
        let more = flags_offset & 0x2000 != 0;
        let offset = usize::from(flags_offset & 0x1fff) * 8;
        let data = &packet[ihl..total_len];
        if data.is_empty() {
            return Err("a fragment with no data");
        }
        // RFC 791 §3.2: every fragment but the last carries a whole number of 8-byte
        // blocks, since the next one's offset counts in them.
        if more && data.len() % 8 != 0 {
            return Err("a fragment before the last is not a multiple of 8 bytes");
        }
        // Even behind the shortest header, these bytes would not fit in a datagram.
        if offset + data.len() > MAX_PAYLOAD {
            return Err("fragment past the largest datagram");
        }
        Ok(Fragment {
            key: Key {
                src: Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]),
                dst: Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]),
                id: u16::from_be_bytes([packet[4], packet[5]]),
                protocol: packet[9],
            },
            header: &packet[..ihl],
            offset,
            more,
            data,
        })
    }
}

impl Reassembly {
    /// Whether `packet` is an IPv4 fragment (MF set or a non-zero offset).
    pub fn is_fragment(packet: &[u8]) -> bool {
        packet.len() >= 20 && packet[0] >> 4 == 4 && {
            let flags_offset = u16::from_be_bytes([packet[6], packet[7]]);
            flags_offset & 0x2000 != 0 || flags_offset & 0x1fff != 0
        }
    }

    /// Takes a fragment.
    pub fn offer(&mut self, now: Instant, packet: &[u8]) -> Offered {
        self.expire(now);
        let f = match Fragment::parse(packet) {
            Ok(f) => f,
            Err(why) => return Offered::Dropped(why),
        };
        let (start, end) = (f.offset, f.offset + f.data.len());
        let idx = self.slot(f.key, now);
        let d = &mut self.datagrams[idx];
        // RFC 791 §3.2: the last fragment (MF clear) fixes the payload's length; no byte
        // may lie past it, and another last fragment must say the same.
        let disagrees = match d.total {
            Some(total) => end > total || (!f.more && end != total),
            None => !f.more && d.parts.end() > end,
        };
        if disagrees {
            return self.discard(idx, LENGTHS_DISAGREE);
        }
        // Both ends fit in u32: `end` is at most MAX_PAYLOAD.
        match d.parts.add(start as u32, end as u32) {
            Placed::Added => {}
            Placed::Duplicate => {
                self.duplicates += 1;
                return Offered::Duplicate { offset: start };
            }
            Placed::Overlap => return self.discard(idx, OVERLAP),
            Placed::Full => return self.discard(idx, TOO_MANY_HOLES),
        }
        // RFC 791 §3.1: Total Length, 16 bits, counts the header; the datagram is the
        // first fragment's header and the whole payload.
        let header_len = if start == 0 {
            f.header.len()
        } else {
            d.header_len
        };
        let total = if f.more { d.total } else { Some(end) };
        let length = match total {
            Some(total) if header_len > 0 => match u16::try_from(header_len + total) {
                Ok(length) => Some(length),
                Err(_) => return self.discard(idx, TOO_LONG),
            },
            _ => None,
        };
        d.fragments += 1;
        d.payload[start..end].copy_from_slice(f.data);
        if start == 0 {
            d.header[..header_len].copy_from_slice(f.header);
            d.header_len = header_len;
        }
        d.total = total;
        if let (Some(length), Some(total)) = (length, total)
            && d.parts.whole(total)
        {
            let d = self.datagrams.remove(idx);
            rebuild(
                &mut self.whole,
                &d.header[..d.header_len],
                &d.payload[..total],
                length,
            );
            self.spare.push(d.payload);
            return Offered::Complete {
                fragments: d.fragments,
                bytes: self.whole.len(),
            };
        }
        Offered::Held {
            fragments: d.fragments,
            offset: start,
        }
    }

    /// Lends out the datagram the last [`offer`](Self::offer) completed (the node hands
    /// it on while it is itself borrowed); [`restore`](Self::restore) gives the buffer
    /// back for the next one.
    pub fn take_datagram(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.whole)
    }

    pub fn restore(&mut self, whole: Vec<u8>) {
        self.whole = whole;
    }

    /// Gives up datagrams older than [`TIMEOUT`].
    pub fn expire(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.datagrams.len() {
            if now - self.datagrams[i].started < TIMEOUT {
                i += 1;
            } else {
                let d = self.datagrams.remove(i);
                self.spare.push(d.payload);
                self.expired += 1;
            }
        }
    }

    /// When the oldest datagram times out.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.datagrams.iter().map(|d| d.started + TIMEOUT).min()
    }

    /// The index of the datagram `key` names, made if new (pushing out the oldest when
    /// [`MAX_DATAGRAMS`] are waiting).
    fn slot(&mut self, key: Key, now: Instant) -> usize {
        if let Some(i) = self.datagrams.iter().position(|d| d.key == key) {
            return i;
        }
        if self.datagrams.len() == MAX_DATAGRAMS {
            let d = self.datagrams.remove(0);
            self.spare.push(d.payload);
            self.expired += 1;
        }
        let payload = self.spare.pop().unwrap_or_else(|| vec![0; MAX_PAYLOAD]);
        self.datagrams.push(Datagram {
            key,
            started: now,
            header: [0; MAX_HEADER],
            header_len: 0,
            payload,
            parts: Parts::EMPTY,
            total: None,
            fragments: 0,
        });
        self.datagrams.len() - 1
    }

    fn discard(&mut self, idx: usize, why: &'static str) -> Offered {
        let d = self.datagrams.remove(idx);
        self.spare.push(d.payload);
        self.discarded += 1;
        Offered::Discarded {
            why,
            fragments: d.fragments,
        }
    }
}

/// One packet from the first fragment's header and the whole payload: no fragment
/// flags, `length` as its total length, a fresh header checksum.
fn rebuild(out: &mut Vec<u8>, header: &[u8], payload: &[u8], length: u16) {
    out.clear();
    out.extend_from_slice(header);
    out.extend_from_slice(payload);
    out[2..4].copy_from_slice(&length.to_be_bytes());
    out[6] = 0;
    out[7] = 0;
    out[10] = 0;
    out[11] = 0;
    // RFC 791 §3.1: the one's complement of the one's complement sum of the header's
    // 16-bit words (a header is a whole number of 32-bit words).
    let mut sum: u32 = 0;
    for pair in out[..header.len()].chunks_exact(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    out[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One fragment from 10.77.0.1 to 10.77.0.2 (UDP), with an `ihl`-byte header and a
    /// right header checksum.
    fn fragment(id: u16, offset: usize, more: bool, ihl: usize, data: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; ihl];
        p[0] = 0x40 | (ihl / 4) as u8;
        let total = u16::try_from(ihl + data.len()).expect("a fragment fits in a packet");
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[4..6].copy_from_slice(&id.to_be_bytes());
        let fo = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
        p[6..8].copy_from_slice(&fo.to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 77, 0, 1]);
        p[16..20].copy_from_slice(&[10, 77, 0, 2]);
        // Options past the 20 bytes: NOP, NOP, ..., End of Option List.
        for b in &mut p[20..] {
            *b = 1;
        }
        if let Some(last) = p.get_mut(20..).and_then(|o| o.last_mut()) {
            *last = 0;
        }
        let sum = etherparse::checksum::Sum16BitWords::new()
            .add_slice(&p)
            .ones_complement()
            .to_be();
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p.extend_from_slice(data);
        p
    }

    /// An IPv4 packet of `payload`, cut into fragments of `size` bytes (a multiple of 8).
    fn fragments(payload: &[u8], size: usize) -> Vec<Vec<u8>> {
        payload
            .chunks(size)
            .enumerate()
            .map(|(i, chunk)| {
                let offset = i * size;
                let more = offset + chunk.len() < payload.len();
                fragment(0x1234, offset, more, 20, chunk)
            })
            .collect()
    }

    fn valid(whole: &[u8]) -> etherparse::Ipv4Slice<'_> {
        let ip = etherparse::Ipv4Slice::from_slice(whole).expect("a valid header");
        assert!(!ip.is_payload_fragmented());
        assert_eq!(
            ip.header().to_header().calc_header_checksum(),
            ip.header().header_checksum()
        );
        ip
    }

    #[test]
    fn fragments_in_any_order_make_one_datagram() {
        let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let mut frags = fragments(&payload, 1480);
        frags.reverse();
        let mut r = Reassembly::default();
        let now = Instant::from_secs(1);
        assert!(frags.iter().all(|f| Reassembly::is_fragment(f)));
        assert!(matches!(r.offer(now, &frags[0]), Offered::Held { .. }));
        assert!(matches!(r.offer(now, &frags[1]), Offered::Held { .. }));
        assert_eq!(
            r.offer(now, &frags[2]),
            Offered::Complete {
                fragments: 3,
                bytes: 3020
            }
        );
        let ip = valid(&r.whole);
        assert_eq!(ip.payload().payload, &payload[..]);
    }

    #[test]
    fn shuffled_small_fragments_join_up_in_place() {
        // Nearly 64 KiB in 8-byte fragments, in an order that leaves as many holes as
        // allowed for a while (every third, then the rest in order): whole in the end.
        let payload: Vec<u8> = (0..MAX_PAYLOAD - 3).map(|i| (i % 253) as u8).collect();
        let payload = &payload[..];
        let frags = fragments(payload, 8);
        let first = (0..frags.len()).filter(|i| i % 3 == 0).take(MAX_RANGES);
        let order: Vec<usize> = first
            .chain((0..frags.len()).filter(|i| i % 3 != 0 || *i / 3 >= MAX_RANGES))
            .collect();
        assert_eq!(order.len(), frags.len());
        let mut r = Reassembly::default();
        let (last, rest) = order.split_last().unwrap();
        for (n, &i) in rest.iter().enumerate() {
            let o = r.offer(Instant::ZERO, &frags[i]);
            assert!(matches!(o, Offered::Held { .. }), "fragment {i}: {o:?}");
            if n + 1 == MAX_RANGES {
                assert_eq!(r.datagrams[0].parts.len, MAX_RANGES);
            }
        }
        assert_eq!(
            r.offer(Instant::ZERO, &frags[*last]),
            Offered::Complete {
                fragments: frags.len(),
                bytes: MAX_TOTAL - 3
            }
        );
        assert_eq!(valid(&r.whole).payload().payload, payload);
    }

    #[test]
    fn fragments_at_every_other_offset_discard_the_datagram_at_the_cap() {
        // 8-byte fragments with a hole after each: the 65th piece is one too many.
        assert!(TOO_MANY_HOLES.contains(&MAX_RANGES.to_string()));
        let mut r = Reassembly::default();
        let mut outcomes = Vec::new();
        for i in 0..4000 {
            outcomes.push(r.offer(Instant::ZERO, &fragment(1, i * 16, true, 20, &[i as u8; 8])));
        }
        let held_in_a_row = outcomes
            .split(|o| !matches!(o, Offered::Held { .. }))
            .map(<[_]>::len)
            .max();
        assert_eq!(held_in_a_row, Some(MAX_RANGES));
        assert_eq!(
            outcomes[MAX_RANGES],
            Offered::Discarded {
                why: TOO_MANY_HOLES,
                fragments: MAX_RANGES
            }
        );
        assert_eq!(r.discarded, (4000 / (MAX_RANGES + 1)) as u64);
        // Memory stays at one buffer a datagram: the discarded ones are reused.
        assert_eq!(r.datagrams.len() + r.spare.len(), 1);
    }

    #[test]
    fn an_overlapping_fragment_discards_the_whole_datagram() {
        let mut r = Reassembly::default();
        let t = Instant::ZERO;
        assert!(matches!(
            r.offer(t, &fragment(2, 0, true, 20, &[1; 16])),
            Offered::Held { .. }
        ));
        // Bytes 8..16 again, with other data, and 16..24 new.
        assert_eq!(
            r.offer(t, &fragment(2, 8, true, 20, &[2; 16])),
            Offered::Discarded {
                why: OVERLAP,
                fragments: 1
            }
        );
        assert_eq!(r.discarded, 1);
        // What follows starts a new datagram, which lacks the beginning.
        let last = r.offer(t, &fragment(2, 24, false, 20, &[3; 8]));
        assert!(
            matches!(last, Offered::Held { fragments: 1, .. }),
            "{last:?}"
        );
        // An overlap on the left (into a part that came earlier) does the same.
        let mut r = Reassembly::default();
        r.offer(t, &fragment(3, 16, true, 20, &[1; 16]));
        r.offer(t, &fragment(3, 48, false, 20, &[1; 8]));
        let o = r.offer(t, &fragment(3, 8, true, 20, &[2; 16]));
        assert_eq!(
            o,
            Offered::Discarded {
                why: OVERLAP,
                fragments: 2
            }
        );
        // And one that covers a whole part and more.
        let mut r = Reassembly::default();
        r.offer(t, &fragment(4, 16, true, 20, &[1; 8]));
        let o = r.offer(t, &fragment(4, 8, true, 20, &[2; 24]));
        assert!(
            matches!(o, Offered::Discarded { why: OVERLAP, .. }),
            "{o:?}"
        );
    }

    #[test]
    fn a_duplicate_fragment_is_ignored_and_the_datagram_completes() {
        let mut r = Reassembly::default();
        let t = Instant::ZERO;
        r.offer(t, &fragment(3, 0, true, 20, &[1; 16]));
        r.offer(t, &fragment(3, 24, false, 20, &[3; 8]));
        // The link sent the first one twice; then a piece inside it.
        assert_eq!(
            r.offer(t, &fragment(3, 0, true, 20, &[1; 16])),
            Offered::Duplicate { offset: 0 }
        );
        assert_eq!(
            r.offer(t, &fragment(3, 8, true, 20, &[1; 8])),
            Offered::Duplicate { offset: 8 }
        );
        assert_eq!(r.duplicates, 2);
        assert_eq!(
            r.offer(t, &fragment(3, 16, true, 20, &[2; 8])),
            Offered::Complete {
                fragments: 3,
                bytes: 52
            }
        );
        let ip = valid(&r.whole);
        assert_eq!(
            ip.payload().payload,
            [&[1u8; 16][..], &[2; 8], &[3; 8]].concat()
        );
    }

    #[test]
    fn the_datagram_length_counts_the_first_fragments_header() {
        let t = Instant::ZERO;
        // A 60-byte first header and 65,515 bytes of payload: 65,575 B, too long, though
        // each fragment fits. Discarded, not truncated to a 16-bit length.
        let mut r = Reassembly::default();
        r.offer(t, &fragment(4, 0, true, 60, &[1; 32768]));
        let o = r.offer(t, &fragment(4, 32768, false, 20, &[2; 32747]));
        assert_eq!(
            o,
            Offered::Discarded {
                why: TOO_LONG,
                fragments: 1
            }
        );
        // The same the other way round: known as soon as the first fragment comes.
        let mut r = Reassembly::default();
        r.offer(t, &fragment(4, 32768, false, 20, &[2; 32747]));
        let o = r.offer(t, &fragment(4, 0, true, 60, &[1; 32768]));
        assert!(
            matches!(o, Offered::Discarded { why: TOO_LONG, .. }),
            "{o:?}"
        );
        // A long header on a later fragment does not count: 20 + 65,515 = 65,535 fits.
        let mut r = Reassembly::default();
        r.offer(t, &fragment(5, 0, true, 20, &[1; 32768]));
        let o = r.offer(t, &fragment(5, 32768, false, 60, &[2; 32747]));
        assert_eq!(
            o,
            Offered::Complete {
                fragments: 2,
                bytes: 65_535
            }
        );
        let ip = valid(&r.whole);
        assert_eq!(ip.header().total_len(), 65_535);
        assert_eq!(ip.header().ihl(), 5);
        // A first header with options is kept, with its length in the total.
        let mut r = Reassembly::default();
        r.offer(t, &fragment(6, 0, true, 24, &[1; 16]));
        let o = r.offer(t, &fragment(6, 16, false, 20, &[2; 4]));
        assert_eq!(
            o,
            Offered::Complete {
                fragments: 2,
                bytes: 44
            }
        );
        let ip = valid(&r.whole);
        assert_eq!((ip.header().ihl(), ip.header().total_len()), (6, 44));
    }

    #[test]
    fn fragments_that_disagree_on_the_length_discard_the_datagram() {
        let t = Instant::ZERO;
        let mut r = Reassembly::default();
        r.offer(t, &fragment(7, 0, true, 20, &[1; 16]));
        r.offer(t, &fragment(7, 24, false, 20, &[1; 8]));
        // Past the end the last fragment set.
        let o = r.offer(t, &fragment(7, 32, true, 20, &[1; 8]));
        assert!(
            matches!(
                o,
                Offered::Discarded {
                    why: LENGTHS_DISAGREE,
                    ..
                }
            ),
            "{o:?}"
        );
        // A second last fragment with another end.
        let mut r = Reassembly::default();
        r.offer(t, &fragment(8, 24, false, 20, &[1; 8]));
        let o = r.offer(t, &fragment(8, 8, false, 20, &[1; 8]));
        assert!(
            matches!(
                o,
                Offered::Discarded {
                    why: LENGTHS_DISAGREE,
                    ..
                }
            ),
            "{o:?}"
        );
        // A last fragment that ends before bytes already here.
        let mut r = Reassembly::default();
        r.offer(t, &fragment(9, 32, true, 20, &[1; 8]));
        let o = r.offer(t, &fragment(9, 8, false, 20, &[1; 8]));
        assert!(
            matches!(
                o,
                Offered::Discarded {
                    why: LENGTHS_DISAGREE,
                    ..
                }
            ),
            "{o:?}"
        );
        assert_eq!(r.discarded, 1);
    }

    #[test]
    fn half_datagrams_time_out_and_the_count_is_bounded() {
        let payload = vec![7u8; 2000];
        let mut r = Reassembly::default();
        let t0 = Instant::from_secs(1);
        for id in 0..(MAX_DATAGRAMS as u16 + 4) {
            let mut f = fragments(&payload, 1000).remove(0);
            f[4..6].copy_from_slice(&id.to_be_bytes());
            r.offer(t0, &f);
        }
        assert_eq!(r.datagrams.len(), MAX_DATAGRAMS);
        assert_eq!(r.expired, 4);
        assert_eq!(r.datagrams.len() + r.spare.len(), MAX_DATAGRAMS);
        r.expire(t0 + TIMEOUT);
        assert!(r.datagrams.is_empty());
        assert_eq!(r.expired, 4 + MAX_DATAGRAMS as u64);
        assert_eq!(r.next_expiry(), None);
        assert_eq!(r.spare.len(), MAX_DATAGRAMS);
    }

    #[test]
    fn bad_fragments_are_dropped_with_a_reason() {
        let mut r = Reassembly::default();
        // A middle fragment of 50 bytes: not a multiple of 8.
        let f = fragment(1, 0, true, 20, &[1; 50]);
        assert!(matches!(r.offer(Instant::ZERO, &f), Offered::Dropped(_)));
        // Past the largest datagram.
        let far = fragment(1, 0x1fff * 8, false, 20, &[1; 8]);
        assert!(matches!(r.offer(Instant::ZERO, &far), Offered::Dropped(_)));
        // No data.
        let empty = fragment(1, 8, true, 20, &[]);
        assert!(matches!(
            r.offer(Instant::ZERO, &empty),
            Offered::Dropped(_)
        ));
        // A total length past the bytes that came, and a packet shorter than a header.
        let mut cut = fragment(1, 8, true, 20, &[1; 16]);
        cut.truncate(30);
        assert_eq!(r.offer(Instant::ZERO, &cut), Offered::Dropped(MALFORMED));
        assert_eq!(
            r.offer(Instant::ZERO, &cut[..12]),
            Offered::Dropped(MALFORMED)
        );
        assert!(r.datagrams.is_empty(), "nothing was held for them");
    }
}
