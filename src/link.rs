//! The link model: what the network between synack and its peer does to packets (loss,
//! delay, jitter, reordering, duplication, corruption, a rate limit), in both directions,
//! reproducible from a seed. This machine's kernel has no netem; synack brings its own.
//!
//! [`Link`] is sans-IO and knows nothing of the capture: a packet enters it going one
//! way ([`Link::enter`], which says what will happen to it, in words for the capture), and
//! comes out when it is due ([`Link::take_due`]), perhaps twice, perhaps with a bit
//! flipped, or never. Drivers put it between the wire and the node: on `serve` between
//! the TUN device and the node, in the simulation between the two nodes. smoltcp's
//! `phy::FaultInjector` has loss, corruption and a rate limit, but no delay or reordering.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use smoltcp::time::{Duration, Instant};

use crate::observe::Direction;

/// A reordered packet is held this long past its time, so the packets after it overtake
/// it (netem's reordering, from the other side: here the chosen packet is the late one).
const REORDER_HOLD: Duration = Duration::from_millis(5);

/// The most packets held at once in each direction; past it a held packet is lost (a
/// queue that overflows drops, as a router's does).
const MAX_HELD: usize = 4096;

/// What to do to packets, in percent and milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultConfig {
    pub loss: f64,
    pub delay_ms: u64,
    pub jitter_ms: u64,
    pub reorder: f64,
    pub duplicate: f64,
    pub corrupt: f64,
    /// Link rate in kbit/s; packets queue behind each other at this speed.
    pub rate_kbit: Option<u64>,
    pub seed: u64,
}

impl FaultConfig {
    pub fn is_none(&self) -> bool {
        self.loss == 0.0
            && self.delay_ms == 0
            && self.jitter_ms == 0
            && self.reorder == 0.0
            && self.duplicate == 0.0
            && self.corrupt == 0.0
            && self.rate_kbit.is_none()
    }

    /// One line for the start-up banner: what is in force.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let pct = |name: &str, v: f64| (v > 0.0).then(|| format!("{name} {v}%"));
        parts.extend(pct("loss", self.loss));
        if self.delay_ms > 0 {
            parts.push(format!("delay {} ms", self.delay_ms));
        }
        if self.jitter_ms > 0 {
            parts.push(format!("jitter {} ms", self.jitter_ms));
        }
        parts.extend(pct("reorder", self.reorder));
        parts.extend(pct("duplicate", self.duplicate));
        parts.extend(pct("corrupt", self.corrupt));
        if let Some(r) = self.rate_kbit {
            parts.push(format!("rate {r} kbit/s"));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ") + " (each way)"
        }
    }
}

/// What the faults did, for the summary and `/stats`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FaultCounters {
    pub lost: u64,
    /// Of `lost`, those going `Direction::Out` (away from the node the link is attached
    /// to): the ones that node's capture shows, since it records them as they leave.
    pub lost_out: u64,
    pub delayed: u64,
    pub reordered: u64,
    pub duplicated: u64,
    pub corrupted: u64,
}

/// xorshift64* seeded through splitmix64: small, fast, and the same on every machine.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// True with probability `pct` percent.
    fn chance(&mut self, pct: f64) -> bool {
        pct > 0.0 && ((self.next() >> 11) as f64 / (1u64 << 53) as f64) * 100.0 < pct
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// The fate of one packet.
#[derive(Debug, Default)]
struct Verdict {
    lost: bool,
    /// Flip one bit at this offset.
    corrupt_at: Option<usize>,
    duplicate: bool,
    /// Held until then, if later than now.
    due: Option<Instant>,
    reordered: bool,
    /// The hold is the link's constant delay and nothing more: not worth a comment on
    /// every packet.
    plain_delay: bool,
}

/// One direction's randomness and queue.
struct Way {
    rng: Rng,
    /// The packets on the link, the one due first on top: taking it and holding one
    /// cost O(log n), however many a long delay at a high rate holds (thousands), where
    /// the driver takes due packets after every packet it reads.
    held: BinaryHeap<Reverse<Held>>,
    /// When the link is next free to start sending (the rate limit's queue).
    link_free: Instant,
    /// Packets held so far: each one's place in the order of arrival, which decides
    /// between packets due at the same time.
    arrivals: u64,
}

/// A packet on the link, ordered by when it is due, then by arrival.
struct Held {
    due: Instant,
    arrival: u64,
    data: Vec<u8>,
    /// What happened to it on the way, for the receiving end's capture.
    remark: Option<String>,
}

impl Ord for Held {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.arrival).cmp(&(other.due, other.arrival))
    }
}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Equal when the order says so: no two held packets share an arrival.
impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Held {}

