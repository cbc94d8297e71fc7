//! `synack stats --plot`: one SVG with three panels over the same time axis, for the
//! busier direction of a connection (the sender of most data):
//!
//! 1. the time-sequence graph (tcptrace's, Wireshark's "Stevens" graph): each data segment
//!    a vertical bar from its first to its last sequence number at the time it passed the
//!    capture point, retransmissions in red, lost segments marked with an X, the ACK line
//!    (what the receiver has acknowledged) and the window line (how far the sender may go);
//! 2. bytes in flight (sent and not yet acknowledged, from the wire) and the receiver's
//!    advertised window, with the sender's own count where its comments give it;
//! 3. round-trip times: from the sender's comments (RTT samples, SRTT and RTO as RFC 6298
//!    keeps them) when the capture has them, otherwise the samples the wire shows (data
//!    to the ACK that covers it) and the SRTT RFC 6298 makes of them. On a logarithmic
//!    scale, so a 1 s RTO and 2 ms round trips both read.
//!
//! `Window` zooms all three into a stretch of time.

use std::fmt::Write as _;

use super::escape::xml;
use super::flows::{Connection, Seg};
use super::svg::{bytes, log_ticks, number, ticks};

const W: f64 = 1100.0;
const LEFT: f64 = 96.0;
const RIGHT: f64 = 30.0;
/// Heights of the three panels' plotting areas, and the space around each.
const SEQ_H: f64 = 380.0;
const SMALL_H: f64 = 200.0;
const PANEL_TOP: f64 = 52.0;
const PANEL_BOTTOM: f64 = 48.0;
/// The RTT scale's floor, in ms: a microsecond, the resolution of most captures' clocks.
const RTT_FLOOR_MS: f64 = 0.001;

/// The stretch of time to draw, in seconds since the capture's first packet.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    pub from: Option<f64>,
    pub to: Option<f64>,
}

/// One panel's frame: where its plotting area is, and its two scales.
struct Panel {
    top: f64,
    height: f64,
    t0: f64,
    t1: f64,
    lo: f64,
    hi: f64,
    log: bool,
}

impl Panel {
    fn x(&self, t: f64) -> f64 {
        LEFT + (t - self.t0) / (self.t1 - self.t0) * (W - LEFT - RIGHT)
    }
    fn y(&self, v: f64) -> f64 {
        let share = if self.log {
            (v.max(self.lo).ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        };
        self.top + self.height - share * self.height
    }
    fn bottom(&self) -> f64 {
        self.top + self.height
    }

    /// The frame, the grid, the tick labels and the axis titles.
    fn axes(
        &self,
        out: &mut String,
        title: &str,
        legend: &str,
        y_title: &str,
        y_label: &dyn Fn(f64, f64) -> String,
    ) {
        let (top, bottom, right) = (self.top, self.bottom(), W - RIGHT);
        let _ = writeln!(
            out,
            r##"<text x="{LEFT}" y="{}" font-weight="bold" font-size="14">{}</text><text x="{LEFT}" y="{}" font-size="12" xml:space="preserve">{legend}</text>"##,
            top - 28.0,
            xml(title),
            top - 10.0,
        );
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{top}" width="{}" height="{}" fill="none" stroke="#888"/>"##,
            right - LEFT,
            self.height
        );
        let (tt, ts) = ticks(self.t0, self.t1, 10.0);
        for t in tt {
            let x = self.x(t);
            let _ = writeln!(
                out,
                r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#eee"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
                bottom + 16.0,
                number(t, ts)
            );
        }
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#333">time since the capture's first packet (s)</text>"##,
            (LEFT + right) / 2.0,
            bottom + 34.0
        );
        let (vs, step) = if self.log {
            (log_ticks(self.lo, self.hi), 0.0)
        } else {
            ticks(self.lo, self.hi, self.height / 45.0)
        };
        for v in vs {
            let y = self.y(v);
            let _ = writeln!(
                out,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT - 6.0,
                y + 4.0,
                y_label(v, step)
            );
        }
        let (cx, cy) = (22.0, top + self.height / 2.0);
        let _ = writeln!(
            out,
            r##"<text transform="translate({cx} {cy:.1}) rotate(-90)" text-anchor="middle" fill="#333">{}</text>"##,
            xml(y_title)
        );
    }

    /// Keeps what is drawn inside the plotting area.
    fn clip(&self, out: &mut String, id: &str) {
        let _ = writeln!(
            out,
            r#"<clipPath id="{id}"><rect x="{LEFT}" y="{}" width="{}" height="{}"/></clipPath>"#,
            self.top,
            W - LEFT - RIGHT,
            self.height
        );
    }
}

