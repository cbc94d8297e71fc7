//! Recording what happened: the segments the observer found meaningful become journey
//! events and words on their packets; a connection's end says what it held and freed.

use smoltcp::time::Instant;

use super::conn::{Conn, Opened};
use super::inside::Heard;
use super::time_wait::Entry;
use crate::journey::{Journal, Stage, What};
use crate::observe::{Direction, Observed, Role, Segment};

/// Which packet words about a transition belong on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// The inbound segment just handled: it caused the transition.
    Inbound,
    /// Our next SYN, FIN or RST on the connection: the application caused it (a close
    /// becomes our FIN), and that segment is where the peer learns of it.
    NextOut,
    /// No packet: a timer caused it; the journey has it.
    Journal,
}

/// Why a TIME-WAIT entry ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeWaitEnd {
    Expired,
    Reset,
    NewSyn,
    Shutdown,
}

impl TimeWaitEnd {
    fn name(self) -> &'static str {
        match self {
            TimeWaitEnd::Expired => "expired",
            TimeWaitEnd::Reset => "reset",
            TimeWaitEnd::NewSyn => "new_syn",
            TimeWaitEnd::Shutdown => "shutdown",
        }
    }
}

/// What a connection held when it ended.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub rx_capacity: usize,
    pub tx_capacity: usize,
    /// Bytes of its buffers that were resident (and go back to the kernel now).
    pub resident: usize,
}

/// A segment the peer sent on `conn`, as smoltcp has just taken it.
pub fn observed_in(
    journal: &mut Journal,
    note: &mut String,
    notes: bool,
    now: Instant,
    conn: &Conn,
    seg: &Segment,
    role: Role,
) {
    let o = Observed {
        dir: Direction::In,
        segment: *seg,
        role,
    };
    if notes && let Some(text) = o.describe() {
        super::append(note, format_args!("{text}"));
    }
    let (id, t, s) = (conn.id, now.total_micros(), *seg);
    let what = match role {
        Role::Syn => {
            remember_handshake(journal, id, End::Client, &s);
            What::Syn {
                remote: conn.tuple.remote,
                local: conn.tuple.local,
                isn: s.seq,
                window: s.window,
                options: s.options,
            }
        }
        Role::SynAck => {
            remember_handshake(journal, id, End::Server, &s);
            What::SynAckReceived {
                isn: s.seq,
                ack: s.ack,
                window: s.window,
                options: s.options,
            }
        }
        Role::HandshakeAck => What::HandshakeAck {
            seq: s.seq,
            ack: s.ack,
        },
        _ => match teardown(role, Direction::In, &s, journal, id, t) {
            Some(what) => what,
            None => return,
        },
    };
    let stage = stage_of(&what);
    journal.record(Some(id), t, stage, what);
}

/// A segment we sent on `conn`.
pub fn observed_out(
    journal: &mut Journal,
    note: &mut String,
    notes: bool,
    now: Instant,
    conn: &mut Conn,
    seg: &Segment,
    role: Role,
) {
    let o = Observed {
        dir: Direction::Out,
        segment: *seg,
        role,
    };
    if notes {
        if let Some(text) = o.describe() {
            super::append(note, format_args!("{text}"));
        }
        if seg.is_control() && !conn.note.is_empty() {
            let carried = std::mem::take(&mut conn.note);
            super::append(note, format_args!("{carried}"));
        }
    }
    let (id, t, s) = (conn.id, now.total_micros(), *seg);
    let what = match role {
        Role::Syn => {
            remember_handshake(journal, id, End::Client, &s);
            What::SynSent {
                local: conn.tuple.local,
                remote: conn.tuple.remote,
                isn: s.seq,
                window: s.window,
                options: s.options,
            }
        }
        Role::SynAck => {
            remember_handshake(journal, id, End::Server, &s);
            What::SynAck {
                isn: s.seq,
                ack: s.ack,
                window: s.window,
                options: s.options,
            }
        }
        Role::HandshakeAck => What::AckSent {
            seq: s.seq,
            ack: s.ack,
        },
        _ => match teardown(role, Direction::Out, &s, journal, id, t) {
            Some(what) => what,
            None => return,
        },
    };
    let stage = stage_of(&what);
    journal.record(Some(id), t, stage, what);
}

/// Which end of the handshake a SYN or SYN-ACK speaks for, in the journey's record.
#[derive(Clone, Copy)]
enum End {
    Client,
    Server,
}

/// Keeps a SYN's or SYN-ACK's ISN, window and options in the connection's record.
fn remember_handshake(journal: &mut Journal, id: u64, end: End, s: &Segment) {
    if let Some(rec) = journal.get_mut(id) {
        let h = &mut rec.handshake;
        let (isn, window, options) = match end {
            End::Client => (
                &mut h.client_isn,
                &mut h.client_window,
                &mut h.client_options,
            ),
            End::Server => (
                &mut h.server_isn,
                &mut h.server_window,
                &mut h.server_options,
            ),
        };
        *isn = Some(s.seq);
        *window = Some(s.window);
        *options = s.options;
    }
}

