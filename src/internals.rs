//! What smoltcp knows about a connection and keeps private (its RTT estimator, why a
//! segment leaves now, its timers), read from its trace log.
//!
//! smoltcp writes these to the `log` crate at trace and debug level (`rtte: sample=…
//! srtt=… rttvar=… rto=…`, all in whole milliseconds, `retransmitting after rto`, `started fast retransmit`,
//! `sending zero-window probe`, …). The node polls one connection at a time, so while it
//! polls one, every line smoltcp logs is about that connection, and about the one packet
//! smoltcp is taking or sending. [`TraceTap`] is a `log` logger that, inside a [`listen`]
//! scope on the node's thread, keeps smoltcp's lines for the node instead of printing
//! them; everything else goes to the logger it wraps (env_logger in the binary).
//!
//! Formatting every line costs: `--internals on` turns this on (the benchmark says how
//! much it costs); off, smoltcp's trace calls stop at `log`'s level check.

use std::cell::RefCell;

use log::{Level, LevelFilter, Log, Metadata, Record};

thread_local! {
    /// Lines smoltcp logged inside the current scope, and how many of `lines` are used
    /// (the Strings are kept for reuse).
    static LINES: RefCell<Lines> = const { RefCell::new(Lines { lines: Vec::new(), used: 0, on: false }) };
}

struct Lines {
    lines: Vec<String>,
    used: usize,
    on: bool,
}

/// Lines kept per scope at most (a poll of one connection logs a handful).
const MAX_LINES: usize = 64;

/// A `log` logger that hands smoltcp's lines to the node inside [`listen`] scopes and
/// everything else to `inner`.
pub struct TraceTap {
    inner: Option<Box<dyn Log>>,
}

impl TraceTap {
    pub fn new(inner: Option<Box<dyn Log>>) -> Self {
        TraceTap { inner }
    }
}

fn is_smoltcp_tcp(target: &str) -> bool {
    target.starts_with("smoltcp::socket::tcp")
}

impl Log for TraceTap {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        (is_smoltcp_tcp(metadata.target()) && LINES.with(|l| l.borrow().on))
            || self.inner.as_ref().is_some_and(|i| i.enabled(metadata))
    }

    fn log(&self, record: &Record<'_>) {
        if is_smoltcp_tcp(record.target()) && record.level() >= Level::Debug {
            let kept = LINES.with(|l| {
                let mut l = l.borrow_mut();
                if !l.on {
                    return false;
                }
                if l.used < MAX_LINES {
                    use std::fmt::Write;
                    let i = l.used;
                    if i == l.lines.len() {
                        l.lines.push(String::new());
                    }
                    let line = &mut l.lines[i];
                    line.clear();
                    let _ = write!(line, "{}", record.args());
                    l.used += 1;
                }
                true
            });
            if kept {
                return;
            }
        }
        if let Some(inner) = &self.inner
            && inner.enabled(record.metadata())
        {
            inner.log(record);
        }
    }

    fn flush(&self) {
        if let Some(inner) = &self.inner {
            inner.flush();
        }
    }
}

/// Installs the tap as the process's logger, around `inner`, unless a logger is set
/// already (then smoltcp's lines reach whatever logger that is, and the node hears
/// nothing: internals stay empty). `level` is what `inner` wants printed.
pub fn install(inner: Option<Box<dyn Log>>, level: LevelFilter) {
    if log::set_boxed_logger(Box::new(TraceTap::new(inner))).is_ok() {
        log::set_max_level(level);
    }
}

/// Lets smoltcp's trace lines through `log` (a node with internals on calls this).
pub fn enable() {
    install(None, LevelFilter::Off);
    log::set_max_level(LevelFilter::Trace);
}

/// Starts keeping smoltcp's lines on this thread (dropping what the last scope kept).
pub fn listen() {
    LINES.with(|l| {
        let mut l = l.borrow_mut();
        l.on = true;
        l.used = 0;
    });
}