/// A packet coming out of the link.
pub struct Arrival {
    pub data: Vec<u8>,
    /// What the link did to it, in words (inbound captures put it in the comment).
    pub remark: Option<String>,
}

/// What the link will do with a packet that just entered it.
#[derive(Debug, Default)]
pub struct Entered {
    /// In words, for the sending end's capture; `None` when nothing worth saying.
    pub remark: Option<String>,
    pub lost: bool,
}

impl Way {
    fn new(seed: u64) -> Self {
        Way {
            rng: Rng::new(seed),
            held: BinaryHeap::new(),
            link_free: Instant::ZERO,
            arrivals: 0,
        }
    }

    /// Draws a packet's fate. The draws happen in a fixed order, whatever the outcome,
    /// so one seed gives one sequence of fates.
    fn judge(&mut self, cfg: &FaultConfig, now: Instant, len: usize) -> Verdict {
        let lost = self.rng.chance(cfg.loss);
        let corrupt = self.rng.chance(cfg.corrupt);
        let corrupt_pos = self.rng.below(len.saturating_sub(20) as u64) as usize + 20;
        let duplicate = self.rng.chance(cfg.duplicate);
        let reordered = self.rng.chance(cfg.reorder);
        let jitter = self.rng.below(cfg.jitter_ms * 1000 + 1);
        let mut due = now;
        if let Some(kbit) = cfg.rate_kbit {
            // Serialisation: len bytes at kbit/s, behind whatever is already queued.
            let start = self.link_free.max(now);
            let micros = (len as u64 * 8 * 1000).div_ceil(kbit.max(1));
            self.link_free = start + Duration::from_micros(micros);
            due = self.link_free;
        }
        due += Duration::from_micros(cfg.delay_ms * 1000 + jitter);
        if reordered {
            due += REORDER_HOLD;
        }
        Verdict {
            lost,
            corrupt_at: (corrupt && len > 20 && !lost).then_some(corrupt_pos),
            duplicate: duplicate && !lost,
            due: (due > now).then_some(due),
            reordered,
            plain_delay: !reordered && jitter == 0 && cfg.rate_kbit.is_none(),
        }
    }

    fn hold(&mut self, due: Instant, data: Vec<u8>, remark: Option<String>) -> Result<(), Vec<u8>> {
        if self.held.len() >= MAX_HELD {
            return Err(data);
        }
        self.arrivals += 1;
        self.held.push(Reverse(Held {
            due,
            arrival: self.arrivals,
            data,
            remark,
        }));
        Ok(())
    }

    /// The held packet due first, if it is due by `now`.
    fn take_due(&mut self, now: Instant) -> Option<Held> {
        if self.next_due()? > now {
            return None;
        }
        self.held.pop().map(|Reverse(h)| h)
    }

    fn next_due(&self) -> Option<Instant> {
        self.held.peek().map(|Reverse(h)| h.due)
    }
}

/// The link: see the module's documentation. `Direction::In` is towards the node the
/// link is attached to (from the TUN on `serve`; from the client to the server in the
/// simulation), `Direction::Out` away from it.
pub struct Link {
    cfg: FaultConfig,
    inbound: Way,
    outbound: Way,
    counters: FaultCounters,
    spare: Vec<Vec<u8>>,
}