/// FINs, their ACKs and RSTs, either way.
fn teardown(
    role: Role,
    dir: Direction,
    s: &Segment,
    journal: &mut Journal,
    id: u64,
    t: i64,
) -> Option<What> {
    let fin = || What::Fin {
        dir,
        seq: s.seq.wrapping_add(s.payload_len),
        ack: s.ack,
    };
    Some(match role {
        Role::Fin => fin(),
        Role::FinAckOfFin => {
            journal.record(
                Some(id),
                t,
                Stage::Close,
                What::FinAcked { dir, ack: s.ack },
            );
            fin()
        }
        Role::AckOfFin => What::FinAcked { dir, ack: s.ack },
        Role::Rst => What::Rst { dir, seq: s.seq },
        _ => return None,
    })
}

fn stage_of(what: &What) -> Stage {
    match what {
        What::Syn { .. }
        | What::SynAck { .. }
        | What::HandshakeAck { .. }
        | What::SynSent { .. }
        | What::SynAckReceived { .. }
        | What::AckSent { .. } => Stage::Connect,
        _ => Stage::Close,
    }
}

/// The connection's journey ends: what it carried, what it held, what closing freed.
pub fn closed(
    journal: &mut Journal,
    now: Instant,
    conn: &Conn,
    held: Held,
    time_wait: Option<u64>,
) {
    let (bytes_in, bytes_out, requests) = journal
        .get(conn.id)
        .map_or((0, 0, 0), |r| (r.bytes_in, r.bytes_out, r.requests));
    journal.record(
        Some(conn.id),
        now.total_micros(),
        Stage::Close,
        What::Closed {
            bytes_in,
            bytes_out,
            requests,
            duration_us: (now - conn.opened).total_micros(),
            rx_buf: held.rx_capacity,
            tx_buf: held.tx_capacity,
            peak_rx: conn.peak_rx,
            peak_tx: conn.peak_tx,
            freed_bytes: held.resident,
            time_wait_secs: time_wait,
            active: conn.opened_by == Opened::Active,
        },
    );
    journal.close(conn.id);
}

/// A TIME-WAIT entry ended (its connection's journey has closed already: this is a late
/// event on it).
pub fn time_wait_ended(journal: &mut Journal, now: Instant, entry: &Entry, why: TimeWaitEnd) {
    journal.record(
        Some(entry.conn),
        now.total_micros(),
        Stage::Close,
        What::TimeWaitEnded {
            why: why.name(),
            after_ms: (now - entry.entered).total_millis(),
        },
    );
}

/// With internals on: why a segment we send left now and what the sender knew, in its
/// words and in the journey.
#[allow(clippy::too_many_arguments)]
pub fn inside_out(
    journal: &mut Journal,
    note: &mut String,
    notes: bool,
    now: Instant,
    conn: &mut Conn,
    seg: &Segment,
    heard: &Heard,
    resent: bool,
    timer: bool,
) {
    let why = conn.inside.why(heard, seg, resent, timer);
    let in_flight = conn.inside.in_flight(conn.seq.snd_nxt.unwrap_or(seg.seq));
    let peer_window = conn.inside.peer_window;
    let sock = conn.socket();
    let (tx_fill, tx_capacity) = (sock.send_queue(), sock.send_capacity());
    let rtt = if conn.inside.rtte_fresh {
        conn.inside.rtte_fresh = false;
        conn.inside.rtte
    } else {
        None
    };
    // The data that waited leaves now: new data after a hold (a retransmission says its
    // own reason).
    let waited = (seg.payload_len > 0 && !resent)
        .then(|| conn.inside.held.take())
        .flatten()
        .map(|(since, hold)| (now - since, hold))
        .filter(|(w, _)| w.total_micros() > 0);
    if notes {
        super::append(note, format_args!("why: {why}"));
        super::append(
            note,
            format_args!(
                "in flight {in_flight} B, peer window {peer_window} B, send buffer {tx_fill}/{tx_capacity} B"
            ),
        );
        if let Some(r) = rtt {
            super::append(
                note,
                format_args!(
                    "rtt sample {} ms, srtt {} ms, rttvar {} ms, rto {} ms",
                    r.sample_ms, r.srtt_ms, r.rttvar_ms, r.rto_ms
                ),
            );
        }
        if let Some((w, hold)) = waited {
            super::append(
                note,
                format_args!(
                    "waited {:.1} ms: {}",
                    w.total_micros() as f64 / 1000.0,
                    hold.text()
                ),
            );
        }
    }
    journal.record(
        Some(conn.id),
        now.total_micros(),
        Stage::Send,
        What::Segment {
            why,
            seq: seg.seq,
            len: seg.payload_len,
            flags: seg.flags_text(),
            in_flight,
            peer_window,
            tx_fill,
            tx_capacity,
            rtt,
            waited_us: waited.map(|(w, _)| w.total_micros()),
            held_by: waited.map(|(_, h)| h.name()),
        },
    );
}
