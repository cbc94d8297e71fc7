//! One connection's turn, whatever woke it (a packet, a timer, the application): its
//! packet into smoltcp, its transitions recorded, its conversation served, its egress
//! right after (so every burst of segments is ACKed as it arrives: RFC 5681 §4.2), its
//! timer set, and a connection that is over leaves the table, or becomes a TIME-WAIT
//! entry. Nothing here touches another connection.

use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};

use super::conn::{Conn, Opened, Queue};
use super::cookie::interface_seed_for_isn;
use super::device::OnePacket;
use super::drive::{Drive, drive};
use super::inside::Heard;
use super::record::{self, Attach, TimeWaitEnd};
use super::time_wait::Entry;
use super::timers::Owner;
use super::wire::Bare;
use super::{Ended, Node, interface, limits, state_name, wire};
use crate::journey::{Stage, What};
use crate::observe::{Direction, Segment};

/// What woke a connection.
pub(super) enum Cause<'a> {
    Packet {
        packet: &'a [u8],
        seg: Segment,
        /// The ISN its SYN-ACK must carry, if the node chose one.
        isn: Option<u32>,
    },
    Timer,
    /// The application acted (opened it, took it off the accept queue).
    App,
    /// The node is stopping: the connection was aborted, its RST goes out.
    Shutdown,
}

impl<'a> Cause<'a> {
    pub(super) fn packet(packet: &'a [u8], seg: Segment) -> Self {
        Cause::Packet {
            packet,
            seg,
            isn: None,
        }
    }

    pub(super) fn set_isn(&mut self, to: Option<u32>) {
        if let Cause::Packet { isn, .. } = self {
            *isn = to;
        }
    }
}

/// A deadline at or before now that smoltcp still reports after its egress is done
/// would wake the loop at once, forever: wait at least this long instead.
const MIN_WAKE: Duration = Duration::from_micros(100);

impl Node {
    pub(super) fn turn(&mut self, now: Instant, slot: u32, cause: Cause<'_>) {
        let Some(mut conn) = self.conns.take(slot) else {
            return;
        };
        let mtu = self.cfg.mtu;
        let first_out = self.out.len();
        let timer = matches!(cause, Cause::Timer);
        let shutdown = matches!(cause, Cause::Shutdown);
        let internals = self.cfg.internals;
        self.heard.clear();
        if let Cause::Packet { packet, seg, isn } = cause {
            let role = conn.track.classify(Direction::In, &seg);
            conn.seq.received(&seg);
            conn.inside.inbound(&seg);
            if internals {
                crate::internals::listen();
            }
            let mut dev = OnePacket::with(packet, &mut self.out, mtu);
            match isn {
                // smoltcp draws the ISN while it takes the SYN: from an interface seeded
                // to draw the one we chose.
                Some(isn) => {
                    let mut iface = interface(&self.cfg, interface_seed_for_isn(isn), now);
                    iface.poll_ingress_single(now, &mut dev, &mut conn.set);
                }
                None => {
                    self.iface.poll_ingress_single(now, &mut dev, &mut conn.set);
                }
            }
            if internals {
                let heard = self.heard_since(first_out);
                conn.inside.heard_in(&heard);
            }
            record::observed_in(
                &mut self.journal,
                &mut self.in_note,
                self.cfg.notes,
                now,
                &conn,
                &seg,
                role,
            );
            if role == crate::observe::Role::Rst && conn.socket().state() == tcp::State::Closed {
                conn.reset_by_peer = true;
            }
            self.scan(now, slot, &mut conn, Attach::Inbound);
        }
        if timer {
            self.expire(now, &mut conn);
        }
        if !shutdown {
            self.serve(now, &mut conn);
        }
        self.scan(now, slot, &mut conn, Attach::NextOut);
        loop {
            let before = self.out.len();
            if internals {
                crate::internals::listen();
            }
            let result = self.iface.poll_egress(
                now,
                &mut OnePacket::empty(&mut self.out, mtu),
                &mut conn.set,
            );
            if internals {
                self.heard_since(before);
            }
            if result == smoltcp::iface::PollResult::None {
                break;
            }
        }
        for i in first_out..self.out.len() {
            let Some(out) = self.out.get_mut(i) else {
                break;
            };
            let Some(mut seg) = Segment::parse(&out.data) else {
                continue;
            };
            if seg.tuple(Direction::Out) != conn.tuple {
                continue;
            }
            // smoltcp 0.14's fast retransmission sends a whole MSS from SND.UNA whatever
            // the peer's window; a sender must stay inside it (RFC 9293 §3.8.6). Cut a
            // retransmission to the window: smoltcp counts the rest as sent, and its
            // retransmission timer sends it again (the peer would have dropped it anyway).
            // New data smoltcp keeps inside the window itself.
            let resent = conn
                .seq
                .snd_nxt
                .is_some_and(|n| !crate::observe::seq_ge(seg.seq, n));
            if resent && let Some(keep) = conn.inside.fits_in_window(seg.seq, seg.payload_len) {
                let len = seg.payload_len;
                wire::trim_payload(&mut out.data, keep as usize);
                if let Some(trimmed) = Segment::parse(&out.data) {
                    seg = trimmed;
                    self.counters.segments_cut_to_window += 1;
                    if self.cfg.notes {
                        super::append(
                            &mut out.note,
                            format_args!(
                                "cut from {len} to {keep} B: the peer's window (smoltcp 0.14 retransmits a whole MSS from SND.UNA whatever the window)"
                            ),
                        );
                    }
                }
            }
            let role = conn.track.classify(Direction::Out, &seg);
            conn.seq.sent(&seg);
            record::observed_out(
                &mut self.journal,
                &mut out.note,
                self.cfg.notes,
                now,
                &mut conn,
                &seg,
                role,
            );
            if internals {
                let heard = self
                    .heard
                    .iter()
                    .find(|(j, _)| *j == i)
                    .map(|(_, h)| *h)
                    .unwrap_or_default();
                record::inside_out(
                    &mut self.journal,
                    &mut out.note,
                    self.cfg.notes,
                    now,
                    &mut conn,
                    &seg,
                    &heard,
                    resent,
                    timer,
                );
            }
        }
        if internals {
            self.watch_holds(now, &mut conn);
        }
        watch_progress(now, &mut conn);
        // Transitions seen now were caused by timers (retransmissions given up) or by
        // our own segments: the journal has them.
        self.scan(now, slot, &mut conn, Attach::Journal);
        self.settle(now, slot, conn);
    }

