//! IPv4 reassembly (RFC 791 §3.2), bounded, in front of the demultiplexer: a datagram's
//! connection is only known once its first fragment (the one with the TCP or UDP
//! header) is here, and the connection's smoltcp socket set must see it whole.

use std::net::Ipv4Addr;

use smoltcp::time::{Duration, Instant};

/// Datagrams reassembled at once; past it the oldest is given up. Bounds memory to
/// 16 x 64 KiB.
pub const MAX_DATAGRAMS: usize = 16;

/// How long the fragments of a datagram wait for the rest (Linux's `ipfrag_time`).
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The largest IPv4 datagram.
const MAX_TOTAL: usize = 65_535;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    id: u16,
    protocol: u8,
}

#[derive(Debug)]
struct Datagram {
    key: Key,
    started: Instant,
    /// The first fragment's header (offset 0), once it is here.
    header: Vec<u8>,
    payload: Vec<u8>,
    /// Received byte ranges of the payload, merged, in order.
    have: Vec<(usize, usize)>,
    /// The payload's length, once the last fragment (MF clear) is here.
    total: Option<usize>,
    fragments: usize,
}

/// What a fragment did.
#[derive(Debug, PartialEq, Eq)]
pub enum Offered {
    /// Kept; the datagram is not whole yet.
    Held { fragments: usize, offset: usize },
    /// The datagram is whole: [`Reassembly::datagram`] holds it.
    Complete { fragments: usize, bytes: usize },
    /// Not a fragment we can use (it says why).
    Dropped(&'static str),
}

#[derive(Debug, Default)]
pub struct Reassembly {
    datagrams: Vec<Datagram>,
    /// The last completed datagram, rebuilt as one packet.
    whole: Vec<u8>,
    /// Datagrams given up (timed out or pushed out).
    pub expired: u64,
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
        let ihl = usize::from(packet[0] & 0xf) * 4;
        let total_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
        if ihl < 20 || total_len < ihl || total_len > packet.len() {
            return Offered::Dropped("malformed IPv4 header");
        }
        let flags_offset = u16::from_be_bytes([packet[6], packet[7]]);
        let more = flags_offset & 0x2000 != 0;
        let offset = usize::from(flags_offset & 0x1fff) * 8;
        let data = &packet[ihl..total_len];
        let end = offset + data.len();
        if end + ihl > MAX_TOTAL {
            return Offered::Dropped("fragment past the largest datagram");
        }
        if more && data.len() % 8 != 0 {
            return Offered::Dropped("a fragment before the last is not a multiple of 8 bytes");
        }
        let key = Key {
            src: Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]),
            dst: Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]),
            id: u16::from_be_bytes([packet[4], packet[5]]),
            protocol: packet[9],
        };
        let idx = match self.datagrams.iter().position(|d| d.key == key) {
            Some(i) => i,
            None => {
                if self.datagrams.len() == MAX_DATAGRAMS {
                    self.datagrams.remove(0);
                    self.expired += 1;
                }
                self.datagrams.push(Datagram {
                    key,
                    started: now,
                    header: Vec::new(),
                    payload: Vec::new(),
                    have: Vec::new(),
                    total: None,
                    fragments: 0,
                });
                self.datagrams.len() - 1
            }
        };
        let d = &mut self.datagrams[idx];
        if d.total.is_some_and(|t| end > t) || (!more && d.have.last().is_some_and(|r| r.1 > end)) {
            self.datagrams.remove(idx);
            return Offered::Dropped("fragments disagree on the datagram's length");
        }
        d.fragments += 1;
        if offset == 0 {
            d.header.clear();
            d.header.extend_from_slice(&packet[..ihl]);
        }
        if !more {
            d.total = Some(end);
        }
        if d.payload.len() < end {
            d.payload.resize(end, 0);
        }
        d.payload[offset..end].copy_from_slice(data);
        insert_range(&mut d.have, (offset, end));
        let complete =
            d.total.is_some_and(|t| d.have.as_slice() == [(0, t)]) && !d.header.is_empty();
        if !complete {
            return Offered::Held {
                fragments: d.fragments,
                offset,
            };
        }
        let d = self.datagrams.remove(idx);
        rebuild(&mut self.whole, &d.header, &d.payload);
        Offered::Complete {
            fragments: d.fragments,
            bytes: self.whole.len(),
        }
    }

    /// The datagram the last [`offer`](Self::offer) completed.
    pub fn datagram(&self) -> &[u8] {
        &self.whole
    }

    /// Gives up datagrams older than [`TIMEOUT`].
    pub fn expire(&mut self, now: Instant) {
        let before = self.datagrams.len();
        self.datagrams.retain(|d| now - d.started < TIMEOUT);
        self.expired += (before - self.datagrams.len()) as u64;
    }

    /// When the oldest datagram times out.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.datagrams.iter().map(|d| d.started + TIMEOUT).min()
    }
}

