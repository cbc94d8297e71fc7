//! What synack's own captures say about the sender in a segment's comment (with
//! `--internals on`): pieces separated by "; ", of which these are read:
//!
//! - `rtt sample 1.020 ms, srtt 1.000 ms, rttvar 0.500 ms, rto 1000 ms` (RFC 6298)
//! - `in flight 14600 B, peer window 65535 B, send buffer 120000/262144 B`
//! - `why: <cause>` (`new data`, `retransmission after RTO 1000 ms`, ...)
//! - `fault: lost ...` (the link model dropped this packet)
//!
//! Any other piece, any item in an unexpected form, and any comment from another tool
//! are left alone: a comment is untrusted text and never an error.

use serde::Serialize;

/// The sender's state as one segment's comment gives it; each field only if present.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Sender {
    pub rtt_sample_ms: Option<f64>,
    pub srtt_ms: Option<f64>,
    pub rttvar_ms: Option<f64>,
    pub rto_ms: Option<f64>,
    pub in_flight: Option<u64>,
    pub peer_window: Option<u64>,
    /// Send buffer: bytes held, and its size.
    pub send_buffer: Option<(u64, u64)>,
    /// Why the segment left now.
    pub why: Option<String>,
}

impl Sender {
    fn is_empty(&self) -> bool {
        *self == Sender::default()
    }
}

/// A number followed by `unit`: `1.020 ms`, `14600 B`.
fn value(text: &str, unit: &str) -> Option<f64> {
    let v: f64 = text.strip_suffix(unit)?.trim_end().parse().ok()?;
    v.is_finite().then_some(v)
}

fn bytes(text: &str) -> Option<u64> {
    text.strip_suffix(" B")?.trim().parse().ok()
}

/// The sender's state in a comment, if it has any.
pub fn sender(comment: &str) -> Option<Sender> {
    let mut s = Sender::default();
    for piece in comment.split("; ") {
        if let Some(why) = piece.strip_prefix("why: ") {
            s.why = Some(why.to_owned());
            // "retransmission after RTO 1000 ms (now backed off to 2000 ms, ...)": the RTO
            // from here on (RFC 6298 §5.5), unless an estimator piece says it outright.
            if let Some((_, after)) = why.split_once("backed off to ")
                && let Some((v, _)) = after.split_once(" ms")
                && s.rto_ms.is_none()
            {
                s.rto_ms = value(v, "").filter(|v| *v >= 0.0);
            }
            continue;
        }
        for item in piece.split(", ") {
            if let Some(v) = item.strip_prefix("rtt sample ") {
                s.rtt_sample_ms = value(v, "ms");
            } else if let Some(v) = item.strip_prefix("srtt ") {
                s.srtt_ms = value(v, "ms");
            } else if let Some(v) = item.strip_prefix("rttvar ") {
                s.rttvar_ms = value(v, "ms");
            } else if let Some(v) = item.strip_prefix("rto ") {
                s.rto_ms = value(v, "ms");
            } else if let Some(v) = item.strip_prefix("in flight ") {
                s.in_flight = bytes(v);
            } else if let Some(v) = item.strip_prefix("peer window ") {
                s.peer_window = bytes(v);
            } else if let Some(v) = item.strip_prefix("send buffer ") {
                s.send_buffer = v
                    .strip_suffix(" B")
                    .and_then(|v| v.split_once('/'))
                    .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
            }
        }
    }
    (!s.is_empty()).then_some(s)
}

/// The comment says the link model dropped this packet.
pub fn lost(comment: &str) -> bool {
    comment
        .split("; ")
        .any(|piece| piece.starts_with("fault: lost"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_piece_synack_writes_is_read() {
        let c = "rtt sample 1.020 ms, srtt 1.000 ms, rttvar 0.500 ms, rto 1000 ms; \
                 in flight 14600 B, peer window 65535 B, send buffer 120000/262144 B; \
                 why: retransmission after RTO 1000 ms";
        let s = sender(c).unwrap();
        assert_eq!(s.rtt_sample_ms, Some(1.02));
        assert_eq!(s.srtt_ms, Some(1.0));
        assert_eq!(s.rttvar_ms, Some(0.5));
        assert_eq!(s.rto_ms, Some(1000.0));
        assert_eq!(s.in_flight, Some(14600));
        assert_eq!(s.peer_window, Some(65535));
        assert_eq!(s.send_buffer, Some((120000, 262144)));
        assert_eq!(s.why.as_deref(), Some("retransmission after RTO 1000 ms"));
        // Pieces alone, in any order, among others.
        let s = sender("our side: SYN-RECEIVED -> ESTABLISHED; why: new data; srtt 2 ms").unwrap();
        assert_eq!((s.srtt_ms, s.why.as_deref()), (Some(2.0), Some("new data")));
        assert_eq!(s.rto_ms, None);
        // A timeout's backoff is the RTO from then on.
        let s = sender("why: retransmission after RTO 1000 ms (now backed off to 2000 ms, RFC 6298 §5.5); in flight 1460 B").unwrap();
        assert_eq!((s.rto_ms, s.in_flight), (Some(2000.0), Some(1460)));
    }

    #[test]
    fn other_comments_are_not_the_senders_state() {
        for c in [
            "SYN, handshake 1/3, ISN 1, window 65535",
            "fault: lost (--loss)",
            "rto fast",
            "srtt NaN ms, rto inf ms, in flight -3 B",
            "",
        ] {
            assert_eq!(sender(c), None, "{c}");
        }
        assert!(lost("fault: lost (--loss)"));
        assert!(lost("why: new data; fault: lost (--loss)"));
        assert!(!lost(
            "fault: held 3.0 ms so later packets overtake it (--reorder)"
        ));
        assert!(!lost("the client said: fault: lost"));
    }
}
