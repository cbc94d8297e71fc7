//! `synack ladder` and `synack stats`: the flags, reading the file, and where the
//! pictures go; the analysis is [`synack::analyze`].

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use synack::analyze::{
    Connection, Conversation, Paint, conversations, ladder_svg, ladder_text, read,
    stats as conn_stats, stats_text, time_sequence_svg,
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
    /// Draw the time-sequence graph of the busiest (or --conn) connection as SVG in FILE.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
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
    print!("{}", ladder_text(&convs, args.conn, paint));
    if let Some(path) = &args.svg {
        std::fs::write(path, ladder_svg(&convs, args.conn))
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
        std::fs::write(path, time_sequence_svg(busiest.1))
            .with_context(|| format!("cannot write --plot {}", path.display()))?;
        eprintln!(
            "synack: time-sequence graph of connection #{} drawn in {}",
            busiest.0,
            path.display()
        );
    }
    Ok(())
}
