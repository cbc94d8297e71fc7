//! `synack ladder` and `synack stats`: any capture (synack's or not) read with the
//! independent parser, each TCP connection and DNS exchange drawn as a ladder or summed
//! up, with analysis computed from the packets themselves.

mod app;
mod escape;
mod flows;
mod ladder;
mod notes;
mod packet;
mod plot;
mod read;
mod svg;

pub use flows::{ConnStats, Connection, Conversation, Rtt, Seg, Tag, conversations, stats};
pub use notes::Sender;
pub use read::{Frame, ReadError, read, read_from};

pub use ladder::{Ladder, Paint, svg as ladder_svg, text as ladder_text};
pub use plot::{Window, svg as plot_svg};

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.3} ms"))
}

fn window(min: Option<u64>, max: Option<u64>) -> String {
    match (min, max) {
        (Some(a), Some(b)) => format!("{a}..{b}"),
        _ => "-".into(),
    }
}

/// One connection's numbers as a small table.
pub fn stats_text(n: usize, s: &ConnStats) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let _ = writeln!(t, "#{n} TCP {} -> {}", s.client, s.server);
    let _ = writeln!(
        t,
        "  handshake        {} (SYN -> SYN-ACK {}, SYN-ACK -> ACK {})",
        ms(s.handshake_ms),
        ms(s.syn_to_synack_ms),
        ms(s.synack_to_ack_ms)
    );
    let _ = writeln!(t, "  duration         {:.3} ms", s.duration_ms);
    let _ = writeln!(
        t,
        "  {:<16} {:>18} {:>18}",
        "", "client -> server", "server -> client"
    );
    let row = |t: &mut String, name: &str, a: String, b: String| {
        let _ = writeln!(t, "  {name:<16} {a:>18} {b:>18}");
    };
    row(
        &mut t,
        "bytes",
        s.bytes[0].to_string(),
        s.bytes[1].to_string(),
    );
    row(
        &mut t,
        "segments",
        s.segments[0].to_string(),
        s.segments[1].to_string(),
    );
    row(
        &mut t,
        "retransmissions",
        s.retransmissions[0].to_string(),
        s.retransmissions[1].to_string(),
    );
    row(
        &mut t,
        "duplicate ACKs",
        s.duplicate_acks[0].to_string(),
        s.duplicate_acks[1].to_string(),
    );
    row(
        &mut t,
        "window",
        window(s.min_window[0], s.max_window[0]),
        window(s.min_window[1], s.max_window[1]),
    );
    if s.lost != [0, 0] {
        row(&mut t, "lost", s.lost[0].to_string(), s.lost[1].to_string());
    }
    if s.cut != [0, 0] {
        row(
            &mut t,
            "cut by snap len",
            s.cut[0].to_string(),
            s.cut[1].to_string(),
        );
    }
    row(
        &mut t,
        "RTT samples",
        s.rtt[0].samples.to_string(),
        s.rtt[1].samples.to_string(),
    );
    for (name, f) in [
        ("RTT min", (|r: &Rtt| r.min_ms) as fn(&Rtt) -> Option<f64>),
        ("RTT median", |r: &Rtt| r.median_ms),
        ("RTT max", |r: &Rtt| r.max_ms),
    ] {
        row(&mut t, name, ms(f(&s.rtt[0])), ms(f(&s.rtt[1])));
    }
    let _ = writeln!(
        t,
        "  goodput          {:.1} kB/s (the busier direction's new bytes over the connection's duration)",
        s.goodput_bytes_per_s / 1000.0
    );
    let _ = writeln!(
        t,
        "  RTT: a column's data to the ACK that covers it, timed at the capture point: the path\n       \
         beyond it to that column's receiver and back, plus the receiver's ACK delay"
    );
    t.push('\n');
    t
}