/// A polyline's points, dropping a point that lands where the last one did.
#[derive(Default)]
struct Line {
    points: String,
    last: Option<(i64, i64)>,
}

impl Line {
    fn to(&mut self, x: f64, y: f64) {
        let key = ((x * 10.0) as i64, (y * 10.0) as i64);
        if self.last != Some(key) {
            let _ = write!(self.points, "{x:.1},{y:.1} ");
            self.last = Some(key);
        }
    }
    /// A step: hold the last value until `x`, then move to `y`.
    fn step(&mut self, x: f64, y: f64, before: Option<f64>) {
        if let Some(b) = before {
            self.to(x, b);
        }
        self.to(x, y);
    }
    fn draw(&self, out: &mut String, colour: &str, width: f64, clip: &str, dash: &str) {
        if !self.points.is_empty() {
            let _ = writeln!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="{width}"{dash} clip-path="url(#{clip})"/>"#,
                self.points.trim_end()
            );
        }
    }
}

/// The RFC 6298 §2 estimator (alpha 1/8, beta 1/4) over RTT samples in ms.
struct Estimator {
    srtt: Option<f64>,
    rttvar: f64,
}

impl Estimator {
    fn sample(&mut self, r: f64) -> f64 {
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2.0;
                r
            }
            Some(s) => {
                self.rttvar = 0.75 * self.rttvar + 0.25 * (s - r).abs();
                let s = 0.875 * s + 0.125 * r;
                self.srtt = Some(s);
                s
            }
        }
    }
}

/// Samples from the wire for the data `from_client` sends: (time of the ACK, ms), Karn's
/// rule as in `stats`.
fn wire_rtts(c: &Connection, data_from_client: bool) -> Vec<(f64, f64)> {
    let mut pending: std::collections::VecDeque<(u32, f64)> = Default::default();
    let mut out = Vec::new();
    let before = |a: u32, b: u32| a != b && b.wrapping_sub(a) < 1 << 31;
    for s in &c.segments {
        if s.from_client == data_from_client {
            let end = s.seq.wrapping_add(s.len);
            if s.retransmitted() {
                while pending.back().is_some_and(|&(e, _)| before(s.seq, e)) {
                    pending.pop_back();
                }
            } else if s.len > 0 && pending.back().is_none_or(|&(e, _)| before(e, end)) {
                pending.push_back((end, s.time));
            }
        } else if s.ack_flag {
            while let Some(&(e, t)) = pending.front() {
                if !(e == s.ack || before(e, s.ack)) {
                    break;
                }
                out.push((s.time, (s.time - t) * 1000.0));
                pending.pop_front();
            }
        }
    }
    out
}

/// Why a plot cannot be drawn, in words for the user.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("--from must be before --to")]
    Backwards,
    #[error(
        "the connection has no packets between {0:.3} s and {1:.3} s (it runs from {2:.3} to {3:.3} s)"
    )]
    Empty(f64, f64, f64, f64),
}

/// The part of a step series (a value that holds until the next (time, value)) to draw
/// from `t0` to `t1`: the value coming in at `t0`, the changes between, held to `t1`.
fn clipped(steps: &[(f64, f64)], t0: f64, t1: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut before = None;
    for &(t, v) in steps {
        if t < t0 {
            before = Some(v);
        } else if t <= t1 {
            if out.is_empty()
                && let Some(b) = before
            {
                out.push((t0, b));
            }
            out.push((t, v));
        }
    }
    if out.is_empty()
        && let Some(b) = before
    {
        out.push((t0, b));
    }
    if let Some(&(_, v)) = out.last() {
        out.push((t1, v));
    }
    out
}

fn draw_steps(
    out: &mut String,
    p: &Panel,
    steps: &[(f64, f64)],
    clip: &str,
    style: (&str, f64, &str),
) {
    let mut line = Line::default();
    let mut before = None;
    for &(t, v) in steps {
        let y = p.y(v);
        line.step(p.x(t), y, before);
        before = Some(y);
    }
    line.draw(out, style.0, style.1, clip, style.2);
}

fn max_of(points: &[(f64, f64)]) -> f64 {
    points.iter().map(|p| p.1).fold(0.0, f64::max)
}

