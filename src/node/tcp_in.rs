//! Where an inbound TCP segment goes: its connection (after RFC 5961's checks), its
//! TIME-WAIT entry, a listening port (the SYN queue, the accept queue, SYN cookies), or a
//! closed port's reset.

use smoltcp::time::Instant;

use super::cookie::Carried;
use super::guard::{self, Judgement};
use super::record::TimeWaitEnd;
use super::time_wait::Verdict;
use super::timers::Owner;
use super::turn::Cause;
use super::{Node, secs, wire};
use crate::journey::{Stage, What};
use crate::observe::{Direction, Segment};

/// A SYN into TIME-WAIT that may open a new connection gets an ISN beyond the old
/// connection's sequence space, as Linux gives it (`tcp_timewait_state_process`:
/// `snd_nxt + 65535 + 2`), so old duplicates cannot be mistaken for new data.
const TIME_WAIT_ISN_GAP: u32 = 65_535 + 2;

impl Node {
    pub(super) fn tcp_in(&mut self, now: Instant, packet: &[u8], seg: Segment) {
        // Before anything acts on it: a corrupted segment must not end a TIME-WAIT, draw
        // a challenge ACK or take a place in the SYN queue (smoltcp is told not to check
        // again, see `device`).
        if !wire::tcp_checksum_ok(packet) {
            self.counters.dropped_checksum += 1;
            self.note_in(format_args!("dropped: bad TCP checksum"));
            return;
        }
        let tuple = seg.tuple(Direction::In);
        if let Some(slot) = self.conns.find(&tuple) {
            return self.conn_in(now, slot, packet, seg);
        }
        let listener = self.listeners.iter().position(|l| l.port == seg.dst.port());
        let mut isn = None;
        if let Some(tw) = self.time_wait.find(&tuple) {
            match self.time_wait_in(now, tw, &seg, listener.is_some()) {
                Some(next) => isn = Some(next),
                None => return,
            }
        }
        let Some(l) = listener else {
            return self.reset_closed(&seg, "nothing listens on this port");
        };
        if seg.rst {
            // RFC 9293 §3.10.7.2 (LISTEN): an incoming RST is ignored.
            self.note_in(format_args!("RST for no connection: ignored"));
        } else if seg.syn && !seg.ack_flag {
            if seg.fin {
                // Linux discards SYN+FIN at a listener (tcp_rcv_state_process).
                self.counters.dropped_malformed += 1;
                self.note_in(format_args!("dropped: SYN with FIN at a listening port"));
            } else {
                self.syn_in(now, l, packet, seg, isn);
            }
        } else if seg.ack_flag && !seg.syn {
            self.ack_to_listener(now, l, packet, seg);
        } else if seg.syn {
            // A SYN-ACK to a listening port: an ACK with no connection (RFC 9293
            // §3.10.7.2 answers an ACK in LISTEN with <SEQ=SEG.ACK><CTL=RST>).
            self.reset_closed(&seg, "no connection for this SYN-ACK");
        } else {
            // RFC 9293 §3.10.7.2 (LISTEN): any other segment (no SYN, no ACK, no RST:
            // FIN, PSH, URG or none of them) is dropped; Linux does the same, so a FIN or
            // NULL scan cannot tell this open port from a closed one by a RST.
            self.note_in(format_args!(
                "dropped: neither SYN, ACK nor RST, to a listening port (RFC 9293 §3.10.7.2)"
            ));
        }
    }

