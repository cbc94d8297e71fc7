//! `synack script`: runs a packetdrill script against a TCP stack and reports where the
//! stack diverged from it.
//!
//! The language is packetdrill's ([`parser`]): timed inbound packets the script injects
//! (`<`), outbound packets it expects (`>`), and socket calls with their results. A
//! [`runner`] steps through the events against a [`Backend`]: [`linux`] runs the kernel's
//! TCP behind a TUN device in a network namespace of its own, as packetdrill does;
//! [`smoltcp`] runs synack's own node in process, on a virtual clock. Every run keeps its
//! capture (pcapng), each packet commented with the script line that injected or expected
//! it (and, for synack's node, what the node says about it).
//!
//! Where a stack legitimately differs, the script says so in comments packetdrill passes
//! over: `// synack-expect-fail STACK [next N]: reason` marks the next event (or N
//! events), and `// synack-STACK: EVENT` lines under it say what STACK does instead. On
//! STACK the marked events are replaced by those lines, or, with none, run and must fail;
//! either way the rest of the script still runs and is checked. [`scenarios`] plays named
//! scripts of the corpus for `synack demo --scenario`.

pub mod ast;
pub mod backend;
pub mod dump;
pub mod error;
pub mod lexer;
pub mod linux;
pub mod parser;
pub mod runner;
pub mod scenarios;
pub mod smoltcp;
pub mod symbols;
pub mod wire;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use ast::Script;
pub use backend::{Backend, BackendError};
pub use error::ScriptError;
pub use runner::{
    Difference, EventStatus, Failure, RunResult, Tuning, run_script, run_script_until,
};

use crate::capture::{CaptureConfig, PcapngSink, SinkInfo};
use crate::observe::Direction;

/// Where a run's captures go unless told otherwise (made if missing, as any directory
/// under `captures/`).
pub const DEFAULT_CAPTURE_DIR: &str = "captures/script";

/// The stacks a script can run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// The kernel's TCP in a network namespace (root).
    Linux,
    /// synack's smoltcp stack in process, on a virtual clock.
    Smoltcp,
}

impl Stack {
    pub fn name(self) -> &'static str {
        match self {
            Stack::Linux => "linux",
            Stack::Smoltcp => "smoltcp",
        }
    }

    /// Makes the backend, or says in one sentence why it cannot be had here.
    pub fn backend(self) -> Result<Box<dyn Backend>, BackendError> {
        match self {
            Stack::Linux => Ok(Box::new(linux::LinuxBackend::new()?)),
            Stack::Smoltcp => Ok(Box::new(smoltcp::SmoltcpBackend::new()?)),
        }
    }
}

/// What `synack script` is asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub files: Vec<PathBuf>,
    pub against: Stack,
    /// Run every stack and show where they differ.
    pub compare: bool,
    /// Overrides the script's and packetdrill's default (4000).
    pub tolerance_usecs: Option<i64>,
    /// Where captures go ([`DEFAULT_CAPTURE_DIR`] by default).
    pub capture_dir: Option<PathBuf>,
    /// Set by a SIGINT/SIGTERM handler: the script in progress stops, its namespace is
    /// removed and its capture written, and no other script starts.
    pub stop: Option<Arc<AtomicBool>>,
}

impl Options {
    pub fn new(files: Vec<PathBuf>, against: Stack) -> Self {
        Options {
            files,
            against,
            compare: false,
            tolerance_usecs: None,
            capture_dir: None,
            stop: None,
        }
    }
}

/// How one script went on one stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    /// It ran to the end and held to the script everywhere but where the script marks
    /// that this stack differs; each marked difference was seen.
    Differs(Vec<Difference>),
    /// The stack diverged from the script: packetdrill's message.
    Failed(String),
    /// It diverged where a `synack-expect-fail` directive says it does.
    ExpectedFailure {
        reason: String,
        message: String,
    },
    /// A directive says it diverges, but it passed: the directive is out of date.
    UnexpectedPass {
        reason: String,
    },
    /// The stack cannot run here (no root, not built).
    Unavailable(String),
}

impl Verdict {
    /// Whether this outcome is what the script says it should be.
    pub fn ok(&self) -> bool {
        matches!(
            self,
            Verdict::Passed | Verdict::Differs(_) | Verdict::ExpectedFailure { .. }
        )
    }
}

