//! Faults on the link: loss, delay, jitter, reordering, duplication, corruption and a rate
//! limit, in both directions, reproducible from a seed.
//!
//! [`Faults`] is a device middleware between the capture tap and the stack (smoltcp's
//! `phy::FaultInjector` is the model; it has loss, corruption and a rate limit but no delay
//! or reordering). The tap below sees every packet as it crosses the wire, so each one a
//! fault touches is still in the capture, and its comment says what was done to it:
//! - inbound, the tap records the packet as it arrived, then the fault decides whether
//!   and when the stack sees it;
//! - outbound, a lost packet is recorded as the stack sent it but never written to the
//!   wire; a held one is recorded when it is finally written.
//!
//! With no fault configured every packet passes straight through, untouched and uncopied.

use smoltcp::phy::{self, Device, DeviceCapabilities};
use smoltcp::time::{Duration, Instant};

use crate::capture::{Tap, TapRx, TapTx, Withheld};
use crate::device::{DeviceCounters, DeviceError, Link};

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

impl Verdict {
    /// The comment for the packet as the capture records it. An inbound packet is
    /// recorded once, as it arrived, so its comment says it is delivered twice; an
    /// outbound duplicate is recorded as its own packet (see `duplicate_remark`).
    fn remark(&self, now: Instant, inbound: bool) -> Option<String> {
        if self.lost {
            return Some("fault: lost (--loss)".into());
        }
        let mut parts = Vec::new();
        if inbound && self.duplicate {
            parts.push("the stack gets it twice (--duplicate)".to_owned());
        }
        if let Some(at) = self.corrupt_at {
            parts.push(format!(
                "corrupted: one bit flipped at byte {at} (--corrupt)"
            ));
        }
        if let Some(due) = self.due.filter(|_| !self.plain_delay) {
            let ms = (due - now).total_micros() as f64 / 1000.0;
            if self.reordered {
                parts.push(format!(
                    "held {ms:.1} ms so later packets overtake it (--reorder)"
                ));
            } else {
                parts.push(format!("held {ms:.1} ms (--delay/--jitter/--rate)"));
            }
        }
        (!parts.is_empty()).then(|| format!("fault: {}", parts.join("; ")))
    }
}

/// One direction's randomness and queue.
struct Way {
    rng: Rng,
    held: Vec<Held>,
    /// When the link is next free to start sending (the rate limit's queue).
    link_free: Instant,
    /// Packets judged, to keep held ones in order of arrival when due together.
    judged: u64,
}

struct Held {
    due: Instant,
    order: u64,
    /// Recorded, never sent: a loss whose turn on the wire has come.
    lost: bool,
    data: Vec<u8>,
    remark: Option<String>,
    /// Inbound: what the packet tells the stack, given when it is delivered.
    withheld: Withheld,
}

impl Way {
    fn new(seed: u64) -> Self {
        Way {
            rng: Rng::new(seed),
            held: Vec::new(),
            link_free: Instant::ZERO,
            judged: 0,
        }
    }

    /// Draws a packet's fate. The draws happen in a fixed order, whatever the outcome,
    /// so one seed gives one sequence of fates.
    fn judge(&mut self, cfg: &FaultConfig, now: Instant, len: usize) -> Verdict {
        self.judged += 1;
        let lost = self.rng.chance(cfg.loss);
        let corrupt = self.rng.chance(cfg.corrupt);
        let corrupt_pos = self.rng.below(len.saturating_sub(20) as u64) as usize + 20;
        let duplicate = self.rng.chance(cfg.duplicate);
        let reordered = self.rng.chance(cfg.reorder);
        let jitter = self.rng.below(cfg.jitter_ms * 1000 + 1);
        // A lost packet still gets its time: an outbound one is recorded when it would
        // have reached the wire, in its place among the others.
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

    fn hold(
        &mut self,
        due: Instant,
        data: &[u8],
        remark: Option<String>,
        withheld: Withheld,
    ) -> bool {
        if self.held.len() >= MAX_HELD {
            return false;
        }
        self.held.push(Held {
            due,
            order: self.judged,
            lost: false,
            data: data.to_vec(),
            remark,
            withheld,
        });
        true
    }

    /// The held packet due first, if it is due by `now`.
    fn take_due(&mut self, now: Instant) -> Option<Held> {
        let i = (0..self.held.len())
            .filter(|&i| self.held[i].due <= now)
            .min_by_key(|&i| (self.held[i].due, self.held[i].order))?;
        Some(self.held.swap_remove(i))
    }

    fn next_due(&self) -> Option<Instant> {
        self.held.iter().map(|h| h.due).min()
    }
}

/// The fault injector: see the module's documentation.
pub struct Faults<L> {
    out: Egress<L>,
    inbound: Way,
    /// The inbound packet being handed to the stack.
    delivering: Vec<u8>,
    /// An inbound packet was taken off the wire without reaching the stack: the stack's
    /// ingress loop should ask again rather than conclude the wire is empty.
    swallowed: bool,
}

/// What an outbound packet goes through: its faults, then the tap and the wire. Apart
/// from the rest so that a reply's token can hold it while an inbound packet is lent out.
pub struct Egress<L> {
    tap: Tap<L>,
    cfg: FaultConfig,
    way: Way,
    counters: FaultCounters,
    /// The outbound packet the stack is writing.
    buf: Vec<u8>,
}

impl<L> Faults<L> {
    pub fn new(tap: Tap<L>, cfg: FaultConfig) -> Self {
        Faults {
            out: Egress {
                tap,
                cfg,
                way: Way::new(cfg.seed ^ 0x2222),
                counters: FaultCounters::default(),
                buf: Vec::new(),
            },
            inbound: Way::new(cfg.seed ^ 0x1111),
            delivering: Vec::new(),
            swallowed: false,
        }
    }