fn count(counters: &mut FaultCounters, v: &Verdict) {
    counters.lost += u64::from(v.lost);
    counters.corrupted += u64::from(v.corrupt_at.is_some());
    counters.duplicated += u64::from(v.duplicate);
    counters.reordered += u64::from(v.reordered);
    counters.delayed += u64::from(v.due.is_some() && !v.reordered);
}

impl Link {
    pub fn new(cfg: FaultConfig) -> Self {
        Link {
            cfg,
            inbound: Way::new(cfg.seed ^ 0x1111),
            outbound: Way::new(cfg.seed ^ 0x2222),
            counters: FaultCounters::default(),
            spare: Vec::new(),
        }
    }

    /// No fault is configured: packets pass untouched and at once, and a driver may skip
    /// the link altogether (no copy).
    pub fn is_transparent(&self) -> bool {
        self.cfg.is_none()
    }

    pub fn config(&self) -> &FaultConfig {
        &self.cfg
    }

    pub fn counters(&self) -> FaultCounters {
        self.counters
    }

    fn way(&mut self, dir: Direction) -> &mut Way {
        match dir {
            Direction::In => &mut self.inbound,
            Direction::Out => &mut self.outbound,
        }
    }

    /// A packet enters the link going `dir` at `now`. It comes out of
    /// [`take_due`](Self::take_due) when the link says (at once, if nothing holds it),
    /// possibly twice or with a bit flipped, or never.
    pub fn enter(&mut self, dir: Direction, now: Instant, packet: &[u8]) -> Entered {
        let cfg = self.cfg;
        let verdict = self.way(dir).judge(&cfg, now, packet.len());
        count(&mut self.counters, &verdict);
        if verdict.lost && dir == Direction::Out {
            self.counters.lost_out += 1;
        }
        let said = verdict.said(now);
        if verdict.lost {
            return Entered {
                remark: said,
                lost: true,
            };
        }
        let mut data = self.spare.pop().unwrap_or_default();
        data.clear();
        data.extend_from_slice(packet);
        if let Some(at) = verdict.corrupt_at {
            data[at] ^= 1 << (at % 8);
        }
        let due = verdict.due.unwrap_or(now);
        let heard = verdict.heard(now);
        // The duplicate comes out right behind the original: same time, later arrival.
        let copy = verdict.duplicate.then(|| {
            let mut copy = self.spare.pop().unwrap_or_default();
            copy.clear();
            copy.extend_from_slice(&data);
            let remark = match &heard {
                Some(h) => format!("{h}; the link's duplicate of the packet before (--duplicate)"),
                None => "fault: the link's duplicate of the packet before (--duplicate)".into(),
            };
            (copy, remark)
        });
        let lost = match self.way(dir).hold(due, data, heard) {
            Ok(()) => false,
            Err(data) => {
                self.spare.push(data);
                self.counters.lost += 1;
                true
            }
        };
        if let Some((copy, remark)) = copy
            && let Err(copy) = self.way(dir).hold(due, copy, Some(remark))
        {
            self.spare.push(copy);
            self.counters.lost += 1;
        }
        Entered { remark: said, lost }
    }

    /// A packet that has come out of the link going `dir` by `now`, in order.
    pub fn take_due(&mut self, dir: Direction, now: Instant) -> Option<Arrival> {
        let held = self.way(dir).take_due(now)?;
        Some(Arrival {
            data: held.data,
            remark: held.remark,
        })
    }

    /// Gives an arrival's buffer back for reuse.
    pub fn recycle(&mut self, arrival: Arrival) {
        if self.spare.len() < MAX_HELD {
            self.spare.push(arrival.data);
        }
    }