#[derive(Debug, Clone)]
pub struct StackRun {
    pub stack: Stack,
    pub verdict: Verdict,
    pub result: Option<RunResult>,
    pub capture: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ScriptReport {
    pub file: PathBuf,
    /// The script's text, for side-by-side output.
    pub source: String,
    /// A mistake in the script: it did not run.
    pub error: Option<String>,
    pub runs: Vec<StackRun>,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub scripts: Vec<ScriptReport>,
    pub compare: bool,
}

impl Report {
    /// Whether every script ran as it says it should on every stack that could run it,
    /// and at least one stack ran.
    pub fn ok(&self) -> bool {
        self.scripts.iter().all(|s| {
            s.error.is_none()
                && s.runs
                    .iter()
                    .any(|r| !matches!(r.verdict, Verdict::Unavailable(_)))
                && s.runs
                    .iter()
                    .all(|r| r.verdict.ok() || matches!(r.verdict, Verdict::Unavailable(_)))
        })
    }
}

/// Reads a script file and parses it.
pub fn load(path: &Path) -> Result<(String, Script), String> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let script = parser::parse(&path.display().to_string(), &source).map_err(|e| e.to_string())?;
    Ok((source, script))
}

/// The tuning for a script: packetdrill's defaults, then the script's `--name=value`
/// lines, then `tolerance_usecs` from the command line. Unknown options are refused.
pub fn tuning(script: &Script, tolerance_usecs: Option<i64>) -> Result<Tuning, ScriptError> {
    let mut t = Tuning::default();
    for o in &script.options {
        let err = |m: String| ScriptError::at(&script.file, o.span, m);
        let value = || {
            o.value
                .clone()
                .ok_or_else(|| err(format!("--{} needs a value: --{}=N", o.name, o.name)))
        };
        let int = |v: String| {
            v.parse::<i64>()
                .map_err(|_| err(format!("bad --{}: {v}", o.name)))
        };
        match o.name.as_str() {
            "tolerance_usecs" => t.tolerance_usecs = int(value()?)?,
            "tolerance_percent" => {
                let v = value()?;
                t.tolerance_percent = v
                    .parse()
                    .ok()
                    .filter(|p| (0.0..=100.0).contains(p))
                    .ok_or_else(|| err(format!("bad --tolerance_percent: {v}")))?;
            }
            "tcp_ts_tick_usecs" => t.tcp_ts_tick_usecs = int(value()?)?,
            "bind_port" | "connect_port" => {
                let v = value()?;
                let port = v
                    .parse::<u16>()
                    .map_err(|_| err(format!("bad --{}: {v}", o.name)))?;
                if o.name == "bind_port" {
                    t.bind_port = port;
                } else {
                    t.connect_port = port;
                }
            }
            "strict_segments" => t.strict_segments = true,
            "ip_version" => {
                if value()? != "ipv4" {
                    return Err(err(
                        "synack script runs IPv4 only (--ip_version=ipv4)".into()
                    ));
                }
            }
            "verbose" => {}
            other => {
                return Err(err(format!(
                    "option --{other} is not supported by synack script (tolerance_usecs, tolerance_percent, tcp_ts_tick_usecs, bind_port, connect_port, strict_segments, ip_version are)"
                )));
            }
        }
    }
    if let Some(tol) = tolerance_usecs {
        t.tolerance_usecs = tol;
    }
    if t.tolerance_usecs <= 0 {
        return Err(ScriptError::at(
            &script.file,
            ast::Span::default(),
            "--tolerance_usecs must be positive",
        ));
    }
    // Shell blocks are read before anything runs, so a refusal names its line at once.
    let shells = script.init_shell.iter().chain(&script.cleanup_shell).chain(
        script.events.iter().filter_map(|e| match &e.action {
            ast::Action::Shell(s) => Some(s),
            _ => None,
        }),
    );
    for s in shells {
        runner::shell_commands(&s.text).map_err(|m| ScriptError::at(&script.file, s.span, m))?;
    }
    Ok(t)
}

/// Judges a run of `script` on `stack` by the script's directives for that stack.
pub fn judge(script: &Script, stack: &str, result: &RunResult) -> Verdict {
    let mine: Vec<_> = script
        .expected_failures
        .iter()
        .filter(|d| d.stack == stack)
        .collect();
    let anywhere = mine.iter().find(|d| d.line.is_none());
    if let Some(f) = &result.failure {
        // A run the runner made under another name (a test's stack) applied no marks
        // of `stack`'s: a failure at one of its marked events is still the one expected.
        let marked = anywhere.or_else(|| mine.iter().find(|d| d.lines.contains(&f.line)));
        return match marked {
            Some(d) => Verdict::ExpectedFailure {
                reason: d.reason.clone(),
                message: f.message.clone(),
            },
            None => Verdict::Failed(f.message.clone()),
        };
    }
    if let Some(d) = anywhere {
        return Verdict::UnexpectedPass {
            reason: d.reason.clone(),
        };
    }
    if let Some((line, reason)) = result.unexpected_passes.first() {
        return Verdict::UnexpectedPass {
            reason: format!("line {line}: {reason}"),
        };
    }
    if result.backend != stack
        && let Some(d) = mine.first()
    {
        return Verdict::UnexpectedPass {
            reason: d.reason.clone(),
        };
    }
    if result.differences.is_empty() {
        Verdict::Passed
    } else {
        Verdict::Differs(result.differences.clone())
    }
}

