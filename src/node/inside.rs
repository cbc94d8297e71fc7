//! The sender's inner life, per connection (`--internals on`): what the wire shows
//! (bytes in flight, the peer's window, duplicate ACKs), what smoltcp said while it took
//! or sent a segment (why the segment left now, its RTT estimator), and what data waits
//! and why. smoltcp does not expose its congestion window: where that is the only
//! explanation left, the words say so instead of guessing a number.

use smoltcp::time::Instant;

use crate::internals::{Rtte, Said};
use crate::observe::{Segment, seq_ge};

/// What smoltcp said during one poll (of one packet in, or of one packet out).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Heard {
    pub rtte: Option<Rtte>,
    /// The RTO after doubling, when the retransmission timer fired.
    pub rto_backoff: Option<u32>,
    pub after_rto: bool,
    pub fast_started: bool,
    pub fast: bool,
    pub zero_window_probe: bool,
    pub keep_alive: bool,
    pub window_update: bool,
    pub ack_forced: bool,
    pub acknowledge: bool,
    pub send_data: bool,
    pub abort: bool,
}

impl Heard {
    pub fn from_lines(lines: &[String]) -> Heard {
        let mut h = Heard::default();
        for said in lines.iter().filter_map(|l| crate::internals::parse(l)) {
            match said {
                Said::Rtte(r) => h.rtte = Some(r),
                Said::RtoBackoff { rto_ms } => h.rto_backoff = Some(rto_ms),
                Said::RetransmitAfterRto => h.after_rto = true,
                Said::FastRetransmitStarted => h.fast_started = true,
                Said::RetransmitFast => h.fast = true,
                Said::ZeroWindowProbe => h.zero_window_probe = true,
                Said::KeepAlive => h.keep_alive = true,
                Said::WindowUpdate => h.window_update = true,
                Said::AckForced => h.ack_forced = true,
                Said::Acknowledge => h.acknowledge = true,
                Said::SendData => h.send_data = true,
                Said::Abort => h.abort = true,
                Said::AckDelayed => {}
            }
        }
        h
    }
}

/// Why data is not leaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    PeerWindow,
    Nagle,
    Congestion,
    Retransmission,
}

impl Hold {
    pub fn text(self) -> &'static str {
        match self {
            Hold::PeerWindow => "the peer's window was full",
            Hold::Nagle => "Nagle: a short segment waited for the ACK of data in flight (RFC 896)",
            Hold::Congestion => {
                "the congestion window was full (its size is not exposed by smoltcp)"
            }
            Hold::Retransmission => {
                "lost data waited for its retransmission timer (smoltcp's minimum RTO is 1 s)"
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Hold::PeerWindow => "peer_window",
            Hold::Nagle => "nagle",
            Hold::Congestion => "congestion_window",
            Hold::Retransmission => "retransmission_timer",
        }
    }
}

/// A connection's sender state, as far as the node can know it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inside {
    /// The highest ACK number the peer has sent: SND.UNA.
    pub snd_una: Option<u32>,
    /// The peer's window scale (from its SYN or SYN-ACK) and last window, scaled.
    pub peer_wscale: u8,
    pub peer_window: u32,
    /// Duplicate ACKs in a row (same ACK number, no data, no window change).
    pub dup_acks: u32,
    last_ack: Option<(u32, u16)>,
    /// The estimator after its last sample, and whether a segment has said it yet.
    pub rtte: Option<Rtte>,
    pub rtte_fresh: bool,
    /// Data waits since then, for this reason.
    pub held: Option<(Instant, Hold)>,
    /// smoltcp forced an ACK out while taking the last segment.
    pub ack_forced: bool,
}

impl Inside {
    /// A segment from the peer (before smoltcp takes it).
    pub fn inbound(&mut self, seg: &Segment) {
        if seg.syn {
            self.peer_wscale = seg.options.window_scale.unwrap_or(0).min(14);
            self.peer_window = u32::from(seg.window);
        } else {
            self.peer_window = u32::from(seg.window) << self.peer_wscale;
        }
        if !seg.ack_flag {
            return;
        }
        let duplicate = seg.payload_len == 0
            && !seg.syn
            && !seg.fin
            && self.last_ack == Some((seg.ack, seg.window));
        if duplicate {
            self.dup_acks = self.dup_acks.saturating_add(1);
        } else {
            self.dup_acks = 0;
        }
        if self.snd_una.is_none_or(|u| seq_ge(seg.ack, u)) {
            self.snd_una = Some(seg.ack);
        }
        self.last_ack = Some((seg.ack, seg.window));
    }