    /// When a held packet is next due, either way.
    pub fn next_due(&self) -> Option<Instant> {
        [self.inbound.next_due(), self.outbound.next_due()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Packets on the link now, either way.
    pub fn in_flight(&self) -> usize {
        self.inbound.held.len() + self.outbound.held.len()
    }
}

impl Verdict {
    /// What the sending end's capture says: what the link will do.
    fn said(&self, now: Instant) -> Option<String> {
        if self.lost {
            return Some("fault: lost on the link, it never reaches the peer (--loss)".into());
        }
        let mut parts = Vec::new();
        if let Some(due) = self.due.filter(|_| !self.plain_delay) {
            let ms = (due - now).total_micros() as f64 / 1000.0;
            if self.reordered {
                parts.push(format!(
                    "the link holds it {ms:.1} ms so later packets overtake it (--reorder)"
                ));
            } else {
                parts.push(format!(
                    "the link delays it {ms:.1} ms (--delay/--jitter/--rate)"
                ));
            }
        }
        if self.duplicate {
            parts.push("the link duplicates it (--duplicate)".to_owned());
        }
        if let Some(at) = self.corrupt_at {
            parts.push(format!("the link flips a bit at byte {at} (--corrupt)"));
        }
        (!parts.is_empty()).then(|| format!("fault: {}", parts.join("; ")))
    }

    /// What the receiving end's capture says: what happened on the way.
    fn heard(&self, now: Instant) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(due) = self.due.filter(|_| !self.plain_delay) {
            let ms = (due - now).total_micros() as f64 / 1000.0;
            if self.reordered {
                parts.push(format!(
                    "held {ms:.1} ms by the link, overtaken by later packets (--reorder)"
                ));
            } else {
                parts.push(format!("{ms:.1} ms on the link (--delay/--jitter/--rate)"));
            }
        }
        if let Some(at) = self.corrupt_at {
            parts.push(format!(
                "a bit flipped at byte {at} on the link (--corrupt): the checksum catches it"
            ));
        }
        (!parts.is_empty()).then(|| format!("fault: {}", parts.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(f: impl FnOnce(&mut FaultConfig)) -> FaultConfig {
        let mut c = FaultConfig {
            seed: 1,
            ..FaultConfig::default()
        };
        f(&mut c);
        c
    }

    fn drain(link: &mut Link, dir: Direction, now: Instant) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| link.take_due(dir, now).map(|a| a.data)).collect()
    }

    #[test]
    fn a_transparent_link_passes_everything_at_once() {
        let mut link = Link::new(FaultConfig::default());
        assert!(link.is_transparent());
        let e = link.enter(Direction::In, Instant::ZERO, &[1; 40]);
        assert!(!e.lost && e.remark.is_none());
        assert_eq!(
            drain(&mut link, Direction::In, Instant::ZERO),
            vec![vec![1; 40]]
        );
    }

    #[test]
    fn delay_holds_packets_in_order_until_due() {
        let mut link = Link::new(cfg(|c| c.delay_ms = 10));
        let t0 = Instant::from_millis(1000);
        link.enter(Direction::Out, t0, &[1; 40]);
        link.enter(Direction::Out, t0 + Duration::from_millis(1), &[2; 40]);
        assert!(drain(&mut link, Direction::Out, t0 + Duration::from_millis(9)).is_empty());
        assert_eq!(link.next_due(), Some(t0 + Duration::from_millis(10)));
        let out = drain(&mut link, Direction::Out, t0 + Duration::from_millis(11));
        assert_eq!(out, vec![vec![1; 40], vec![2; 40]]);
        assert!(drain(&mut link, Direction::In, t0 + Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn loss_is_said_and_the_packet_never_comes_out() {
        let mut link = Link::new(cfg(|c| c.loss = 100.0));
        let e = link.enter(Direction::In, Instant::ZERO, &[1; 40]);
        assert!(e.lost);
        assert!(e.remark.unwrap().contains("--loss"));
        assert!(drain(&mut link, Direction::In, Instant::from_secs(10)).is_empty());
        assert_eq!(link.counters().lost, 1);
    }

    #[test]
    fn duplicates_come_out_twice_the_second_one_remarked() {
        let mut link = Link::new(cfg(|c| c.duplicate = 100.0));
        link.enter(Direction::In, Instant::ZERO, &[9; 40]);
        let a = link.take_due(Direction::In, Instant::ZERO).unwrap();
        let b = link.take_due(Direction::In, Instant::ZERO).unwrap();
        assert_eq!(a.data, b.data);
        assert!(a.remark.is_none());
        assert!(b.remark.unwrap().contains("duplicate"));
    }

    /// A 40-byte packet that says which it was.
    fn numbered(i: u16) -> Vec<u8> {
        i.to_be_bytes().repeat(20)
    }

    fn number(data: &[u8]) -> u16 {
        u16::from_be_bytes([data[0], data[1]])
    }

    #[test]
    fn packets_due_together_come_out_in_arrival_order() {
        // A constant delay, a thousand packets in the same instant: none overtakes.
        let mut link = Link::new(cfg(|c| c.delay_ms = 5));
        let t0 = Instant::from_millis(1000);
        for i in 0..1000 {
            link.enter(Direction::In, t0, &numbered(i));
        }
        assert_eq!(link.in_flight(), 1000);
        let out = drain(&mut link, Direction::In, t0 + Duration::from_millis(5));
        let order: Vec<u16> = out.iter().map(|d| number(d)).collect();
        assert_eq!(order, (0..1000).collect::<Vec<_>>());
        // Duplicated, each copy right behind its original.
        let mut link = Link::new(cfg(|c| c.duplicate = 100.0));
        for i in 0..100 {
            link.enter(Direction::In, t0, &numbered(i));
        }
        let out: Vec<(u16, bool)> = std::iter::from_fn(|| link.take_due(Direction::In, t0))
            .map(|a| (number(&a.data), a.remark.is_some()))
            .collect();
        let expected: Vec<(u16, bool)> = (0..100).flat_map(|i| [(i, false), (i, true)]).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn reordered_packets_come_out_by_due_time_then_by_arrival() {
        let mut link = Link::new(cfg(|c| {
            c.delay_ms = 2;
            c.reorder = 30.0;
        }));
        let t0 = Instant::from_millis(1000);
        let mut expected = Vec::new();
        for i in 0..300u16 {
            let at = t0 + Duration::from_micros(500 * u64::from(i));
            let entered = link.enter(Direction::Out, at, &numbered(i));
            let reordered = entered.remark.is_some_and(|r| r.contains("--reorder"));
            let hold = if reordered {
                REORDER_HOLD
            } else {
                Duration::ZERO
            };
            expected.push((at + Duration::from_millis(2) + hold, i));
        }
        expected.sort();
        // Taken as time goes on, 100 µs at a time: each when due, in that order.
        let step = Duration::from_micros(100);
        let mut got = Vec::new();
        let mut now = t0;
        while got.len() < expected.len() && now < t0 + Duration::from_secs(1) {
            now += step;
            while let Some(a) = link.take_due(Direction::Out, now) {
                let i = number(&a.data);
                let due = expected.iter().find(|e| e.1 == i).unwrap().0;
                assert!(
                    due <= now && now < due + step,
                    "{i} due {due}, out at {now}"
                );
                got.push(i);
            }
        }
        let expected: Vec<u16> = expected.iter().map(|e| e.1).collect();
        assert_eq!(got, expected);
        assert!(link.counters().reordered > 50);
        assert!(got.windows(2).any(|w| w[0] > w[1]), "reordering reorders");
        assert_eq!((link.in_flight(), link.next_due()), (0, None));
    }

    #[test]
    fn one_seed_gives_one_history() {
        let run = |seed| {
            let mut link = Link::new(FaultConfig {
                loss: 30.0,
                reorder: 20.0,
                jitter_ms: 5,
                seed,
                ..FaultConfig::default()
            });
            (0..200u8)
                .map(|i| {
                    link.enter(Direction::Out, Instant::from_millis(i64::from(i)), &[i; 60])
                        .lost
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }
}
