//! Named scenarios for learners: `synack demo --scenario NAME` plays one script of the
//! corpus against synack's own stack (the smoltcp backend: no root, a virtual clock),
//! with the node's journey, a capture whose comments hold both the script's words and the
//! node's, and a few lines on what to look at in it.
//!
//! The scripts are built into the binary (`include_str!` of `tests/scenarios/`), so the
//! command works wherever the binary runs; the corpus's own tests keep them true.

use std::fmt::Write as _;
use std::time::Duration;

use super::backend::Backend;
use super::runner::Captured;
use super::smoltcp::SmoltcpBackend;
use super::{RunResult, Verdict, judge, parser, run_script, tuning};
use crate::capture::{CaptureConfig, Summary};
use crate::journey::{Journal, Kept};

/// A scenario a learner can ask for by name.
#[derive(Debug)]
pub struct Named {
    /// `synack demo --scenario NAME`.
    pub name: &'static str,
    /// Its file in `tests/scenarios/`.
    pub file: &'static str,
    pub source: &'static str,
    /// What it shows, in one line.
    pub about: &'static str,
    /// What to look at: `{frame:L}` stands for the frame of the capture that line L of
    /// the script injected or expected.
    pub look: &'static [&'static str],
    /// How long the stack runs on after the script's last event (for a TIME-WAIT to end
    /// in the journey).
    pub after: Duration,
}

/// The scenarios, in the order `--help` lists them.
pub const NAMED: &[Named] = &[
    Named {
        name: "lost-syn",
        file: "lost-syn.pkt",
        source: include_str!("../../tests/scenarios/lost-syn.pkt"),
        about: "our SYN is lost twice: retransmitted after 1 s, then 2 s later",
        look: &[
            "frames {frame:10}, {frame:12} and {frame:13}: the same SYN (same ISN) at 0 s, 1 s and 3 s: the initial retransmission timeout of 1 s, doubled after each loss (RFC 6298 §2.1, §5.5)",
            "frame {frame:14}: the SYN-ACK at last; the journey's SYN-SENT -> ESTABLISHED, and connect() returns after 3.1 s",
        ],
        after: Duration::ZERO,
    },
    Named {
        name: "lost-syn-ack",
        file: "lost-syn-ack.pkt",
        source: include_str!("../../tests/scenarios/lost-syn-ack.pkt"),
        about: "our SYN-ACK goes unanswered: retransmitted after 1 s, then 2 s later",
        look: &[
            "frame {frame:10}: the SYN puts a connection in the listener's SYN queue (`SYN queue 1/2048` in its comment)",
            "frames {frame:12}, {frame:13} and {frame:14}: the SYN-ACK, again at 1 s and 3 s while the ACK does not come (RFC 6298 §5.5); line 11 says why its options differ from Linux's",
            "frame {frame:19}: the ACK completes the handshake (SYN-RECEIVED -> ESTABLISHED) and accept() returns",
        ],
        after: Duration::ZERO,
    },
    Named {
        name: "zero-window",
        file: "zero-window.pkt",
        source: include_str!("../../tests/scenarios/zero-window.pkt"),
        about: "the peer's window closes: probes until it opens again",
        look: &[
            "frame {frame:19}: the script's ACK closes the window (win 0); the next 100 bytes wait in the send buffer",
            "frames {frame:24}, {frame:25} and {frame:26}: window probes, each one new byte (101:102): the first at once, then 2 s and 4 s later (RFC 9293 §3.8.6.1 asks for the first after a retransmission timeout; lines 23-29 say how Linux probes)",
            "frame {frame:32} opens the window; frame {frame:33} sends the 100 bytes that waited, from byte 101: the probed byte was never acknowledged",
        ],
        after: Duration::ZERO,
    },
    Named {
        name: "rto",
        file: "rto-backoff.pkt",
        source: include_str!("../../tests/scenarios/rto-backoff.pkt"),
        about: "data goes unacknowledged: the retransmission timer fires and backs off",
        look: &[
            "frame {frame:17}: 100 bytes that the script never acknowledges",
            "frames {frame:21}, {frame:22} and {frame:23}: the same segment at 1.1 s, 3.1 s and 7.1 s: the retransmission timeout, at least 1 s in smoltcp (RFC 6298 §2.4), doubling each time (§5.5); Linux sends a tail loss probe first and starts from about 300 ms (lines 24-29)",
            "frame {frame:30}: the ACK at last",
        ],
        after: Duration::ZERO,
    },
    Named {
        name: "fast-retransmit",
        file: "fast-retransmit.pkt",
        source: include_str!("../../tests/scenarios/fast-retransmit.pkt"),
        about: "three duplicate ACKs: the lost segment goes again at once",
        look: &[
            "frames {frame:19} on: the 5000-byte write leaves as five segments of the script's MSS of 1000 (`piece 1 of 5` ... in the comments)",
            "frames {frame:21}, {frame:22} and {frame:23}: three duplicate ACKs (ack 1): the first segment was lost, the others arrived",
            "frame {frame:24}: the first segment again, at once, without waiting for the retransmission timer (RFC 5681 §3.2); frame {frame:26} acknowledges all 5000 bytes",
        ],
        after: Duration::ZERO,
    },
    Named {
        name: "nagle",
        file: "nagle-on.pkt",
        source: include_str!("../../tests/scenarios/nagle-on.pkt"),
        about: "Nagle's algorithm holds small writes while data is in flight",
        look: &[
            "line 17: synack's node has Nagle off unless asked (Linux has it on); line 18 turns it on",
            "frame {frame:21}: the first 10 bytes leave at once; the next two writes wait, 10 bytes being unacknowledged",
            "frame {frame:25} acknowledges them; frame {frame:27}: the two held writes leave as one 20-byte segment (RFC 1122 §4.2.3.4)",
        ],
        after: Duration::ZERO,
    },
    Named {
        name: "time-wait",
        file: "time-wait-fin-retransmit.pkt",
        source: include_str!("../../tests/scenarios/time-wait-fin-retransmit.pkt"),
        about: "we close first, so we keep TIME-WAIT, and ACK the peer's FIN again there",
        look: &[
            "frame {frame:17}: our FIN: we close first (ESTABLISHED -> FIN-WAIT-1), so TIME-WAIT will be ours",
            "frame {frame:19}: the script's FIN; frame {frame:20} acknowledges it and the connection enters TIME-WAIT",
            "frame {frame:23}: the same FIN again (our ACK \"was lost\"); frame {frame:24}: TIME-WAIT acknowledges it again and restarts its 60 s (RFC 9293 §3.10.7.4)",
            "the journey's last line: TIME-WAIT over, 60 s after that second FIN",
        ],
        after: Duration::from_secs(61),
    },
];

