//! What the link model costs a packet as it holds more: `cargo bench --bench link`.
//!
//! A delay holds packets on the link (a 25 ms delay at the rate that keeps N on it); the
//! TUN driver enters each packet it reads and takes the due ones. The cost of a packet
//! must not grow with what is held (a heap: O(log n)); this prints nanoseconds per
//! packet at 40 and at 4000 held, and their ratio.

use std::time::Instant as Clock;

use smoltcp::time::{Duration, Instant};
use synack::link::{FaultConfig, Link};
use synack::observe::Direction;

fn nanos_per_packet(held: u64) -> f64 {
    let gap = Duration::from_micros(25_000 / held);
    let packets = 200_000u32;
    (0..3)
        .map(|_| {
            let mut link = Link::new(FaultConfig {
                delay_ms: 25,
                ..FaultConfig::default()
            });
            let mut now = Instant::from_secs(1);
            let data = [0u8; 64];
            let start = Clock::now();
            for _ in 0..packets {
                now += gap;
                let _ = link.enter(Direction::In, now, &data);
                while let Some(a) = link.take_due(Direction::In, now) {
                    link.recycle(a);
                }
            }
            start.elapsed().as_nanos() as f64 / f64::from(packets)
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let few = nanos_per_packet(40);
    let many = nanos_per_packet(4000);
    println!("link, 40 packets held:   {few:>6.0} ns/packet");
    println!(
        "link, 4000 packets held: {many:>6.0} ns/packet ({:.1}x)",
        many / few
    );
}