/// Writes a run's packets, with their comments, to a pcapng file.
pub fn write_capture(
    path: &Path,
    epoch: std::time::Duration,
    result: &RunResult,
) -> Result<(), String> {
    write_capture_to(
        &CaptureConfig::file(path),
        format!("synack script against {}", result.backend),
        epoch,
        result,
    )
    .map(|_| ())
}

/// Writes a run's packets, with their comments, where `config` says (a file, a ring, a
/// stream); returns how the capture ended.
pub fn write_capture_to(
    config: &CaptureConfig,
    description: String,
    epoch: std::time::Duration,
    result: &RunResult,
) -> Result<crate::capture::Summary, String> {
    let mut sink = PcapngSink::create(
        config,
        SinkInfo {
            interface: "script",
            description,
        },
    )
    .map_err(|e| e.to_string())?;
    let summary = sink.summary_handle();
    let fail = |e: std::io::Error| format!("cannot write the capture {}: {e}", sink_name(config));
    for p in &result.packets {
        let dir = if p.inbound {
            Direction::In
        } else {
            Direction::Out
        };
        sink.write_packet(epoch + p.at, dir, &p.bytes, Some(&p.comment))
            .map_err(fail)?;
    }
    sink.finish().map_err(fail)?;
    summary
        .get()
        .ok_or_else(|| format!("the capture {} did not finish", sink_name(config)))
}

fn sink_name(config: &CaptureConfig) -> String {
    match &config.target {
        crate::capture::Target::Path(p) => p.display().to_string(),
        crate::capture::Target::Stdout => "stdout".into(),
    }
}

/// Runs every script of `options` and reports.
pub fn run(options: &Options) -> Report {
    let stacks: Vec<Stack> = if options.compare {
        vec![Stack::Linux, Stack::Smoltcp]
    } else {
        vec![options.against]
    };
    let dir = options
        .capture_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CAPTURE_DIR));
    // synack's own default directory is made when missing; any other must exist (the
    // capture then says so, per script, in one sentence).
    if dir.starts_with(crate::capture::DEFAULT_DIR) {
        let _ = std::fs::create_dir_all(&dir);
    }
    let mut report = Report {
        scripts: Vec::new(),
        compare: options.compare,
    };
    for file in &options.files {
        if options
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
        {
            break;
        }
        let (source, script) = match load(file) {
            Ok(x) => x,
            Err(e) => {
                report.scripts.push(ScriptReport {
                    file: file.clone(),
                    source: String::new(),
                    error: Some(e),
                    runs: Vec::new(),
                });
                continue;
            }
        };
        let tuning = match tuning(&script, options.tolerance_usecs) {
            Ok(t) => t,
            Err(e) => {
                report.scripts.push(ScriptReport {
                    file: file.clone(),
                    source,
                    error: Some(e.to_string()),
                    runs: Vec::new(),
                });
                continue;
            }
        };
        let mut runs = Vec::new();
        for &stack in &stacks {
            runs.push(run_on(
                &script,
                &tuning,
                stack,
                file,
                &dir,
                options.stop.clone(),
            ));
        }
        report.scripts.push(ScriptReport {
            file: file.clone(),
            source,
            error: None,
            runs,
        });
    }
    report
}

fn run_on(
    script: &Script,
    tuning: &Tuning,
    stack: Stack,
    file: &Path,
    dir: &Path,
    stop: Option<Arc<AtomicBool>>,
) -> StackRun {
    let mut backend = match stack.backend() {
        Ok(b) => b,
        Err(e) => {
            return StackRun {
                stack,
                verdict: Verdict::Unavailable(e.to_string()),
                result: None,
                capture: None,
            };
        }
    };
    let result = run_script_until(script, tuning, backend.as_mut(), stop);
    let epoch = backend.epoch();
    drop(backend);
    let verdict = judge(script, stack.name(), &result);
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "script".into());
    let path = dir.join(format!("{stem}-{}.pcapng", stack.name()));
    let (capture, verdict) = match write_capture(&path, epoch, &result) {
        Ok(()) => (Some(path), verdict),
        Err(e) => (
            None,
            match verdict {
                Verdict::Passed => Verdict::Failed(e),
                v => v,
            },
        ),
    };
    StackRun {
        stack,
        verdict,
        result: Some(result),
        capture,
    }
}