    /// With internals on: what smoltcp said since [`internals::listen`], kept for each
    /// packet it sent since output `from` (an immediate ACK while taking a segment, or
    /// the one segment of an egress poll).
    ///
    /// [`internals::listen`]: crate::internals::listen
    fn heard_since(&mut self, from: usize) -> Heard {
        let heard = crate::internals::finish(Heard::from_lines);
        for i in from..self.out.len() {
            self.heard.push((i, heard));
        }
        heard
    }

    /// With internals on: does data wait in the send buffer after this turn? From the
    /// first turn it does, note why; the new data that finally leaves says how long it
    /// waited.
    fn watch_holds(&mut self, now: Instant, conn: &mut Conn) {
        if conn.inside.held.is_some() {
            return;
        }
        let sock = conn.socket();
        let in_flight = conn.inside.in_flight(conn.seq.snd_nxt.unwrap_or(0));
        let unsent = sock.send_queue().saturating_sub(in_flight as usize);
        let knobs = self.cfg.knobs;
        let cc = knobs.congestion != super::Congestion::None;
        if let Some(hold) = conn
            .inside
            .hold(unsent, in_flight, self.cfg.mtu - 40, knobs.nagle, cc)
        {
            conn.inside.held = Some((now, hold));
        }
    }

    /// Moves bytes between the connection's socket and its conversation.
    fn serve(&mut self, now: Instant, conn: &mut Conn) {
        // Until the handshake is done there is nothing to move (a RST in SYN-SENT is a
        // refusal, not the end of a response).
        if conn.session.is_none() || !conn.established {
            return;
        }
        self.app.set_stats(self.stats());
        let Conn {
            set,
            handle,
            session,
            seq,
            peak_rx,
            peak_tx,
            ..
        } = conn;
        let (Some(session), sock) = (session.as_mut(), set.get_mut::<tcp::Socket>(*handle)) else {
            return;
        };
        *peak_rx = (*peak_rx).max(sock.recv_queue());
        let result = drive(
            sock,
            session.as_mut(),
            now,
            &self.app,
            &mut self.journal,
            &mut seq.read,
        );
        *peak_tx = (*peak_tx).max(sock.send_queue());
        if result == Drive::Aborted {
            self.counters.aborted_streams += 1;
        }
    }