    pub fn tap(&self) -> &Tap<L> {
        &self.out.tap
    }

    pub fn tap_mut(&mut self) -> &mut Tap<L> {
        &mut self.out.tap
    }

    pub fn fault_counters(&self) -> FaultCounters {
        self.out.counters
    }

    /// Whether a packet was taken off the wire since the last call without reaching
    /// the stack (lost, or held for later).
    pub fn take_swallowed(&mut self) -> bool {
        std::mem::take(&mut self.swallowed)
    }

    /// When a held packet is next due, either way.
    pub fn next_due(&self) -> Option<Instant> {
        [self.inbound.next_due(), self.out.way.next_due()]
            .into_iter()
            .flatten()
            .min()
    }
}

fn count(counters: &mut FaultCounters, v: &Verdict) {
    counters.lost += u64::from(v.lost);
    counters.corrupted += u64::from(v.corrupt_at.is_some());
    counters.duplicated += u64::from(v.duplicate);
    counters.reordered += u64::from(v.reordered);
    counters.delayed += u64::from(v.due.is_some() && !v.reordered);
}

impl<L: Device> Faults<L> {
    /// Writes held outbound packets that are due to the wire (the tap records each then).
    pub fn release(&mut self, now: Instant) {
        release(&mut self.out.tap, &mut self.out.way, now);
    }

    /// The stack's side of a delivery: the packet in `delivering`, and a token for its
    /// reply that goes through the outbound faults.
    fn deliver(
        &mut self,
        now: Instant,
    ) -> (FaultRx<'_, TapRx<'_, L::RxToken<'_>>>, FaultTx<'_, L>) {
        let reply = FaultTx::Judged(JudgedTx {
            out: &mut self.out,
            now,
        });
        (FaultRx::Held(&self.delivering), reply)
    }
}

fn release<L: Device>(tap: &mut Tap<L>, way: &mut Way, now: Instant) {
    while let Some(held) = way.take_due(now) {
        if held.lost {
            tap.record_unsent(now, &held.data, held.remark.unwrap_or_default());
            continue;
        }
        let Some(tx) = tap.transmit(now) else {
            // The device cannot take it now: keep it for the next turn.
            way.held.push(held);
            return;
        };
        let tx = match held.remark {
            Some(r) => tx.with_remark(r),
            None => tx,
        };
        phy::TxToken::consume(tx, held.data.len(), |buf| buf.copy_from_slice(&held.data));
    }
}

impl<L: Device> Device for Faults<L> {
    type RxToken<'a>
        = FaultRx<'a, TapRx<'a, L::RxToken<'a>>>
    where
        Self: 'a;
    type TxToken<'a>
        = FaultTx<'a, L>
    where
        Self: 'a;