fn insert_range(have: &mut Vec<(usize, usize)>, new: (usize, usize)) {
    have.push(new);
    have.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(have.len());
    for &(a, b) in have.iter() {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    *have = merged;
}

/// One packet from the first fragment's header and the whole payload: no fragment
/// flags, the new length, a fresh header checksum.
fn rebuild(out: &mut Vec<u8>, header: &[u8], payload: &[u8]) {
    out.clear();
    out.extend_from_slice(header);
    out.extend_from_slice(payload);
    let total = out.len() as u16;
    out[2..4].copy_from_slice(&total.to_be_bytes());
    out[6] = 0;
    out[7] = 0;
    out[10] = 0;
    out[11] = 0;
    let mut sum: u32 = 0;
    for pair in out[..header.len()].chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    out[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 packet of `payload`, cut into fragments of `size` bytes (a multiple of 8).
    fn fragments(payload: &[u8], size: usize) -> Vec<Vec<u8>> {
        payload
            .chunks(size)
            .enumerate()
            .map(|(i, chunk)| {
                let offset = i * size;
                let more = offset + chunk.len() < payload.len();
                let mut p = vec![
                    0x45, 0, 0, 0, 0x12, 0x34, 0, 0, 64, 17, 0, 0, 10, 77, 0, 1, 10, 77, 0, 2,
                ];
                let total = (20 + chunk.len()) as u16;
                p[2..4].copy_from_slice(&total.to_be_bytes());
                let fo = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
                p[6..8].copy_from_slice(&fo.to_be_bytes());
                p.extend_from_slice(chunk);
                p
            })
            .collect()
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
        let whole = r.datagram();
        let ip = etherparse::Ipv4Slice::from_slice(whole).expect("a valid header");
        assert!(!ip.is_payload_fragmented());
        assert_eq!(ip.payload().payload, &payload[..]);
        assert_eq!(
            ip.header().to_header().calc_header_checksum(),
            ip.header().header_checksum()
        );
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
        r.expire(t0 + TIMEOUT);
        assert!(r.datagrams.is_empty());
        assert_eq!(r.next_expiry(), None);
    }

    #[test]
    fn bad_fragments_are_dropped_with_a_reason() {
        let mut r = Reassembly::default();
        let mut f = fragments(&[1u8; 100], 56).remove(0);
        // 56 is a multiple of 8; make it 50: a middle fragment that is not.
        f.truncate(70);
        f[2..4].copy_from_slice(&70u16.to_be_bytes());
        assert!(matches!(r.offer(Instant::ZERO, &f), Offered::Dropped(_)));
        let mut far = fragments(&[1u8; 16], 8).remove(1);
        far[6..8].copy_from_slice(&0x1fffu16.to_be_bytes());
        assert!(matches!(r.offer(Instant::ZERO, &far), Offered::Dropped(_)));
    }
}