/// The report as text: one block per script; with `--compare`, the script line by line
/// with each stack's outcome beside it, and at the end the table of every difference the
/// scripts mark.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let (mut passed, mut failed) = (0, 0);
    for s in &report.scripts {
        if let Some(e) = &s.error {
            failed += 1;
            let _ = writeln!(out, "{e}");
            continue;
        }
        for r in &s.runs {
            let name = r.stack.name();
            match &r.verdict {
                Verdict::Passed => {
                    passed += 1;
                    let _ = writeln!(out, "ok       {} [{name}]", s.file.display());
                }
                Verdict::Differs(diffs) => {
                    passed += 1;
                    let _ = writeln!(
                        out,
                        "differs  {} [{name}] as marked, and holds to the rest:",
                        s.file.display()
                    );
                    for g in group(diffs) {
                        let _ = writeln!(out, "         {}: {}", g.lines_text(), g.reason);
                    }
                }
                Verdict::ExpectedFailure { reason, .. } => {
                    passed += 1;
                    let _ = writeln!(
                        out,
                        "differs  {} [{name}] as marked: {reason}",
                        s.file.display()
                    );
                }
                Verdict::Failed(m) => {
                    failed += 1;
                    let _ = writeln!(
                        out,
                        "FAILED   {} [{name}]\n{}",
                        s.file.display(),
                        m.trim_end()
                    );
                }
                Verdict::UnexpectedPass { reason } => {
                    failed += 1;
                    let _ = writeln!(
                        out,
                        "FAILED   {} [{name}] passed where the script marks it as differing ({reason}): update or remove the synack-expect-fail line",
                        s.file.display()
                    );
                }
                Verdict::Unavailable(why) => {
                    let _ = writeln!(out, "skipped  {} [{name}]: {why}", s.file.display());
                }
            }
            if let Some(c) = &r.capture
                && !matches!(r.verdict, Verdict::Passed)
            {
                let _ = writeln!(out, "         capture: {}", c.display());
            }
        }
        if report.compare {
            out.push_str(&side_by_side(s));
        }
    }
    if report.compare {
        let table = differences_table(report);
        if !table.is_empty() {
            let _ = writeln!(
                out,
                "\nDifferences the scripts mark (each seen in this run):\n\n{table}"
            );
        }
    }
    let _ = writeln!(out, "{passed} passed, {failed} failed");
    out
}

/// Consecutive differences with one reason (one directive's events), as one.
pub struct DifferenceGroup<'a> {
    pub lines: Vec<u32>,
    pub reason: &'a str,
}

impl DifferenceGroup<'_> {
    /// `line 16` or `lines 20, 21, 22`.
    pub fn lines_text(&self) -> String {
        format!(
            "line{} {}",
            if self.lines.len() > 1 { "s" } else { "" },
            runner::join_lines(&self.lines)
        )
    }
}

/// Groups differences that share a reason and follow each other.
pub fn group(diffs: &[Difference]) -> Vec<DifferenceGroup<'_>> {
    let mut out: Vec<DifferenceGroup<'_>> = Vec::new();
    for d in diffs {
        match out.last_mut() {
            Some(g) if g.reason == d.reason => g.lines.push(d.line),
            _ => out.push(DifferenceGroup {
                lines: vec![d.line],
                reason: &d.reason,
            }),
        }
    }
    out
}