/// The three panels for connection `c`, `title` naming it.
pub fn svg(c: &Connection, title: &str, window: Window) -> Result<String, PlotError> {
    let sent = |from_client: bool| -> u64 {
        c.segments
            .iter()
            .filter(|s| s.from_client == from_client)
            .map(|s| u64::from(s.len))
            .sum()
    };
    let data_from_client = sent(true) >= sent(false);
    let first = c.segments.first().map_or(0.0, |s| s.time);
    let last = c.segments.last().map_or(0.0, |s| s.time);
    let t0 = window.from.unwrap_or(first);
    let t1 = window.to.unwrap_or(last);
    if t1 < t0 {
        return Err(PlotError::Backwards);
    }
    let shown = |s: &Seg| (t0..=t1).contains(&s.time);
    if !c.segments.iter().any(shown) {
        return Err(PlotError::Empty(t0, t1, first, last));
    }
    // A single instant still gets some width.
    let t1 = t1.max(t0 + 1e-3);
    let is_data = |s: &Seg| s.from_client == data_from_client;

    // The step series, over the whole connection.
    let mut acks = Vec::new();
    let mut limits = Vec::new();
    let mut windows = Vec::new();
    let mut flight = Vec::new();
    let mut max_end: Option<u32> = None;
    let mut acked: Option<u32> = None;
    for s in &c.segments {
        if is_data(s) && (s.len > 0 || s.syn || s.fin) {
            let end = s
                .seq
                .wrapping_add(s.len + u32::from(s.syn) + u32::from(s.fin));
            if max_end.is_none_or(|m| end.wrapping_sub(m) < 1 << 31) {
                max_end = Some(end);
            }
        } else if !is_data(s) && s.ack_flag && !s.syn {
            acked = Some(s.ack);
            acks.push((s.time, f64::from(s.ack)));
            limits.push((s.time, f64::from(s.ack) + s.window as f64));
            windows.push((s.time, s.window as f64));
        }
        if let (Some(m), Some(a)) = (max_end, acked) {
            // Nothing is in flight once the ACK reaches (or passes) what was sent.
            let f = if m.wrapping_sub(a).wrapping_sub(1) < 1 << 31 {
                f64::from(m.wrapping_sub(a))
            } else {
                0.0
            };
            flight.push((s.time, f));
        }
    }
    let (acks, limits) = (clipped(&acks, t0, t1), clipped(&limits, t0, t1));
    let (windows, flight) = (clipped(&windows, t0, t1), clipped(&flight, t0, t1));
    let data: Vec<&Seg> = c
        .segments
        .iter()
        .filter(|s| is_data(s) && s.len > 0 && shown(s))
        .collect();
    let sender_counts: Vec<(f64, f64)> = c
        .segments
        .iter()
        .filter(|s| is_data(s) && shown(s))
        .filter_map(|s| Some((s.time, s.sender.as_ref()?.in_flight? as f64)))
        .collect();

    let mut seq_lo = data
        .iter()
        .map(|s| f64::from(s.seq))
        .chain(acks.iter().map(|p| p.1))
        .fold(f64::MAX, f64::min);
    let mut seq_hi = data
        .iter()
        .map(|s| f64::from(s.seq) + f64::from(s.len))
        .fold(max_of(&acks), f64::max);
    if seq_lo > seq_hi {
        (seq_lo, seq_hi) = (0.0, 1.0);
    }
    // The window line may take the scale up to twice the data's span, no further: a
    // large window would squash the data into a line at the bottom. Past that it runs
    // above the panel, as the legend says.
    let window_hi = max_of(&limits);
    let window_off_scale = window_hi > seq_hi + (seq_hi - seq_lo);
    seq_hi = window_hi.min(seq_hi + (seq_hi - seq_lo)).max(seq_hi);
    let pad = ((seq_hi - seq_lo) * 0.03).max(1.0);
    let seq = Panel {
        top: 70.0 + PANEL_TOP,
        height: SEQ_H,
        t0,
        t1,
        lo: (seq_lo - pad).max(0.0),
        hi: seq_hi + pad,
        log: false,
    };
    let bytes_hi = max_of(&flight)
        .max(max_of(&windows))
        .max(max_of(&sender_counts))
        .max(1.0);
    let flight_panel = Panel {
        top: seq.bottom() + PANEL_BOTTOM + PANEL_TOP,
        height: SMALL_H,
        t0,
        t1,
        lo: 0.0,
        hi: bytes_hi * 1.08,
        log: false,
    };

    // RTT panel: the sender's own numbers if its comments carry them, else the wire's.
    let noted: Vec<(f64, &super::notes::Sender)> = c
        .segments
        .iter()
        .filter(|s| is_data(s))
        .filter_map(|s| s.sender.as_ref().map(|n| (s.time, &**n)))
        .filter(|(_, n)| n.srtt_ms.is_some() || n.rtt_sample_ms.is_some() || n.rto_ms.is_some())
        .collect();
    let from_comments = !noted.is_empty();
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let mut srtt: Vec<(f64, f64)> = Vec::new();
    let mut rto: Vec<(f64, f64)> = Vec::new();
    if from_comments {
        for (t, n) in &noted {
            samples.extend(n.rtt_sample_ms.map(|v| (*t, v)));
            srtt.extend(n.srtt_ms.map(|v| (*t, v)));
            rto.extend(n.rto_ms.map(|v| (*t, v)));
        }
    } else {
        let mut est = Estimator {
            srtt: None,
            rttvar: 0.0,
        };
        for (t, r) in wire_rtts(c, data_from_client) {
            samples.push((t, r));
            srtt.push((t, est.sample(r)));
        }
    }
    samples.retain(|(t, _)| (t0..=t1).contains(t));
    let (srtt, rto) = (clipped(&srtt, t0, t1), clipped(&rto, t0, t1));
    // Samples under the floor (both ends in one tick of the capture's clock) sit at the
    // bottom.
    let positive = samples
        .iter()
        .chain(&srtt)
        .chain(&rto)
        .map(|p| p.1)
        .filter(|v| *v >= RTT_FLOOR_MS);
    let (mut rtt_lo, mut rtt_hi) =
        positive.fold((f64::MAX, 0f64), |(a, b), v| (a.min(v), b.max(v)));
    if rtt_lo > rtt_hi {
        (rtt_lo, rtt_hi) = (1.0, 10.0);
    }
    let rtt_panel = Panel {
        top: flight_panel.bottom() + PANEL_BOTTOM + PANEL_TOP,
        height: SMALL_H,
        t0,
        t1,
        lo: 10f64
            .powf((rtt_lo.log10()).floor())
            .min(rtt_lo / 1.5)
            .max(RTT_FLOOR_MS),
        hi: 10f64.powf((rtt_hi.log10()).ceil()).max(rtt_hi * 1.5),
        log: true,
    };
    let height = rtt_panel.bottom() + PANEL_BOTTOM + 10.0;

    let mut out = String::new();
    let dir = if data_from_client {
        format!("{} -> {}", c.client, c.server)
    } else {
        format!("{} -> {}", c.server, c.client)
    };
    let _ = writeln!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="30" font-weight="bold" font-size="16">{}: data {}</text>
<text x="{LEFT}" y="50" fill="#555">{:.3} s to {:.3} s; sequence numbers relative to the sender's ISN; times as the packets passed the capture point</text>"##,
        xml(title),
        xml(&dir),
        t0,
        t1
    );
    let _ = writeln!(out, "<defs>");
    seq.clip(&mut out, "seq");
    flight_panel.clip(&mut out, "flight");
    rtt_panel.clip(&mut out, "rtt");
    let _ = writeln!(out, "</defs>");

    // 1. Time-sequence.
    let seq_top = seq.hi;
    let legend = format!(
        r##"<tspan fill="#000">| data sent</tspan>   <tspan fill="#d00">| retransmission</tspan>   <tspan fill="#d00">x lost</tspan>   <tspan fill="#06c">— acknowledged</tspan>   <tspan fill="#090">— receive window (ACK + window{})</tspan>"##,
        if window_off_scale {
            "; off the top here"
        } else {
            ""
        }
    );
    seq.axes(
        &mut out,
        "time-sequence",
        &legend,
        "sequence number (bytes)",
        &|v, step| bytes(v, step, seq_top),
    );
    draw_steps(&mut out, &seq, &limits, "seq", ("#090", 1.2, ""));
    draw_steps(&mut out, &seq, &acks, "seq", ("#06c", 1.4, ""));
    // Bars that land on the same pixel column are drawn as one.
    let mut bars = String::new();
    let mut open: Option<(f64, f64, f64, bool)> = None;
    let flush = |bars: &mut String, b: (f64, f64, f64, bool)| {
        let (x, ya, yb, retx) = b;
        let _ = writeln!(
            bars,
            r#"<line x1="{x:.1}" y1="{ya:.1}" x2="{x:.1}" y2="{yb:.1}" stroke="{}" stroke-width="{}"/>"#,
            if retx { "#d00" } else { "#000" },
            if retx { 2.5 } else { 1.2 }
        );
    };
    let mut marks = String::new();
    for s in &data {
        let retx = s.retransmitted();
        let x = seq.x(s.time);
        let (ya, yb) = (
            seq.y(f64::from(s.seq)),
            seq.y(f64::from(s.seq) + f64::from(s.len)),
        );
        match open {
            Some((ox, oa, ob, or)) if (ox - x).abs() < 0.5 && or == retx => {
                open = Some((ox, oa.max(ya), ob.min(yb), or));
            }
            _ => {
                if let Some(b) = open.take() {
                    flush(&mut bars, b);
                }
                open = Some((x, ya, yb, retx));
            }
        }
        if s.lost() {
            let _ = writeln!(
                marks,
                r##"<path d="M {:.1} {:.1} l 8 8 m 0 -8 l -8 8" stroke="#d00" stroke-width="1.6"/>"##,
                x - 4.0,
                yb - 12.0
            );
        }
    }
    if let Some(b) = open {
        flush(&mut bars, b);
    }
    let _ = writeln!(out, r#"<g clip-path="url(#seq)">{bars}{marks}</g>"#);

    // 2. In flight and the peer's window.
    let fh = flight_panel.hi;
    let legend = if sender_counts.is_empty() {
        r##"<tspan fill="#c60">— in flight (sent, not yet acknowledged, as the wire shows it)</tspan>   <tspan fill="#090">- - receiver's advertised window</tspan>"##
    } else {
        r##"<tspan fill="#c60">— in flight (from the wire)</tspan>   <tspan fill="#606">• in flight (the sender's own count, from its comments)</tspan>   <tspan fill="#090">- - receiver's advertised window</tspan>"##
    };
    flight_panel.axes(
        &mut out,
        "bytes in flight and the peer's window",
        legend,
        "bytes",
        &|v, step| bytes(v, step, fh),
    );
    draw_steps(
        &mut out,
        &flight_panel,
        &flight,
        "flight",
        ("#c60", 1.4, ""),
    );
    draw_steps(
        &mut out,
        &flight_panel,
        &windows,
        "flight",
        ("#090", 1.2, r#" stroke-dasharray="5 3""#),
    );
    for (t, f) in sender_counts {
        let _ = writeln!(
            out,
            r##"<circle cx="{:.1}" cy="{:.1}" r="2" fill="#606"/>"##,
            flight_panel.x(t),
            flight_panel.y(f)
        );
    }

    // 3. RTT and RTO.
    let (title, legend) = if from_comments {
        (
            "round-trip time and retransmission timeout (the sender's own, from its comments)",
            r##"<tspan fill="#06c">• RTT sample</tspan>   <tspan fill="#000">— SRTT</tspan>   <tspan fill="#d00">— RTO</tspan>"##,
        )
    } else {
        (
            "round-trip time (from the wire: data to the ACK that covers it; the sender's RTO is not on the wire)",
            r##"<tspan fill="#06c">• RTT sample</tspan>   <tspan fill="#000">— SRTT (RFC 6298 over these samples)</tspan>"##,
        )
    };
    rtt_panel.axes(
        &mut out,
        title,
        legend,
        "milliseconds (log scale)",
        &|v, _| {
            if v >= 1.0 {
                format!("{v:.0}")
            } else {
                format!("{v}")
            }
        },
    );
    for &(t, r) in &samples {
        let _ = writeln!(
            out,
            r##"<circle cx="{:.1}" cy="{:.1}" r="2.2" fill="#06c" clip-path="url(#rtt)"/>"##,
            rtt_panel.x(t),
            rtt_panel.y(r)
        );
    }
    draw_steps(&mut out, &rtt_panel, &srtt, "rtt", ("#000", 1.4, ""));
    draw_steps(&mut out, &rtt_panel, &rto, "rtt", ("#d00", 1.6, ""));
    if samples.is_empty() && srtt.is_empty() && rto.is_empty() {
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#555">no round trip measured in this stretch</text>"##,
            (LEFT + W - RIGHT) / 2.0,
            rtt_panel.top + rtt_panel.height / 2.0
        );
    }
    out.push_str("</svg>\n");
    Ok(out)
}
