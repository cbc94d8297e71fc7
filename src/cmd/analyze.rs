//! `synack ladder` and `synack stats`: the flags, reading the file, and where the
//! pictures go; the analysis is [`synack::analyze`].

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use synack::analyze::{
    Connection, Conversation, Ladder, Paint, Window, conversations, ladder_svg, ladder_text,
    plot_svg, read, stats as conn_stats, stats_text,
};

/// When to colour the ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Colour {
    /// When stdout is a terminal.
    Auto,
    Always,
    Never,
}

#[derive(Debug, Args)]
pub struct LadderArgs {
    /// A pcap or pcapng capture (Raw IP, IPv4, Ethernet, Linux cooked or loopback).
    pub capture: PathBuf,
    /// Only conversation N (as numbered in the output).
    #[arg(long, value_name = "N")]
    pub conn: Option<usize>,
    /// Also draw the ladder as an SVG picture in FILE.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Colour: auto (on a terminal), always, never.
    #[arg(long = "color", value_enum, default_value = "auto")]
    pub colour: Colour,
    /// Space the arrows by time: one row per MS milliseconds between packets (packets
    /// closer than that stay one row apart; a pause of more than 12 rows is cut short and
    /// marked with its length). Text and SVG alike.
    #[arg(long, value_name = "MS", value_parser = positive_ms)]
    pub time_scale: Option<f64>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// A pcap or pcapng capture (Raw IP, IPv4, Ethernet, Linux cooked or loopback).
    pub capture: PathBuf,
    /// Only connection N (as numbered by synack ladder).
    #[arg(long, value_name = "N")]
    pub conn: Option<usize>,
    /// JSON for scripts.
    #[arg(long)]
    pub json: bool,
    /// Draw the busiest (or --conn) connection as SVG in FILE: the time-sequence graph,
    /// bytes in flight with the peer's window, and round-trip times, one above the other.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// With --plot: start the graphs at SECS (seconds since the capture's first packet).
    #[arg(long, value_name = "SECS", requires = "plot", value_parser = seconds)]
    pub from: Option<f64>,
    /// With --plot: end the graphs at SECS.
    #[arg(long, value_name = "SECS", requires = "plot", value_parser = seconds)]
    pub to: Option<f64>,
}

fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "{s} is not a time: give seconds since the capture's first packet, e.g. 0.5"
        )),
    }
}

fn positive_ms(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "{s} is not a time scale: give milliseconds per row, more than 0 (e.g. 10)"
        )),
    }
}

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

pub fn ladder(args: LadderArgs) -> anyhow::Result<()> {
    let convs = load(&args.capture, args.conn)?;
    let paint = Paint(match args.colour {
        Colour::Always => true,
        Colour::Never => false,
        Colour::Auto => std::io::stdout().is_terminal(),
    });
    let mut how = Ladder {
        only: args.conn,
        time_scale_ms: args.time_scale,
        paint,
    };
    print!("{}", ladder_text(&convs, &how));
    if let Some(path) = &args.svg {
        how.paint = Paint(false);
        std::fs::write(path, ladder_svg(&convs, &how))
            .with_context(|| format!("cannot write --svg {}", path.display()))?;
        eprintln!("synack: ladder drawn in {}", path.display());
    }
    Ok(())
}

pub fn stats(args: StatsArgs) -> anyhow::Result<()> {
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
                let mut v = serde_json::to_value(conn_stats(c)).unwrap_or_default();
                v["conn"] = (*n).into();
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        for (n, c) in &picked {
            print!("{}", stats_text(*n, &conn_stats(c)));
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
        let window = Window {
            from: args.from,
            to: args.to,
        };
        let svg = plot_svg(busiest.1, &format!("connection #{}", busiest.0), window)
            .with_context(|| format!("cannot plot connection #{}", busiest.0))?;
        std::fs::write(path, svg)
            .with_context(|| format!("cannot write --plot {}", path.display()))?;
        eprintln!(
            "synack: connection #{} drawn in {} (time-sequence, in flight, RTT)",
            busiest.0,
            path.display()
        );
    }
    Ok(())
}