/// Stops keeping lines, and hands those kept since [`listen`] to `f`.
pub fn finish<R>(f: impl FnOnce(&[String]) -> R) -> R {
    LINES.with(|l| {
        let mut l = l.borrow_mut();
        l.on = false;
        let used = l.used;
        f(&l.lines[..used])
    })
}

/// smoltcp's RTT estimator after a sample (RFC 6298), in milliseconds: smoltcp measures
/// whole milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Rtte {
    pub sample_ms: u32,
    pub srtt_ms: u32,
    pub rttvar_ms: u32,
    pub rto_ms: u32,
}

/// What a line of smoltcp's says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Said {
    Rtte(Rtte),
    /// The RTO timer fired and the RTO doubled to this (RFC 6298 §5.5).
    RtoBackoff {
        rto_ms: u32,
    },
    RetransmitAfterRto,
    /// Enough duplicate ACKs came (smoltcp's threshold is 3): fast retransmit starts.
    FastRetransmitStarted,
    RetransmitFast,
    ZeroWindowProbe,
    KeepAlive,
    WindowUpdate,
    /// An ACK is forced out: a second full segment came (RFC 5681 §4.2).
    AckForced,
    /// The delayed-ACK timer started.
    AckDelayed,
    Acknowledge,
    SendData,
    Abort,
}

/// Reads one of smoltcp's lines.
pub fn parse(line: &str) -> Option<Said> {
    if let Some(rest) = line.strip_prefix("rtte: sample=") {
        let mut nums = numbers(rest);
        let sample_ms = nums.next()? as u32;
        let srtt_ms = nums.next()? as u32;
        let rttvar_ms = nums.next()? as u32;
        let rto_ms = nums.next()? as u32;
        return Some(Said::Rtte(Rtte {
            sample_ms,
            srtt_ms,
            rttvar_ms,
            rto_ms,
        }));
    }
    if let Some(rest) = line.strip_prefix("rtte: doubling rto to ") {
        let rto_ms = numbers(rest).next()? as u32;
        return Some(Said::RtoBackoff { rto_ms });
    }
    Some(match line {
        "retransmitting after rto" => Said::RetransmitAfterRto,
        "started fast retransmit" => Said::FastRetransmitStarted,
        "retransmitting for fast-retransmit" => Said::RetransmitFast,
        "sending zero-window probe" => Said::ZeroWindowProbe,
        "keep-alive timer expired" => Said::KeepAlive,
        "outgoing segment will update window" => Said::WindowUpdate,
        "delayed ack timer already started, forcing expiry" => Said::AckForced,
        "starting delayed ack timer" => Said::AckDelayed,
        "outgoing segment will acknowledge" => Said::Acknowledge,
        "outgoing segment will send data or flags" => Said::SendData,
        "outgoing segment will abort connection" => Said::Abort,
        _ => return None,
    })
}

fn numbers(s: &str) -> impl Iterator<Item = u64> + '_ {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .filter_map(|w| w.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoltcps_lines_are_read() {
        assert_eq!(
            parse("rtte: sample=12 srtt=10 rttvar=5 rto=1000"),
            Some(Said::Rtte(Rtte {
                sample_ms: 12,
                srtt_ms: 10,
                rttvar_ms: 5,
                rto_ms: 1000
            }))
        );
        assert_eq!(
            parse("rtte: doubling rto to 2000"),
            Some(Said::RtoBackoff { rto_ms: 2000 })
        );
        assert_eq!(
            parse("retransmitting after rto"),
            Some(Said::RetransmitAfterRto)
        );
        assert_eq!(parse("assembler: [ 0-1 ]"), None);
    }

    #[test]
    fn lines_are_kept_only_inside_a_scope_on_this_thread() {
        enable();
        listen();
        log::trace!(target: "smoltcp::socket::tcp", "sending zero-window probe");
        log::trace!(target: "somewhere::else", "not this one");
        let kept = finish(|lines| lines.to_vec());
        assert_eq!(kept, vec!["sending zero-window probe".to_owned()]);
        log::trace!(target: "smoltcp::socket::tcp", "outside");
        listen();
        assert!(finish(|lines| lines.is_empty()));
    }
}
