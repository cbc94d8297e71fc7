//! `synack script`: the flags; running the scripts and the report are
//! [`synack::script`].

use std::path::PathBuf;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::{Args, ValueEnum};

use synack::script::{self, Options, Stack};

/// Which TCP stack runs the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Against {
    /// synack's smoltcp stack, in process, on a virtual clock (no root).
    Smoltcp,
    /// the kernel's TCP behind a TUN device in a network namespace of its own (root).
    Linux,
}

#[derive(Debug, Args)]
pub struct ScriptArgs {
    /// packetdrill scripts (.pkt).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The stack to run them against.
    #[arg(long, value_enum, default_value = "linux")]
    pub against: Against,
    /// Run every stack and show, line by line, where they differ.
    #[arg(long)]
    pub compare: bool,
    /// Timing tolerance in microseconds (else the script's, else packetdrill's 4000);
    /// 12.5 % of the gap since the previous event counts when larger.
    #[arg(long = "tolerance_usecs", alias = "tolerance-usecs", value_name = "N",
          value_parser = clap::value_parser!(i64).range(1..=10_000_000))]
    pub tolerance_usecs: Option<i64>,
    /// Where the captures go, one pcapng per script and stack.
    #[arg(long, value_name = "DIR", default_value = "captures/script")]
    pub capture: PathBuf,
}

/// Runs the scripts; the exit code is 1 when one diverged from its script.
pub fn run(args: ScriptArgs) -> anyhow::Result<u8> {
    if !args.capture.starts_with(synack::capture::DEFAULT_DIR) && !args.capture.is_dir() {
        anyhow::bail!(
            "the directory {} does not exist: create it first, or give --capture an existing one",
            args.capture.display()
        );
    }
    let options = Options {
        files: args.files,
        against: match args.against {
            Against::Smoltcp => Stack::Smoltcp,
            Against::Linux => Stack::Linux,
        },
        compare: args.compare,
        tolerance_usecs: args.tolerance_usecs,
        capture_dir: Some(args.capture),
        // Ctrl-C stops the script in progress; the namespace goes and the capture stays.
        stop: Some(stop_flag()?),
    };
    let report = script::run(&options);
    print!("{}", script::render(&report));
    Ok(if report.ok() { 0 } else { 1 })
}

/// Set on SIGINT or SIGTERM: the runner checks it while it waits.
fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&flag))
            .context("cannot install signal handlers")?;
    }
    Ok(flag)
}