    fn conn_in(&mut self, now: Instant, slot: u32, packet: &[u8], seg: Segment) {
        let Some(conn) = self.conns.get(slot) else {
            return;
        };
        // The ACK that would complete a handshake while the accept queue is full is
        // dropped, as Linux does (tcp_abort_on_overflow = 0): the connection stays in
        // SYN-RECEIVED, our SYN-ACK is retransmitted, and the peer's next ACK gets in once
        // there is room.
        if conn.state == smoltcp::socket::tcp::State::SynReceived
            && seg.ack_flag
            && !seg.syn
            && !seg.rst
            && let super::conn::Opened::Passive { port } = conn.opened_by
            && let Some(l) = self.listeners.iter().find(|l| l.port == port)
            && l.accept.len() >= l.backlog
        {
            let backlog = l.backlog;
            self.counters.accept_queue_overflows += 1;
            self.note_in(format_args!(
                "dropped: the accept queue is full ({backlog}/{backlog}); the handshake completes when there is room"
            ));
            return;
        }
        match guard::judge(conn, &seg) {
            Judgement::Pass => self.turn(now, slot, Cause::packet(packet, seg)),
            Judgement::Drop(why) => {
                self.note_in(format_args!("dropped: {why}"));
            }
            Judgement::Challenge(why) => self.challenge(now, slot, why),
            Judgement::WithoutFin(why) => {
                self.counters.fins_beyond_window += 1;
                self.note_in(format_args!("{why}"));
                let mut copy = std::mem::take(&mut self.scratch);
                wire::without_fin(packet, &mut copy);
                let seg = Segment { fin: false, ..seg };
                self.turn(now, slot, Cause::packet(&copy, seg));
                self.scratch = copy;
            }
        }
    }

