//! `synack demo`: the flags, and the report of a finished simulation (the simulation
//! itself is [`synack::demo::simulate`]).

use std::io::Write;

use clap::Args;

use super::args::{self, BufferArgs, FaultArgs, KnobArgs, PaceArgs, RecordArgs, TimeWaitArgs};
use super::setup;
use synack::demo::{Scenario, simulate};
use synack::journey::render;
use synack::node::limits;
use synack::script::scenarios;

/// An end of the link (`--capture-at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Side {
    Client,
    Server,
}

impl From<Side> for synack::demo::Side {
    fn from(s: Side) -> Self {
        match s {
            Side::Client => Self::Client,
            Side::Server => Self::Server,
        }
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub record: RecordArgs,
    #[command(flatten)]
    pub pace: PaceArgs,
    #[command(flatten)]
    pub knobs: KnobArgs,
    #[command(flatten)]
    pub buffers: BufferArgs,
    #[command(flatten)]
    pub faults: FaultArgs,
    #[command(flatten)]
    pub tw: TimeWaitArgs,
    /// Seed for every random choice: ISNs, ports, TLS randomness, the certificate's key. The same seed gives the same capture, byte for byte.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Size of the /bytes download in the scenario (e.g. 300k, 1m).
    #[arg(long, default_value = "256k", value_parser = parse_download)]
    pub bytes: u64,
    /// MTU of the in-memory link; the MSS follows (MTU - 40).
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u32).range(576..=65535))]
    pub mtu: u32,
    /// Plain HTTP to port 80 instead of HTTPS to 443.
    #[arg(long)]
    pub http: bool,
    /// Which end's device the capture records: server (where the faults are) or client.
    #[arg(long, value_enum, default_value = "server")]
    pub capture_at: Side,
    /// The server's accept queue (1..=4096).
    #[arg(long, default_value_t = limits::DEFAULT_BACKLOG, value_parser = args::backlog_range)]
    pub backlog: usize,
    /// Play a scenario of synack's script corpus instead, against synack's own stack (no root): what it shows, the journey, a capture and what to look at in it. Of the other flags, the capture, journey and --internals ones apply.
    #[arg(long, value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(scenarios::NAMED.iter().map(|n| n.name)))]
    pub scenario: Option<String>,
}

fn parse_download(s: &str) -> Result<u64, String> {
    let (digits, mult) = match s.to_ascii_lowercase() {
        t if t.ends_with('k') => (t.trim_end_matches('k').to_owned(), 1000),
        t if t.ends_with('m') => (t.trim_end_matches('m').to_owned(), 1_000_000),
        t => (t, 1),
    };
    let n = digits
        .parse::<u64>()
        .map_err(|_| format!("{s:?} is not a size (examples: 1000, 300k, 1m)"))?
        * mult;
    if n > 100_000_000 {
        return Err(format!("{n} is out of range 0..=100000000 (100 MB)"));
    }
    Ok(n)
}

/// Runs the demo; the exit code is [`setup::EXIT_CAPTURE_INCOMPLETE`] if the capture
/// could not be completed.
pub fn run(args: DemoArgs) -> anyhow::Result<u8> {
    if let Some(named) = args.scenario.as_deref().and_then(scenarios::find) {
        return play(named, &args);
    }
    let started = std::time::Instant::now();
    let capture = args.record.capture_config("demo");
    if let Some(config) = &capture {
        setup::say_if_fifo(config);
    }
    let scenario = Scenario {
        seed: args.seed,
        download: args.bytes,
        mtu: args.mtu as usize,
        rx_buf: args.buffers.rx_buf,
        tx_buf: args.buffers.tx_buf,
        // The link has 1 ms of delay each way unless told otherwise, so that the
        // timeline shows round trips rather than everything at +0.000.
        faults: args.faults.config(args.seed, 1),
        knobs: args.knobs.knobs(),
        plain: args.http,
        pace: args.pace.pacing(),
        capture_at: args.capture_at.into(),
        backlog: args.backlog,
        keylog: args.record.keylog.clone(),
        capture,
        time_wait: std::time::Duration::from_secs(args.tw.time_wait),
        internals: args.record.internals,
    };
    let outcome = simulate(&scenario)?;
    let mut out = setup::journey_out(&args.record)?;
    match args.record.journey.into() {
        synack::journey::Format::Off => {}
        synack::journey::Format::Json => {
            // One object per event, as `serve` writes them, with the side that saw it.
            for (side, kept) in [("client", &outcome.client), ("server", &outcome.server)] {
                for e in kept.events() {
                    if let Ok(serde_json::Value::Object(mut map)) = serde_json::to_value(e) {
                        map.insert("side".into(), side.into());
                        writeln!(out, "{}", serde_json::Value::Object(map))?;
                    }
                }
            }
        }
        synack::journey::Format::Text => {
            writeln!(
                out,
                "{}",
                render::side_by_side(
                    ("client", &outcome.client),
                    ("server", &outcome.server),
                    super::setup::terminal_width()
                )
            )?;
        }
    }
    let r = match &outcome.report {
        Ok(r) => r,
        Err(e) => anyhow::bail!("the demo's fetch failed: {e}"),
    };
    for e in &r.exchanges {
        let status = e.head.as_ref().map_or(0, |h| h.status);
        eprintln!(
            "synack demo: {} {} -> {status}, {} B body",
            e.method, e.target, e.body_bytes
        );
    }
    eprintln!(
        "synack demo: the download is {} ({} B checked against the pattern)",
        if outcome.download_mismatches == 0 {
            "byte-exact"
        } else {
            "NOT byte-exact"
        },
        args.bytes
    );
    if !scenario.faults.is_none() {
        let f = outcome.faults;
        eprintln!(
            "synack demo: faults ({}): {} lost, {} delayed, {} reordered, {} duplicated, {} corrupted",
            scenario.faults.describe(),
            f.lost,
            f.delayed,
            f.reordered,
            f.duplicated,
            f.corrupted
        );
    }
    eprintln!(
        "synack demo: {:.3} s of virtual time in {:.3} s of real time, seed {}",
        outcome.virtual_time.total_micros() as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        args.seed
    );
    let complete = outcome.capture.as_ref().is_none_or(|c| c.complete());
    if let Some(summary) = &outcome.capture {
        eprintln!(
            "synack demo: {summary}{}",
            if args.http || !complete || summary.files.len() > 1 {
                ""
            } else {
                " (open it in Wireshark: the TLS decrypts by itself)"
            }
        );
    }
    if let Some(summary) = outcome.capture.as_ref().filter(|s| !s.stream && complete)
        && let Some((path, _)) = summary.files.last()
    {
        next_steps(path, &args);
    }
    if outcome.download_mismatches != 0 {
        anyhow::bail!(
            "the download was corrupted: {} bytes differ",
            outcome.download_mismatches
        );
    }
    Ok(if complete {
        0
    } else {
        setup::EXIT_CAPTURE_INCOMPLETE
    })
}