    /// A timer fired: the session's time-outs and the FIN timeout.
    fn expire(&mut self, now: Instant, conn: &mut Conn) {
        let sending = conn.socket().send_queue() > 0;
        if let Some(session) = conn.session.as_mut() {
            // A response still crossing a slow or lossy path is not an idle client.
            if sending {
                session.still_sending(now);
            }
            if session.deadline().is_some_and(|d| d <= now) {
                session.poll_timeout(now, &mut self.journal);
            }
        }
        // nginx's send_timeout: the peer answers (so smoltcp's user timeout never fires)
        // but takes nothing, a zero window it never opens or a reader that stopped.
        if let Some((_, since)) = conn.stalled
            && now - since >= super::dur(limits::SEND_TIMEOUT)
        {
            conn.stalled = None;
            self.counters.send_timeouts += 1;
            let state = state_name(conn.state);
            let secs = limits::SEND_TIMEOUT.as_secs();
            self.time_out(
                now,
                conn,
                What::SendTimeout { state, secs },
                format_args!("reset: the peer took none of our data for {secs} s (send timeout)"),
            );
        }
        // Linux's tcp_fin_timeout: the peer acknowledged our FIN and never sends its own.
        // While our FIN or data is unacknowledged (FIN-WAIT-1, CLOSING, LAST-ACK), the
        // retransmission timer and the user timeout (--timeout) bound the wait instead.
        // Only once nobody holds the socket (Linux's orphans): an application that shut
        // its side down and still reads waits as long as it likes.
        let closing = conn.state == tcp::State::FinWait2 && !conn.app;
        let expired = conn
            .closed_at
            .is_some_and(|t| now - t >= super::dur(limits::FIN_TIMEOUT));
        if closing && expired {
            conn.closed_at = None;
            self.counters.fin_timeouts += 1;
            let state = state_name(conn.state);
            let secs = limits::FIN_TIMEOUT.as_secs();
            self.time_out(
                now,
                conn,
                What::FinTimeout { state, secs },
                format_args!("reset: still {state} {secs} s after our FIN (tcp_fin_timeout)"),
            );
        }
    }

    /// A connection given up by one of our timeouts: the journey says which, the RST
    /// that follows says why, and the socket is aborted.
    fn time_out(
        &mut self,
        now: Instant,
        conn: &mut Conn,
        what: What,
        why: std::fmt::Arguments<'_>,
    ) {
        self.journal
            .record(Some(conn.id), now.total_micros(), Stage::Close, what);
        if self.cfg.notes {
            super::append(&mut conn.note, why);
        }
        conn.socket_mut().abort();
    }

    /// Compares the socket's state with the last one seen: records the transition, moves
    /// the connection between its listener's queues, and says it on the right packet.
    fn scan(&mut self, now: Instant, slot: u32, conn: &mut Conn, attach: Attach) {
        let (new, old) = (conn.socket().state(), conn.state);
        if new == old {
            return;
        }
        conn.state = new;
        let port = match conn.opened_by {
            Opened::Passive { port } => Some(port),
            Opened::Active => None,
        };
        let listener = port.and_then(|p| self.listeners.iter().position(|l| l.port == p));
        if old == tcp::State::Listen
            && new == tcp::State::SynReceived
            && let Some(l) = listener
        {
            self.listeners[l].half_open += 1;
            conn.queue = Queue::Syn;
        }
        if conn.queue == Queue::Syn && new != tcp::State::SynReceived {
            conn.queue = Queue::None;
            if let Some(l) = listener {
                self.listeners[l].half_open -= 1;
            }
        }
        if matches!(new, tcp::State::Established | tcp::State::CloseWait) {
            conn.established = true;
        }
        if conn.counted_active && !matches!(new, tcp::State::Established | tcp::State::CloseWait) {
            conn.counted_active = false;
            self.active -= 1;
            if closing(new) {
                self.orphan(now, conn);
            }
        }
        if new == tcp::State::FinWait2 {
            conn.closed_at = Some(now);
        }
        let (from, to) = (state_name(old), state_name(new));
        let stage = match new {
            tcp::State::SynSent | tcp::State::SynReceived | tcp::State::Established
                if old != tcp::State::CloseWait =>
            {
                Stage::Connect
            }
            _ => Stage::Close,
        };
        self.journal.record(
            Some(conn.id),
            now.total_micros(),
            stage,
            What::State { from, to },
        );
        if self.cfg.notes {
            let queue = match (new, listener) {
                (tcp::State::SynReceived, Some(l)) => format!(
                    " (SYN queue {}/{})",
                    self.listeners[l].half_open, self.listeners[l].syn_backlog
                ),
                _ => String::new(),
            };
            let target = match attach {
                Attach::Inbound => Some(&mut self.in_note),
                Attach::NextOut => Some(&mut conn.note),
                Attach::Journal => None,
            };
            if let Some(note) = target {
                super::append(note, format_args!("our side: {from} -> {to}{queue}"));
            }
        }
        // The handshake is complete: the application may take it.
        if old == tcp::State::SynReceived
            && matches!(new, tcp::State::Established | tcp::State::CloseWait)
        {
            self.offer_to_app(now, slot, conn);
        }
    }

