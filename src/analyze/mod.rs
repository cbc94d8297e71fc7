//! `synack ladder` and `synack stats`: any capture (synack's or not) read with the
//! independent parser, each TCP connection and DNS exchange drawn as a ladder or summed
//! up, with analysis computed from the packets themselves.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::Context;

mod flows;
mod ladder;
mod plot;
mod read;

pub use flows::{ConnStats, Connection, Conversation, Seg, Tag, conversations, stats};
pub use read::{Frame, ReadError, read};

use crate::cli::{Colour, LadderArgs, StatsArgs};

fn load(path: &Path, only: Option<usize>) -> anyhow::Result<Vec<Conversation>> {
    let frames = read(path)?;
    let convs = conversations(&frames);
    if convs.is_empty() {
        anyhow::bail!(
            "{} holds no TCP connection or DNS exchange over IPv4",
            path.display()
        );
    }
    if let Some(n) = only
        && (n == 0 || n > convs.len())
    {
        anyhow::bail!(
            "--conn {n}: {} has conversations 1..={}",
            path.display(),
            convs.len()
        );
    }
    Ok(convs)
}

pub fn ladder_command(args: LadderArgs) -> anyhow::Result<()> {
    let convs = load(&args.capture, args.conn)?;
    let paint = ladder::Paint(match args.colour {
        Colour::Always => true,
        Colour::Never => false,
        Colour::Auto => std::io::stdout().is_terminal(),
    });
    print!("{}", ladder::text(&convs, args.conn, paint));
    if let Some(path) = &args.svg {
        std::fs::write(path, ladder::svg(&convs, args.conn))
            .with_context(|| format!("cannot write --svg {}", path.display()))?;
        eprintln!("synack: ladder drawn in {}", path.display());
    }
    Ok(())
}

pub fn stats_command(args: StatsArgs) -> anyhow::Result<()> {
    let convs = load(&args.capture, args.conn)?;
    let picked: Vec<(usize, &Connection)> = convs
        .iter()
        .enumerate()
        .filter(|(i, _)| args.conn.is_none_or(|n| n == i + 1))
        .filter_map(|(i, c)| match c {
            Conversation::Tcp(c) => Some((i + 1, c)),
            Conversation::Dns(_) => None,
        })
        .collect();
    if args.json {
        let all: Vec<serde_json::Value> = picked
            .iter()
            .map(|(n, c)| {
                let mut v = serde_json::to_value(stats(c)).unwrap_or_default();
                v["conn"] = (*n).into();
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        for (n, c) in &picked {
            print!("{}", stats_text(*n, &stats(c)));
        }
        if picked.is_empty() {
            println!("no TCP connection here (only DNS): see synack ladder");
        }
    }
    if let Some(path) = &args.plot {
        let busiest = picked
            .iter()
            .max_by_key(|(_, c)| c.segments.iter().map(|s| u64::from(s.len)).sum::<u64>())
            .context("no TCP connection to plot")?;
        std::fs::write(path, plot::svg(busiest.1))
            .with_context(|| format!("cannot write --plot {}", path.display()))?;
        eprintln!(
            "synack: time-sequence graph of connection #{} drawn in {}",
            busiest.0,
            path.display()
        );
    }
    Ok(())
}

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
    let _ = writeln!(
        t,
        "  goodput          {:.1} kB/s (the busier direction's new bytes over the connection's duration)",
        s.goodput_bytes_per_s / 1000.0
    );
    let _ = writeln!(
        t,
        "  RTT              {} samples: min {}, median {}, max {}",
        s.rtt_samples,
        ms(s.rtt_min_ms),
        ms(s.rtt_median_ms),
        ms(s.rtt_max_ms)
    );
    t.push('\n');
    t
}