/// Every difference the runs saw where their scripts mark one, as a Markdown table: one
/// row per difference (the directive's reason, with its RFC section) and stack, with the
/// scenarios and lines where it showed. This is the table the README shows. Empty when
/// there is none.
pub fn differences_table<'r>(report: &'r Report) -> String {
    // (stack, reason) -> places, in the order first seen.
    let mut rows: Vec<(&str, &str, Vec<String>)> = Vec::new();
    let mut add = |stack: &'static str, reason: &'r str, place: String| match rows
        .iter_mut()
        .find(|(s, r, _)| *s == stack && *r == reason)
    {
        Some(row) => row.2.push(place),
        None => rows.push((stack, reason, vec![place])),
    };
    for s in &report.scripts {
        let name = s.file.file_stem().map_or_else(
            || s.file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        for r in &s.runs {
            match &r.verdict {
                Verdict::Differs(diffs) => {
                    for g in group(diffs) {
                        add(
                            r.stack.name(),
                            g.reason,
                            format!("`{name}` {}", runner::join_lines(&g.lines)),
                        );
                    }
                }
                Verdict::ExpectedFailure { reason, .. } => {
                    let line = r
                        .result
                        .as_ref()
                        .and_then(|x| x.failure.as_ref())
                        .map_or(String::new(), |f| format!(" {} on", f.line));
                    add(r.stack.name(), reason, format!("`{name}`{line}"));
                }
                _ => {}
            }
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    let mut out =
        String::from("| stack | what differs | where (scenario, lines) |\n|---|---|---|\n");
    for (stack, reason, places) in rows {
        let _ = writeln!(out, "| {stack} | {reason} | {} |", places.join("; "));
    }
    out
}

/// The script's event lines with each stack's outcome (`ok`, `FAIL`, `-` not reached,
/// `differs` where marked, blank for a line of another stack, `n/a` for a stack that
/// could not run), and `<>` where they differ.
pub fn side_by_side(s: &ScriptReport) -> String {
    let lines: Vec<&str> = s.source.lines().collect();
    let mut out = String::new();
    let names: Vec<&str> = s.runs.iter().map(|r| r.stack.name()).collect();
    let head = format!(
        "   line  {:<52} {}",
        "script",
        names.iter().map(|n| format!("{n:<9}")).collect::<String>()
    );
    let _ = writeln!(out, "{}", head.trim_end());
    let Some(first) = s.runs.iter().find_map(|r| r.result.as_ref()) else {
        return out;
    };
    for (i, (line, _)) in first.events.iter().enumerate() {
        let text = lines.get(*line as usize - 1).map_or("", |l| l.trim());
        // A line for one stack shows as `[stack] EVENT`.
        let text = match text
            .strip_prefix("//")
            .map(str::trim_start)
            .and_then(|t| t.strip_prefix("synack-"))
            .and_then(|t| t.split_once(':'))
        {
            Some((stack, event)) => format!(
                "[{stack}] {}",
                event.split_whitespace().collect::<Vec<_>>().join(" ")
            ),
            None => text.to_owned(),
        };
        let text: String = text.chars().take(52).collect();
        let marks: Vec<&str> = s
            .runs
            .iter()
            .map(
                |r| match (&r.verdict, r.result.as_ref().map(|x| &x.events[i].1)) {
                    (Verdict::Unavailable(_), _) | (_, None) => "n/a",
                    (_, Some(EventStatus::Passed)) => "ok",
                    (_, Some(EventStatus::Failed(_))) => "FAIL",
                    (_, Some(EventStatus::NotReached)) => "-",
                    (_, Some(EventStatus::Skipped)) => "",
                    (_, Some(EventStatus::Differed(_))) => "differs",
                },
            )
            .collect();
        let ran: Vec<&&str> = marks.iter().filter(|m| **m != "n/a").collect();
        let differ = ran.windows(2).any(|w| w[0] != w[1])
            || ran.iter().any(|m| matches!(**m, "differs" | "FAIL"));
        let row = format!(
            "{} {:>4}  {text:<52} {}",
            if differ { "<>" } else { "  " },
            line,
            marks.iter().map(|m| format!("{m:<9}")).collect::<String>()
        );
        let _ = writeln!(out, "{}", row.trim_end());
    }
    for r in &s.runs {
        let name = r.stack.name();
        match &r.verdict {
            Verdict::Failed(m) | Verdict::ExpectedFailure { message: m, .. } => {
                let _ = writeln!(out, "  {name}: {}", m.lines().next().unwrap_or(""));
            }
            Verdict::Differs(diffs) => {
                for g in group(diffs) {
                    let _ = writeln!(out, "  {name} {}: {}", g.lines_text(), g.reason);
                    for d in diffs.iter().filter(|d| g.lines.contains(&d.line)) {
                        match &d.message {
                            // What was seen, in packetdrill's words, below the reason.
                            Some(m) => {
                                for l in m.lines() {
                                    let _ = writeln!(out, "      {l}");
                                }
                            }
                            // The lines that stood for them are in the table above.
                            None if d.line == g.lines[0] => {
                                let _ = writeln!(
                                    out,
                                    "      {name} runs line{} {} instead",
                                    if d.replaced_by.len() > 1 { "s" } else { "" },
                                    runner::join_lines(&d.replaced_by)
                                );
                            }
                            None => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}