/// What to try next, with this run's capture: the lessons path of the README, one step on.
/// Each command under a comment line, so that it can be pasted as it is.
fn next_steps(capture: &std::path::Path, args: &DemoArgs) {
    let c = capture.display();
    let svg = capture.with_extension("svg");
    eprintln!("synack demo: next, with this capture:");
    eprintln!("  # each packet as an arrow, with its comment");
    eprintln!("  synack ladder {c}");
    eprintln!("  # the numbers, and a picture of the transfer (open the SVG in a browser)");
    eprintln!("  synack stats {c} --plot {}", svg.display());
    eprintln!("  # in Wireshark, add a column for frame.comment to read the comments");
    eprintln!("  wireshark {c}");
    if args.faults.loss == 0.0 {
        eprintln!("  # the same journey on a link that loses 5 % of the packets");
        eprintln!("  synack demo --loss 5");
    } else if !args.record.internals {
        eprintln!("  # and each segment the sender sends says why it left now");
        eprintln!("  synack demo --loss {} --internals on", args.faults.loss);
    }
}

/// `--scenario NAME`: the script, the node's journey, how it went, and what to look at
/// (all on stderr: stdout may carry the capture).
fn play(named: &'static scenarios::Named, args: &DemoArgs) -> anyhow::Result<u8> {
    let capture = args.record.capture_config(&format!("demo-{}", named.name));
    if let Some(config) = &capture {
        setup::say_if_fifo(config);
    }
    let played = scenarios::play(named, capture.as_ref(), args.record.internals)
        .map_err(anyhow::Error::msg)?;
    eprintln!("synack demo --scenario {}: {}", named.name, named.about);
    eprintln!(
        "tests/scenarios/{} against synack's own stack (smoltcp), on a virtual clock:\n",
        named.file
    );
    eprint!("{}", scenarios::numbered(named));
    let mut out = setup::journey_out(&args.record)?;
    match args.record.journey.into() {
        synack::journey::Format::Off => {}
        synack::journey::Format::Json => {
            for e in played.journey.events() {
                if let Ok(line) = serde_json::to_string(e) {
                    writeln!(out, "{line}")?;
                }
            }
        }
        synack::journey::Format::Text => {
            writeln!(out, "\nthe journey, as synack's stack saw it:")?;
            for rec in &played.journey.conns {
                writeln!(out, "{}", render::timeline_string(rec))?;
            }
        }
    }
    out.flush()?;
    let held = match &played.verdict {
        synack::script::Verdict::Passed => "held to the script".to_owned(),
        synack::script::Verdict::Differs(d) => format!(
            "held to the script, differing where it says smoltcp does ({})",
            scenarios_lines(d)
        ),
        other => anyhow::bail!("the scenario did not run as its script says: {other:?}"),
    };
    eprintln!("synack demo: synack's stack {held}");
    let complete = played.capture.as_ref().is_none_or(|c| c.complete());
    if let Some(summary) = &played.capture {
        eprintln!("synack demo: {summary}");
    }
    eprintln!("synack demo: what to look at:");
    for l in &played.look {
        eprintln!("  - {l}");
    }
    eprintln!("synack demo: next:");
    if let Some(summary) = played.capture.as_ref().filter(|s| !s.stream && complete)
        && let Some((path, _)) = summary.files.last()
    {
        eprintln!("  # each packet as an arrow, with its comment");
        eprintln!("  synack ladder {}", path.display());
    }
    if !args.record.internals {
        eprintln!("  # each segment the stack sent says why it left then");
        eprintln!("  synack demo --scenario {} --internals on", named.name);
    }
    eprintln!(
        "  # the same script against Linux too, side by side (root; in synack's source tree)"
    );
    eprintln!(
        "  sudo synack script --compare tests/scenarios/{}",
        named.file
    );
    Ok(if complete {
        0
    } else {
        setup::EXIT_CAPTURE_INCOMPLETE
    })
}

/// `lines 24, 27: ...` for each marked difference.
fn scenarios_lines(diffs: &[synack::script::Difference]) -> String {
    synack::script::group(diffs)
        .iter()
        .map(|g| g.lines_text())
        .collect::<Vec<_>>()
        .join("; ")
}
