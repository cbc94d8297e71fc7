//! RFC 5961 in front of smoltcp: a RST or SYN that a blind attacker could have guessed
//! does not end a connection. smoltcp closes on any RST in the window; RFC 5961 (and
//! Linux) accept only one at exactly RCV.NXT and answer the rest with a challenge ACK.

use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};

use super::conn::Conn;
use super::wire::Bare;
use crate::observe::{Segment, seq_ge};

/// What to do with a segment for an existing connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// smoltcp takes it.
    Pass,
    /// A challenge ACK answers it; smoltcp never sees it.
    Challenge(&'static str),
    /// Dropped; smoltcp never sees it.
    Drop(&'static str),
    /// smoltcp takes it without its FIN, which lies beyond our receive window.
    WithoutFin(&'static str),
}

pub fn judge(conn: &Conn, seg: &Segment) -> Judgement {
    let sock = conn.socket();
    let state = sock.state();
    // SYN-SENT has its own rule (an acceptable RST acknowledges our SYN, RFC 9293
    // §3.10.7.3), which smoltcp follows.
    if matches!(
        state,
        tcp::State::SynSent | tcp::State::Listen | tcp::State::Closed
    ) {
        return Judgement::Pass;
    }
    let Some(rcv_nxt) = conn.seq.rcv_nxt(sock) else {
        return Judgement::Pass;
    };
    if seg.rst {
        // RFC 5961 §3.2: exactly RCV.NXT resets; elsewhere in the window, a challenge;
        // outside it, nothing.
        if seg.seq == rcv_nxt {
            return Judgement::Pass;
        }
        let offset = seg.seq.wrapping_sub(rcv_nxt);
        return if offset < conn.seq.rcv_wnd().max(1) {
            Judgement::Challenge("RST in the window but not at RCV.NXT (RFC 5961 §3.2)")
        } else {
            Judgement::Drop("RST outside the window (RFC 5961 §3.2)")
        };
    }
    if seg.syn {
        // A retransmitted SYN while our SYN-ACK is out: smoltcp answers it again.
        if state == tcp::State::SynReceived && !seg.ack_flag {
            return Judgement::Pass;
        }
        // RFC 5961 §4.2: any SYN on a synchronized connection gets a challenge ACK.
        return Judgement::Challenge("SYN on a synchronized connection (RFC 5961 §4.2)");
    }
    // RFC 9293 §3.10.7.4: of a segment that runs past the receive window only the part
    // inside is taken; its FIN, after the end, is not (the peer sends it again). smoltcp
    // 0.14 cuts the data at the window's edge but still takes the FIN, and the bytes it
    // cut off are lost to a connection that then closes as if complete. smoltcp's window
    // is ours: the last ACK we sent plus the window it offered, scaled.
    if seg.fin
        && let Some(last_ack) = conn.seq.last_ack
    {
        let right_edge = last_ack.wrapping_add(conn.seq.rcv_wnd());
        let end = seg.seq.wrapping_add(seg.payload_len);
        if !seq_ge(right_edge, end) {
            return Judgement::WithoutFin(
                "FIN beyond our receive window: the data inside is taken, the FIN is not (RFC 9293 §3.10.7.4)",
            );
        }
    }
    Judgement::Pass
}

/// `<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>` (RFC 5961 §3.2).
pub fn challenge_ack(conn: &Conn) -> Bare {
    Bare {
        src: conn.tuple.local,
        dst: conn.tuple.remote,
        seq: conn.seq.snd_nxt.unwrap_or(0),
        ack: conn.seq.rcv_nxt(conn.socket()),
        rst: false,
        syn: None,
        window: conn.seq.last_window,
    }
}

/// A token bucket: `per_sec` events a second, in bursts of as many.
#[derive(Debug, Clone)]
pub struct RateLimit {
    per_sec: u32,
    tokens: u32,
    refilled: Option<Instant>,
}

impl RateLimit {
    pub fn new(per_sec: u32) -> Self {
        RateLimit {
            per_sec,
            tokens: per_sec,
            refilled: None,
        }
    }

    /// Whether one more is allowed now.
    pub fn allow(&mut self, now: Instant) -> bool {
        let last = *self.refilled.get_or_insert(now);
        let elapsed = now - last;
        if elapsed >= Duration::from_millis(1) {
            // In u64 and capped before narrowing: after a long quiet spell `add` is huge.
            let add = elapsed
                .total_micros()
                .saturating_mul(u64::from(self.per_sec))
                / 1_000_000;
            if add > 0 {
                let tokens = (u64::from(self.tokens) + add).min(u64::from(self.per_sec));
                self.tokens = tokens as u32;
                self.refilled = Some(now);
            }
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// One out-of-window ACK (a challenge ACK, or TIME-WAIT's ACK) per connection per this
/// long: Linux's `tcp_invalid_ratelimit` (500 ms). It keeps one connection's attacker
/// from spending the global budget that every connection shares (CVE-2016-5696 used a
/// global limit alone to learn of other connections).
pub const PER_CONNECTION_INTERVAL: Duration = Duration::from_millis(500);

/// Whether a connection that last sent such an ACK at `last` may send one at `now`.
pub fn per_connection_allows(last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|t| now - t >= PER_CONNECTION_INTERVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_refills_at_its_rate() {
        let mut r = RateLimit::new(10);
        let t0 = Instant::from_secs(5);
        assert_eq!((0..20).filter(|_| r.allow(t0)).count(), 10);
        assert!(!r.allow(t0 + Duration::from_millis(50)));
        assert!(r.allow(t0 + Duration::from_millis(100)));
        let later = t0 + Duration::from_secs(10);
        assert_eq!((0..20).filter(|_| r.allow(later)).count(), 10);
        // Fifty days of quiet: the refill saturates instead of overflowing.
        let much_later = later + Duration::from_secs(50 * 86_400);
        assert_eq!((0..20).filter(|_| r.allow(much_later)).count(), 10);
    }

    #[test]
    fn one_challenge_per_connection_per_interval() {
        let t0 = Instant::from_secs(5);
        assert!(per_connection_allows(None, t0));
        assert!(!per_connection_allows(
            Some(t0),
            t0 + Duration::from_millis(499)
        ));
        assert!(per_connection_allows(
            Some(t0),
            t0 + PER_CONNECTION_INTERVAL
        ));
    }
}