/// The scenario called `name`.
pub fn find(name: &str) -> Option<&'static Named> {
    NAMED.iter().find(|n| n.name == name)
}

/// What a played scenario gives.
pub struct Played {
    pub verdict: Verdict,
    pub result: RunResult,
    /// The node's journey, every connection's record.
    pub journey: Kept,
    /// How the capture went, if one was asked for.
    pub capture: Option<Summary>,
    /// What to look at, with the frames filled in.
    pub look: Vec<String>,
}

/// Plays `named` against synack's own stack. `internals`: the node explains each segment
/// it sends (`--internals on`).
pub fn play(
    named: &Named,
    capture: Option<&CaptureConfig>,
    internals: bool,
) -> Result<Played, String> {
    let script = parser::parse(named.file, named.source).map_err(|e| e.to_string())?;
    let tuning = tuning(&script, None).map_err(|e| e.to_string())?;
    let mut cfg = super::smoltcp::config();
    cfg.internals = internals;
    let mut backend =
        SmoltcpBackend::with_config(cfg, Journal::keeping("synack")).map_err(|e| e.to_string())?;
    let mut result = run_script(&script, &tuning, &mut backend);
    run_on(&mut backend, named.after, &mut result)?;
    let verdict = judge(&script, backend.name(), &result);
    let journey = backend.take_journey();
    let capture = match capture {
        Some(config) => Some(super::write_capture_to(
            config,
            format!(
                "synack demo --scenario {}: {} against synack's own stack",
                named.name, named.file
            ),
            backend.epoch(),
            &result,
        )?),
        None => None,
    };
    let look = named
        .look
        .iter()
        .map(|t| fill_frames(t, &result.packets))
        .collect();
    Ok(Played {
        verdict,
        result,
        journey,
        capture,
        look,
    })
}

/// Lets the stack's clock run `after` past the script's end; what it sends then joins the
/// capture.
fn run_on(
    backend: &mut SmoltcpBackend,
    after: Duration,
    result: &mut RunResult,
) -> Result<(), String> {
    let end = backend.now() + after;
    while backend.now() < end {
        backend.wait(end).map_err(|e| e.to_string())?;
        while let Some(p) = backend.take_emitted() {
            let mut comment = String::from("after the script's end");
            if !p.note.is_empty() {
                comment.push_str("; ");
                comment.push_str(&p.note);
            }
            result.packets.push(Captured {
                at: p.at,
                inbound: false,
                bytes: p.bytes,
                comment,
            });
        }
    }
    Ok(())
}

/// `{frame:L}` -> the number (from 1, as Wireshark counts) of the first frame the script's
/// line L injected or expected; `?` if there is none.
pub fn fill_frames(template: &str, packets: &[Captured]) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find("{frame:") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "{frame:".len()..];
        let Some(j) = after.find('}') else {
            out.push_str(&rest[i..]);
            return out;
        };
        let frame = after[..j].parse::<u32>().ok().and_then(|line| {
            let expected = format!("expected by the script (line {line})");
            let injected = format!("injected (line {line})");
            packets
                .iter()
                .position(|p| p.comment.starts_with(&expected) || p.comment.starts_with(&injected))
        });
        match frame {
            Some(n) => {
                let _ = write!(out, "{}", n + 1);
            }
            None => out.push('?'),
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    out
}

/// The script with its line numbers, as the pointers name them.
pub fn numbered(named: &Named) -> String {
    let mut out = String::new();
    for (i, line) in named.source.lines().enumerate() {
        let _ = writeln!(out, "{:>4}  {line}", i + 1);
    }
    out
}