    /// A served connection we closed now waits for its peer: count it among the closing
    /// ones, or reset it if `max_closing` of them wait already (Linux's
    /// `tcp_max_orphans`), so slow or stalled peers cannot pile up closed connections
    /// and their buffers without bound.
    fn orphan(&mut self, now: Instant, conn: &mut Conn) {
        if self.orphans < self.cfg.max_closing {
            conn.orphan = true;
            self.orphans += 1;
            return;
        }
        self.counters.closing_reset += 1;
        let limit = self.cfg.max_closing;
        self.journal.record(
            Some(conn.id),
            now.total_micros(),
            Stage::Close,
            What::TooManyClosing { limit },
        );
        if self.cfg.notes {
            super::append(
                &mut conn.note,
                format_args!("reset: {limit} closing connections wait already (tcp_max_orphans)"),
            );
        }
        conn.socket_mut().abort();
    }

    /// After the turn: the connection goes back in the table with its timer, or leaves it.
    fn settle(&mut self, now: Instant, slot: u32, conn: Conn) {
        match conn.state {
            tcp::State::TimeWait => self.enter_time_wait(now, slot, conn),
            tcp::State::Closed | tcp::State::Listen => self.remove_conn(now, slot, conn, None),
            _ => {
                let smoltcp = self.iface.poll_at(now, &conn.set);
                let session = conn.session.as_ref().and_then(|s| s.deadline());
                let fin = conn.closed_at.map(|t| t + super::dur(limits::FIN_TIMEOUT));
                let stalled = conn
                    .stalled
                    .map(|(_, t)| t + super::dur(limits::SEND_TIMEOUT));
                let next = [smoltcp, session, fin, stalled]
                    .into_iter()
                    .flatten()
                    .min()
                    .map(|t| t.max(now + MIN_WAKE));
                self.conns.put(slot, conn);
                self.schedule_conn(slot, next);
            }
        }
        if self.active < self.cfg.max_conns
            && self
                .listeners
                .iter()
                .any(|l| !l.app && !l.accept.is_empty())
        {
            self.pop_accept(now);
        }
    }

    /// The connection is over: its journey ends, its socket and buffers are given back.
    /// `time_wait`: it goes on as a TIME-WAIT entry for that many seconds.
    pub(super) fn remove_conn(
        &mut self,
        now: Instant,
        slot: u32,
        mut conn: Conn,
        time_wait: Option<u64>,
    ) {
        if conn.counted_active {
            conn.counted_active = false;
            self.active -= 1;
        }
        if conn.orphan {
            conn.orphan = false;
            self.orphans -= 1;
        }
        if conn.queue == Queue::Syn
            && let Opened::Passive { port } = conn.opened_by
            && let Some(l) = self.listeners.iter_mut().find(|l| l.port == port)
        {
            l.half_open -= 1;
        }
        if (conn.opened_by == Opened::Active || conn.app) && time_wait.is_none() {
            self.push_ended(
                conn.id,
                Ended {
                    established: conn.established,
                    reset_by_peer: conn.reset_by_peer,
                    time_wait: false,
                },
            );
        }
        let rx_capacity = conn.rx.as_ref().map_or(0, |r| r.len());
        let tx_capacity = conn.tx.as_ref().map_or(0, |r| r.len());
        let resident = conn.rx.as_ref().map_or(0, |r| r.resident())
            + conn.tx.as_ref().map_or(0, |r| r.resident());
        record::closed(
            &mut self.journal,
            now,
            &conn,
            record::Held {
                rx_capacity,
                tx_capacity,
                resident,
            },
            time_wait,
        );
        self.conns.free(slot, &conn.tuple, conn.id);
        let (rx, tx) = (conn.rx.take(), conn.tx.take());
        // The socket (which borrows the buffers) goes first, then the buffers go back.
        drop(conn);
        if let Some(rx) = rx {
            self.pools.put(rx);
        }
        if let Some(tx) = tx {
            self.pools.put(tx);
        }
    }