    /// RFC 5961: answers a suspicious RST or SYN with an ACK saying where the connection
    /// really is. A peer that did send it answers with a RST at exactly RCV.NXT; a blind
    /// attacker never sees the ACK.
    fn challenge(&mut self, now: Instant, slot: u32, why: &'static str) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        // RFC 5961 §7: per connection first (Linux's tcp_invalid_ratelimit), then the
        // budget every connection shares.
        let this_conn = guard::per_connection_allows(conn.seq.last_challenge, now);
        let sent = this_conn && self.challenges.allow(now);
        if sent {
            conn.seq.last_challenge = Some(now);
        }
        let conn = &*conn;
        let id = conn.id;
        if sent {
            self.counters.challenge_acks += 1;
            let ack = guard::challenge_ack(conn);
            let notes = self.cfg.notes;
            let out = self.out.push_built(|buf| ack.emit(buf));
            if notes {
                super::append(
                    &mut out.note,
                    format_args!("challenge ACK (RFC 5961): {why}"),
                );
            }
            self.note_in(format_args!(
                "{why}: not acted on, answered with a challenge ACK"
            ));
        } else if !this_conn {
            self.counters.challenge_acks_limited += 1;
            self.note_in(format_args!(
                "{why}: dropped (one challenge ACK per {} ms on a connection)",
                guard::PER_CONNECTION_INTERVAL.total_millis()
            ));
        } else {
            self.counters.challenge_acks_limited += 1;
            self.note_in(format_args!(
                "{why}: dropped (challenge ACKs are at their limit of {}/s)",
                super::limits::CHALLENGE_ACKS_PER_SEC
            ));
        }
        self.journal.record(
            Some(id),
            now.total_micros(),
            Stage::Connect,
            What::ChallengeAck { reason: why, sent },
        );
    }

    /// A segment for a connection in TIME-WAIT. Returns the ISN for a new connection if
    /// it is a SYN that may start one.
    /// `listening`: a listener is on the port. Without one, a SYN that could start a new
    /// connection gets the entry's ACK instead, and the entry stays (Linux's
    /// `tcp_v4_rcv`: TCP_TW_SYN falls through to TCP_TW_ACK).
    fn time_wait_in(
        &mut self,
        now: Instant,
        tw: u32,
        seg: &Segment,
        listening: bool,
    ) -> Option<u32> {
        let entry = *self.time_wait.get(tw)?;
        let verdict = match entry.judge(seg) {
            Verdict::NewSyn if !listening => Verdict::Ack,
            v => v,
        };
        match verdict {
            Verdict::FinAgain => {
                self.counters.time_wait_fin_acked += 1;
                let length = self.cfg.time_wait;
                let restarted = now + super::dur(length);
                if let Some(e) = self.time_wait.get_mut(tw) {
                    e.restart(now, super::dur(length));
                    let owner = Owner::TimeWait {
                        slot: tw,
                        generation: e.generation,
                    };
                    e.scheduled = Some(self.timers.schedule(owner, restarted, e.scheduled));
                }
                self.send_ack_from_time_wait(&entry, "ACK of the peer's FIN again");
                self.note_in(format_args!(
                    "TIME-WAIT: the peer's FIN again (our ACK was lost?): ACKed again, timer restarted ({} s, RFC 9293 §3.10.7.4)",
                    length.as_secs()
                ));
                self.journal.record(
                    Some(entry.conn),
                    now.total_micros(),
                    Stage::Close,
                    What::TimeWaitFinAgain {
                        restarted_secs: length.as_secs(),
                    },
                );
                None
            }
            Verdict::NewSyn => {
                self.end_time_wait(now, tw, TimeWaitEnd::NewSyn);
                self.note_in(format_args!(
                    "TIME-WAIT ends: a new SYN beyond the old connection's sequence space starts a new one (RFC 6191)"
                ));
                Some(entry.snd_nxt.wrapping_add(TIME_WAIT_ISN_GAP))
            }
            Verdict::Reset => {
                self.end_time_wait(now, tw, TimeWaitEnd::Reset);
                self.note_in(format_args!(
                    "TIME-WAIT ends: RST at RCV.NXT (as Linux with tcp_rfc1337=0)"
                ));
                None
            }
            Verdict::Ack => {
                if guard::per_connection_allows(entry.last_ack, now) && self.challenges.allow(now) {
                    if let Some(e) = self.time_wait.get_mut(tw) {
                        e.last_ack = Some(now);
                    }
                    self.send_ack_from_time_wait(
                        &entry,
                        "TIME-WAIT repeats where the connection ended",
                    );
                    self.note_in(format_args!("TIME-WAIT: answered with our last ACK"));
                } else {
                    self.note_in(format_args!(
                        "TIME-WAIT: dropped (ACKs at their rate limit)"
                    ));
                }
                None
            }
            Verdict::Ignore => {
                self.note_in(format_args!("TIME-WAIT: RST not at RCV.NXT, ignored"));
                None
            }
        }
    }

    fn send_ack_from_time_wait(&mut self, entry: &super::time_wait::Entry, why: &str) {
        let ack = entry.ack();
        let notes = self.cfg.notes;
        let out = self.out.push_built(|buf| ack.emit(buf));
        if notes {
            super::append(&mut out.note, format_args!("{why} (from TIME-WAIT)"));
        }
    }

    /// A SYN to a listening port: Linux's admission. The accept queue full: dropped (the
    /// client retransmits, and gets in once there is room). The SYN queue full: a cookie.
    /// Otherwise a new connection.
    fn syn_in(&mut self, now: Instant, l: usize, packet: &[u8], seg: Segment, isn: Option<u32>) {
        let (port, waiting, half_open, backlog, syn_backlog) = {
            let l = &self.listeners[l];
            (
                l.port,
                l.accept.len(),
                l.half_open,
                l.backlog,
                l.syn_backlog,
            )
        };
        if waiting >= backlog {
            self.counters.syn_dropped += 1;
            self.journal.record(
                None,
                now.total_micros(),
                Stage::Connect,
                What::SynDropped {
                    remote: seg.src,
                    backlog,
                },
            );
            self.note_in(format_args!(
                "dropped: accept queue full ({waiting}/{backlog}), the client will retransmit"
            ));
            return;
        }
        if half_open >= syn_backlog && isn.is_none() {
            return self.send_cookie(now, l, &seg);
        }
        if let Err(e) = self.open_passive(now, port, packet, seg, isn) {
            self.counters.syn_dropped += 1;
            self.note_in(format_args!("dropped: {e}"));
        }
    }

    /// Answers a SYN with a SYN-ACK whose ISN is a cookie, keeping nothing. smoltcp
    /// writes the SYN-ACK (a scratch listening socket, on an interface seeded so its ISN
    /// is the cookie), so it is exactly what the connection rebuilt later will believe
    /// it sent.
    fn send_cookie(&mut self, now: Instant, l: usize, seg: &Segment) {
        let carried = Carried::from_syn(&seg.options);
        let isn = self
            .cookies
            .make(seg.dst, seg.src, seg.seq, secs(now), carried);
        let syn_ack = self.cookie_syn_ack(seg, isn);
        let notes = self.cfg.notes;
        let out = self.out.push_built(|buf| syn_ack.emit(buf));
        if notes {
            super::append(
                &mut out.note,
                format_args!("SYN-ACK, handshake 2/3, ISN {isn} is a SYN cookie"),
            );
        }
        self.counters.syn_cookies_sent += 1;
        let listener = &mut self.listeners[l];
        let syn_backlog = listener.syn_backlog;
        listener.last_cookie = Some(now);
        let half_open = listener.half_open;
        self.note_in(format_args!(
            "SYN queue full ({half_open}/{syn_backlog}): answered with a SYN cookie, nothing kept until the ACK proves the peer (RFC 4987)"
        ));
        self.journal.record(
            None,
            now.total_micros(),
            Stage::Connect,
            What::SynCookieSent {
                remote: seg.src,
                cookie: isn,
                mss: carried.mss,
            },
        );
    }

    /// An ACK to a listening port with no connection: the answer to a cookie, or a
    /// stray segment that gets a RST (RFC 9293 §3.10.7.2).
    fn ack_to_listener(&mut self, now: Instant, l: usize, packet: &[u8], seg: Segment) {
        let recent = self.listeners[l]
            .last_cookie
            .is_some_and(|t| secs(now).saturating_sub(secs(t)) < 3 * 64);
        if recent {
            let cookie = seg.ack.wrapping_sub(1);
            let peer_isn = seg.seq.wrapping_sub(1);
            match self
                .cookies
                .check(seg.dst, seg.src, peer_isn, secs(now), cookie)
            {
                Some(carried) => {
                    if self.listeners[l].accept.len() >= self.listeners[l].backlog {
                        self.counters.syn_dropped += 1;
                        self.note_in(format_args!(
                            "a valid SYN cookie, but the accept queue is full: dropped (the client retransmits)"
                        ));
                        return;
                    }
                    self.counters.syn_cookies_validated += 1;
                    self.note_in(format_args!(
                        "the ACK returns a valid SYN cookie: the connection is rebuilt from it (MSS {}{}{})",
                        carried.mss,
                        carried
                            .window_scale
                            .map_or(String::new(), |w| format!(", wscale {w}")),
                        if carried.sack_permitted {
                            ", SACK-permitted"
                        } else {
                            ""
                        }
                    ));
                    if let Err(e) = self.open_from_cookie(now, l, packet, seg, carried, cookie) {
                        self.note_in(format_args!("dropped: {e}"));
                    }
                    return;
                }
                None => self.counters.syn_cookies_failed += 1,
            }
        }
        self.reset_closed(&seg, "no connection: an ACK to a listening port");
    }

    /// A closed port's answer (RFC 9293 §3.10.7.1).
    pub(super) fn reset_closed(&mut self, seg: &Segment, why: &str) {
        let Some(rst) = wire::reset_for(seg) else {
            self.note_in(format_args!("{why}; a RST is never answered"));
            return;
        };
        self.counters.resets_sent += 1;
        let notes = self.cfg.notes;
        let out = self.out.push_built(|buf| rst.emit(buf));
        if notes {
            super::append(
                &mut out.note,
                format_args!(
                    "RST: {why} (RFC 9293 §3.10.7.1: {})",
                    if rst.ack.is_some() {
                        "SEQ=0, ACK=SEG.SEQ+SEG.LEN"
                    } else {
                        "SEQ=SEG.ACK"
                    }
                ),
            );
        }
        self.note_in(format_args!("{why}: answered with RST"));
    }
}
