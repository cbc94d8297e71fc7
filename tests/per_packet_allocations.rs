//! Floods that must cost no heap allocation per packet, counted by the binary's counting
//! allocator: 8-byte IPv4 fragments with holes between them (each one an attacker's
//! 28-byte packet), and a link that holds thousands of packets for a long delay.
//!
//! One test in this file: the count is process-wide, and a second test running beside it
//! (or the harness reporting it) would allocate inside the window measured.

use smoltcp::time::{Duration, Instant};
use synack::alloc_count::{CountingAllocator, allocations};
use synack::app::App;
use synack::clock::VIRTUAL_EPOCH;
use synack::journey::Journal;
use synack::link::{FaultConfig, Link};
use synack::node::{Config, Node};
use synack::observe::Direction;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// An 8-byte fragment of datagram `id` at `offset`, more to come, from 10.77.0.1 to us,
/// with a right header checksum.
fn fragment(id: u16, offset: usize) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[..20].copy_from_slice(&[
        0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 77, 0, 1, 10, 77, 0, 2,
    ]);
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&((offset / 8) as u16 | 0x2000).to_be_bytes());
    let mut sum: u32 = p[..20]
        .chunks_exact(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p
}

/// Allocations made by `f`.
fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = allocations().expect("the counting allocator is installed");
    f();
    allocations().unwrap() - before
}

#[test]
fn a_fragment_flood_and_a_long_delay_allocate_nothing_per_packet() {
    // Fragments at every other offset, for datagram after datagram: each one is held
    // until it would leave too many holes, then discarded, and its buffer serves again.
    let cfg = Config {
        dns_port: None,
        notes: true,
        ..Config::default()
    };
    let mut node = Node::new(cfg, App::default(), Journal::silent(), VIRTUAL_EPOCH).unwrap();
    let mut flood = (0..).map(|i: usize| fragment((i / 2000) as u16, (i % 2000) * 16));
    let mut send = |n: usize, node: &mut Node| {
        for p in flood.by_ref().take(n) {
            node.handle_packet(VIRTUAL_EPOCH, &p);
            assert!(node.next_transmit().is_none());
        }
    };
    // Warm up: the buffers every datagram and note needs, made once.
    send(40_000, &mut node);
    let n = allocations_in(|| send(40_000, &mut node));
    assert_eq!(n, 0, "allocations for 40,000 fragments");
    let c = node.counters();
    assert_eq!(c.packets_in, 80_000);
    assert!(c.dropped_malformed > 1000, "datagrams discarded: {c:?}");
    assert_eq!(c.fragments_reassembled, 0);

    // A 25 ms delay with a packet every 7 µs: 3,500 on the link, one in and one out at
    // a time, as the TUN driver does.
    let mut link = Link::new(FaultConfig {
        delay_ms: 25,
        seed: 1,
        ..FaultConfig::default()
    });
    let mut now = Instant::from_secs(1);
    let packet = [0x45u8; 1500];
    let step = |n: usize, link: &mut Link, now: &mut Instant| {
        for _ in 0..n {
            *now += Duration::from_micros(7);
            link.enter(Direction::In, *now, &packet);
            while let Some(a) = link.take_due(Direction::In, *now) {
                link.recycle(a);
            }
        }
    };
    step(10_000, &mut link, &mut now);
    assert!(link.in_flight() > 3500, "{} on the link", link.in_flight());
    let n = allocations_in(|| step(40_000, &mut link, &mut now));
    assert_eq!(n, 0, "allocations for 40,000 packets through the link");
}