    /// What smoltcp said while it took the peer's segment.
    pub fn heard_in(&mut self, heard: &Heard) {
        if let Some(r) = heard.rtte {
            self.rtte = Some(r);
            self.rtte_fresh = true;
        }
        self.ack_forced = heard.ack_forced;
    }

    /// How many of a segment's `len` bytes at `seq` fit in the peer's window (SND.UNA +
    /// SND.WND, RFC 9293 §3.8.6), when that is fewer than all and more than none; `None`
    /// otherwise (it fits, or the window is closed and this is a probe). Only a segment
    /// from SND.UNA is judged, as smoltcp's fast retransmission sends it: smoltcp keeps
    /// its other segments inside the same window itself.
    pub fn fits_in_window(&self, seq: u32, len: u32) -> Option<u32> {
        if self.snd_una != Some(seq) {
            return None;
        }
        (0 < self.peer_window && self.peer_window < len).then_some(self.peer_window)
    }

    /// Bytes sent and not yet acknowledged, once `snd_nxt` has gone out.
    pub fn in_flight(&self, snd_nxt: u32) -> u32 {
        self.snd_una
            .map_or(0, |u| snd_nxt.wrapping_sub(u).min(1 << 30))
    }

    /// Why a segment we send leaves now. `resent`: its data was sent before.
    pub fn why(&self, heard: &Heard, seg: &Segment, resent: bool, timer: bool) -> String {
        if seg.rst {
            return "RST: the connection is aborted".into();
        }
        if heard.after_rto || (resent && seg.payload_len > 0 && !heard.fast) {
            let rto = heard.rto_backoff.map_or(String::new(), |r| {
                format!(" {} ms (now backed off to {r} ms, RFC 6298 §5.5)", r / 2)
            });
            return format!("retransmission after RTO{rto}");
        }
        if heard.fast {
            return format!(
                "fast retransmission after {} duplicate ACKs (RFC 5681 §3.2)",
                self.dup_acks.max(3)
            );
        }
        if heard.zero_window_probe {
            return "zero-window probe (RFC 9293 §3.8.6.1)".into();
        }
        if heard.keep_alive {
            return "keep-alive (RFC 9293 §3.8.4)".into();
        }
        if seg.syn {
            return "SYN".into();
        }
        if seg.fin && seg.payload_len == 0 {
            return "FIN".into();
        }
        if seg.payload_len > 0 {
            return "new data".into();
        }
        if heard.window_update {
            return "window update: our window grew (smoltcp: when it doubles)".into();
        }
        if self.ack_forced {
            return "ACK of a second full segment (RFC 5681 §4.2)".into();
        }
        if timer {
            return "delayed ACK timer fired".into();
        }
        "ACK".into()
    }

    /// Data waits in the send buffer and nothing left: why, as far as can be told.
    pub fn hold(
        &self,
        unsent: usize,
        in_flight: u32,
        mss: usize,
        nagle: bool,
        cc: bool,
    ) -> Option<Hold> {
        if unsent == 0 {
            return None;
        }
        Some(if in_flight >= self.peer_window {
            Hold::PeerWindow
        } else if nagle && in_flight > 0 && unsent < mss {
            Hold::Nagle
        } else if cc {
            Hold::Congestion
        } else {
            Hold::Retransmission
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(ack: u32, window: u16, len: u32) -> Segment {
        Segment {
            src: "10.77.0.1:5000".parse().unwrap(),
            dst: "10.77.0.2:80".parse().unwrap(),
            seq: 1,
            ack,
            syn: false,
            ack_flag: true,
            fin: false,
            rst: false,
            psh: false,
            window,
            payload_len: len,
            options: Default::default(),
        }
    }

    #[test]
    fn duplicate_acks_are_counted_and_reset_by_progress() {
        let mut i = Inside::default();
        i.inbound(&ack(100, 50, 0));
        for n in 1..=3 {
            i.inbound(&ack(100, 50, 0));
            assert_eq!(i.dup_acks, n);
        }
        i.inbound(&ack(200, 50, 0));
        assert_eq!((i.dup_acks, i.snd_una), (0, Some(200)));
        assert_eq!(i.in_flight(1200), 1000);
    }

    #[test]
    fn holds_are_explained_by_what_the_wire_shows_first() {
        let i = Inside {
            peer_window: 1000,
            ..Inside::default()
        };
        assert_eq!(i.hold(10, 1000, 1460, false, false), Some(Hold::PeerWindow));
        assert_eq!(i.hold(10, 500, 1460, true, false), Some(Hold::Nagle));
        assert_eq!(i.hold(5000, 500, 1460, true, true), Some(Hold::Congestion));
        assert_eq!(i.hold(0, 500, 1460, true, true), None);
    }
}