    /// Our side reached TIME-WAIT: the socket goes, a compact entry stays (or none, past
    /// `--max-time-wait`).
    fn enter_time_wait(&mut self, now: Instant, slot: u32, conn: Conn) {
        let rcv_nxt = conn.seq.rcv_nxt(conn.socket()).unwrap_or(0);
        let snd_nxt = conn.seq.snd_nxt.unwrap_or(0);
        let window = conn.seq.last_window;
        if conn.seq.last_ack != Some(rcv_nxt) {
            // smoltcp would send this ACK after its delay; the socket goes now, and Linux
            // ACKs a FIN at once anyway.
            let ack = Bare {
                src: conn.tuple.local,
                dst: conn.tuple.remote,
                seq: snd_nxt,
                ack: Some(rcv_nxt),
                rst: false,
                syn: None,
                window,
            };
            let notes = self.cfg.notes;
            let out = self.out.push_built(|buf| ack.emit(buf));
            if notes {
                super::append(
                    &mut out.note,
                    format_args!("ACK of the peer's FIN: our side is in TIME-WAIT"),
                );
            }
        }
        let limit = self.cfg.max_time_wait;
        if self.time_wait.len() >= limit {
            self.counters.time_wait_skipped += 1;
            self.journal.record(
                Some(conn.id),
                now.total_micros(),
                Stage::Close,
                What::TimeWaitSkipped { limit },
            );
            self.note_in(format_args!(
                "TIME-WAIT skipped: {limit} entries in use (--max-time-wait, Linux's tcp_max_tw_buckets)"
            ));
            return self.remove_conn(now, slot, conn, None);
        }
        let length = self.cfg.time_wait;
        let expires = now + super::dur(length);
        let (tw, generation) = self.time_wait.insert(Entry {
            tuple: conn.tuple,
            snd_nxt,
            rcv_nxt,
            window,
            expires,
            entered: now,
            conn: conn.id,
            active: conn.opened_by == Opened::Active || conn.app,
            generation: 0,
            scheduled: None,
            last_ack: None,
        });
        let owner = Owner::TimeWait {
            slot: tw,
            generation,
        };
        let scheduled = self.timers.schedule(owner, expires, None);
        if let Some(e) = self.time_wait.get_mut(tw) {
            e.scheduled = Some(scheduled);
        }
        self.counters.time_wait_entered += 1;
        self.remove_conn(now, slot, conn, Some(length.as_secs()));
    }

    /// A TIME-WAIT entry's timer fired.
    pub(super) fn time_wait_timer(
        &mut self,
        now: Instant,
        slot: u32,
        generation: u32,
        at: Instant,
    ) {
        let Some(entry) = self.time_wait.get_mut(slot) else {
            return;
        };
        if entry.generation != generation || entry.scheduled != Some(at) {
            return;
        }
        entry.scheduled = None;
        if entry.expires <= now {
            self.end_time_wait(now, slot, TimeWaitEnd::Expired);
        } else {
            let (expires, owner) = (entry.expires, Owner::TimeWait { slot, generation });
            let scheduled = self.timers.schedule(owner, expires, None);
            if let Some(e) = self.time_wait.get_mut(slot) {
                e.scheduled = Some(scheduled);
            }
        }
    }

    /// A TIME-WAIT entry ends: it expired, a RST or a new SYN ended it, or the node stops.
    pub(super) fn end_time_wait(&mut self, now: Instant, slot: u32, why: TimeWaitEnd) {
        let Some(entry) = self.time_wait.remove(slot) else {
            return;
        };
        match why {
            TimeWaitEnd::Reset => self.counters.time_wait_reset += 1,
            TimeWaitEnd::NewSyn => self.counters.time_wait_reused += 1,
            TimeWaitEnd::Expired | TimeWaitEnd::Shutdown => {}
        }
        record::time_wait_ended(&mut self.journal, now, &entry, why);
        if entry.active {
            self.push_ended(
                entry.conn,
                Ended {
                    established: true,
                    reset_by_peer: why == TimeWaitEnd::Reset,
                    time_wait: true,
                },
            );
        }
    }
}

/// States in which we closed and still have something for the peer to take or send.
fn closing(state: tcp::State) -> bool {
    matches!(
        state,
        tcp::State::FinWait1 | tcp::State::FinWait2 | tcp::State::Closing | tcp::State::LastAck
    )
}

/// Keeps [`Conn::stalled`]: whether data or our FIN waits for the peer, and since when
/// SND.UNA has not moved. The application's own sockets are left as Linux leaves them.
fn watch_progress(now: Instant, conn: &mut Conn) {
    let waiting = conn.socket().send_queue() > 0
        || matches!(
            conn.state,
            tcp::State::FinWait1 | tcp::State::Closing | tcp::State::LastAck
        );
    let una = conn.inside.snd_una;
    conn.stalled = match conn.stalled {
        _ if !waiting || conn.app => None,
        Some((was, since)) if was == una => Some((was, since)),
        _ => Some((una, now)),
    };
}