    fn receive(&mut self, now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if self.out.cfg.is_none() {
            let (rx, tx) = self.out.tap.receive(now)?;
            return Some((FaultRx::Pass(rx), FaultTx::Pass(tx)));
        }
        if let Some(held) = self.inbound.take_due(now) {
            self.delivering = held.data;
            self.out.tap.release_inbound(held.withheld);
            return Some(self.deliver(now));
        }
        let (rx, _) = self.out.tap.receive(now)?;
        let (way, cfg, buf) = (&mut self.inbound, &self.out.cfg, &mut self.delivering);
        let verdict = rx.consume_remarked(|packet| {
            let verdict = way.judge(cfg, now, packet.len());
            buf.clear();
            buf.extend_from_slice(packet);
            let remark = verdict.remark(now, true);
            (verdict, remark)
        });
        count(&mut self.out.counters, &verdict);
        if verdict.lost {
            // The stack never sees it: nor should its journal.
            self.out.tap.forget_inbound();
            self.swallowed = true;
            return None;
        }
        if let Some(at) = verdict.corrupt_at {
            self.delivering[at] ^= 1 << (at % 8);
        }
        let due = verdict.due.unwrap_or(now);
        if verdict.duplicate
            && !self
                .inbound
                .hold(due, &self.delivering, None, Withheld::default())
        {
            self.out.counters.lost += 1;
        }
        if verdict.due.is_some() {
            if self.inbound.held.len() < MAX_HELD {
                let withheld = self.out.tap.withhold_inbound();
                let _ = self.inbound.hold(due, &self.delivering, None, withheld);
            } else {
                // The queue is full: it overflows, as a router's does.
                self.out.tap.forget_inbound();
                self.out.counters.lost += 1;
            }
            self.swallowed = true;
            return None;
        }
        Some(self.deliver(now))
    }

    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
        if self.out.cfg.is_none() {
            return Some(FaultTx::Pass(self.out.tap.transmit(now)?));
        }
        Some(FaultTx::Judged(JudgedTx {
            out: &mut self.out,
            now,
        }))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.out.tap.capabilities()
    }
}

impl<L: Link> Link for Faults<L> {
    fn wait(&mut self, timeout: Option<std::time::Duration>) -> std::io::Result<()> {
        self.out.tap.wait(timeout)
    }
    fn take_error(&mut self) -> Option<DeviceError> {
        self.out.tap.take_error()
    }
    fn counters(&self) -> DeviceCounters {
        self.out.tap.counters()
    }
}

pub enum FaultRx<'a, T> {
    Pass(T),
    Held(&'a [u8]),
}

impl<T: phy::RxToken> phy::RxToken for FaultRx<'_, T> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        match self {
            FaultRx::Pass(t) => t.consume(f),
            FaultRx::Held(packet) => f(packet),
        }
    }
}

pub enum FaultTx<'a, L: Device + 'a> {
    Pass(TapTx<'a, L::TxToken<'a>>),
    Judged(JudgedTx<'a, L>),
}

/// An outbound packet that goes through the faults once the stack has written it.
pub struct JudgedTx<'a, L> {
    out: &'a mut Egress<L>,
    now: Instant,
}

impl<'a, L: Device> phy::TxToken for FaultTx<'a, L> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let j = match self {
            FaultTx::Pass(t) => return t.consume(len, f),
            FaultTx::Judged(j) => j,
        };
        let (j, now) = (j.out, j.now);
        j.buf.clear();
        j.buf.resize(len, 0);
        let result = f(&mut j.buf);
        let verdict = j.way.judge(&j.cfg, now, len);
        count(&mut j.counters, &verdict);
        let remark = verdict.remark(now, false);
        let packet = &mut j.buf[..];
        if verdict.lost {
            match verdict.due {
                Some(due) if j.way.hold(due, packet, remark.clone(), Withheld::default()) => {
                    if let Some(last) = j.way.held.last_mut() {
                        last.lost = true;
                    }
                }
                _ => j.tap.record_unsent(now, packet, remark.unwrap_or_default()),
            }
            release(&mut j.tap, &mut j.way, now);
            return result;
        }
        if let Some(at) = verdict.corrupt_at {
            packet[at] ^= 1 << (at % 8);
        }
        let due = verdict.due.unwrap_or(now);
        if verdict.duplicate {
            let copy = remark.clone().map_or_else(
                || "fault: duplicate (--duplicate)".to_owned(),
                |r| format!("{r}; duplicate (--duplicate)"),
            );
            if !j.way.hold(due, packet, Some(copy), Withheld::default()) {
                j.counters.lost += 1;
            }
        }
        if !j.way.hold(due, packet, remark, Withheld::default()) {
            j.counters.lost += 1;
        }
        // What is due now (this packet, if it is not held) goes out in order.
        release(&mut j.tap, &mut j.way, now);
        result
    }
}
