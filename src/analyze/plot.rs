//! The time-sequence graph (tcptrace's, Wireshark's "Stevens" graph): for the busier
//! direction of a connection, each data segment as a vertical bar from its first to its
//! last sequence number at the time it was sent, the ACK line (what the receiver has
//! acknowledged) and the receive-window line (how far the sender may go), with
//! retransmissions in red.

use std::fmt::Write as _;

use super::flows::{Connection, Tag};
use super::ladder::xml;

const W: f64 = 1000.0;
const H: f64 = 600.0;
const MARGIN: f64 = 70.0;

pub fn svg(c: &Connection) -> String {
    let sent = |from_client: bool| -> u64 {
        c.segments
            .iter()
            .filter(|s| s.from_client == from_client)
            .map(|s| u64::from(s.len))
            .sum()
    };
    let data_from_client = sent(true) >= sent(false);
    let t0 = c.segments.first().map_or(0.0, |s| s.time);
    let t1 = c.segments.last().map_or(1.0, |s| s.time).max(t0 + 1e-6);
    let top = c
        .segments
        .iter()
        .map(|s| {
            if s.from_client == data_from_client {
                u64::from(s.seq) + u64::from(s.len)
            } else {
                u64::from(s.ack) + s.window
            }
        })
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let x = |t: f64| MARGIN + (t - t0) / (t1 - t0) * (W - 2.0 * MARGIN);
    let y = |seq: f64| H - MARGIN - seq / top * (H - 2.0 * MARGIN);
    let mut body = String::new();
    let mut ack_line = String::new();
    let mut win_line = String::new();
    let mut last: Option<(f64, f64)> = None;
    for s in &c.segments {
        if s.from_client == data_from_client {
            if s.len == 0 {
                continue;
            }
            let retx = s
                .tags
                .iter()
                .any(|t| matches!(t, Tag::Retransmission | Tag::FastRetransmission));
            let colour = if retx { "#d00" } else { "#000" };
            let (ya, yb) = (y(f64::from(s.seq)), y(f64::from(s.seq) + f64::from(s.len)));
            let xs = x(s.time);
            let _ = writeln!(
                body,
                r#"<line x1="{xs:.1}" y1="{ya:.1}" x2="{xs:.1}" y2="{yb:.1}" stroke="{colour}" stroke-width="{}"/>"#,
                if retx { 2.5 } else { 1.2 }
            );
        } else if s.ack_flag && !s.syn {
            // Steps, not slopes: what is acknowledged holds until the next ACK moves it.
            let xs = x(s.time);
            let (ya, yw) = (y(f64::from(s.ack)), y(f64::from(s.ack) + s.window as f64));
            if let Some((pa, pw)) = last {
                let _ = write!(ack_line, "{xs:.1},{pa:.1} ");
                let _ = write!(win_line, "{xs:.1},{pw:.1} ");
            }
            let _ = write!(ack_line, "{xs:.1},{ya:.1} ");
            let _ = write!(win_line, "{xs:.1},{yw:.1} ");
            last = Some((ya, yw));
        }
    }
    let dir = if data_from_client {
        format!("{} -> {}", c.client, c.server)
    } else {
        format!("{} -> {}", c.server, c.client)
    };
    let mut axes = String::new();
    for i in 0..=5 {
        let t = t0 + (t1 - t0) * f64::from(i) / 5.0;
        let seq = top * f64::from(i) / 5.0;
        let _ = writeln!(
            axes,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{:.3} s</text><text x="{}" y="{:.1}" text-anchor="end">{:.0}</text>"#,
            x(t),
            H - MARGIN + 18.0,
            t,
            MARGIN - 6.0,
            y(seq) + 4.0,
            seq
        );
    }
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{MARGIN}" y="24" font-weight="bold">time-sequence graph: {}</text>
<text x="{MARGIN}" y="42" fill="#555">black: data sent (relative sequence numbers); red: retransmissions; blue: ACKed; green: receive window</text>
<line x1="{MARGIN}" y1="{}" x2="{}" y2="{}" stroke="#888"/><line x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{}" stroke="#888"/>
{axes}<polyline points="{ack_line}" fill="none" stroke="#06c" stroke-width="1.2"/>
<polyline points="{win_line}" fill="none" stroke="#090" stroke-width="1"/>
{body}</svg>
"##,
        xml(&dir),
        H - MARGIN,
        W - MARGIN,
        H - MARGIN,
        H - MARGIN,
    )
}
