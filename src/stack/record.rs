//! Recording what happened: state transitions of our sockets and the segments the
//! observer found meaningful become journey events and capture notes.

use smoltcp::socket::tcp;
use smoltcp::time::Instant;

use super::{Conn, Stack, endpoint_v4, state_name};
use crate::capture::{Attach, Note};
use crate::device::Link;
use crate::journey::{ConnId, Stage, What};
use crate::observe::{Direction, FourTuple, Role};

impl<L: Link> Stack<L> {
    /// Turns the segments the observer found meaningful into journey events.
    pub(super) fn absorb_observed(&mut self, now: Instant) {
        self.dev
            .inner_mut()
            .tap_mut()
            .take_observed(&mut self.observed);
        for i in 0..self.observed.len() {
            let o = self.observed[i];
            let tuple = o.tuple();
            let s = o.segment;
            let t = now.total_micros();
            if o.role == Role::Syn && o.dir == Direction::In {
                let Some(id) = self.conn_for_syn(tuple, now) else {
                    continue;
                };
                let (waiting, free) = self.queue(tuple.local.port());
                if let Some(rec) = self.journal.get_mut(id) {
                    rec.handshake.client_isn = Some(s.seq);
                    rec.handshake.client_window = Some(s.window);
                    rec.handshake.client_options = s.options;
                }
                self.journal.record(
                    Some(id),
                    t,
                    Stage::Connect,
                    What::Syn {
                        remote: tuple.remote,
                        local: tuple.local,
                        isn: s.seq,
                        window: s.window,
                        options: s.options,
                        queue_depth: waiting,
                        backlog: waiting + free,
                    },
                );
                continue;
            }
            let Some(id) = self.conn_id(tuple) else {
                continue;
            };
            let what = match (o.role, o.dir) {
                // Our active open (fetch): our SYN, the server's SYN-ACK, our ACK.
                (Role::Syn, Direction::Out) => {
                    if let Some(rec) = self.journal.get_mut(id) {
                        rec.handshake.client_isn = Some(s.seq);
                        rec.handshake.client_window = Some(s.window);
                        rec.handshake.client_options = s.options;
                    }
                    What::SynSent {
                        local: tuple.local,
                        remote: tuple.remote,
                        isn: s.seq,
                        window: s.window,
                        options: s.options,
                    }
                }
                (Role::SynAck, Direction::In) => {
                    if let Some(rec) = self.journal.get_mut(id) {
                        rec.handshake.server_isn = Some(s.seq);
                        rec.handshake.server_window = Some(s.window);
                        rec.handshake.server_options = s.options;
                    }
                    What::SynAckReceived {
                        isn: s.seq,
                        ack: s.ack,
                        window: s.window,
                        options: s.options,
                    }
                }
                (Role::HandshakeAck, Direction::Out) => What::AckSent {
                    seq: s.seq,
                    ack: s.ack,
                },
                (Role::SynAck, Direction::Out) => {
                    if let Some(rec) = self.journal.get_mut(id) {
                        rec.handshake.server_isn = Some(s.seq);
                        rec.handshake.server_window = Some(s.window);
                        rec.handshake.server_options = s.options;
                    }
                    What::SynAck {
                        isn: s.seq,
                        ack: s.ack,
                        window: s.window,
                        options: s.options,
                    }
                }
                (Role::HandshakeAck, Direction::In) => What::HandshakeAck {
                    seq: s.seq,
                    ack: s.ack,
                },
                (Role::Fin, dir) => What::Fin {
                    dir,
                    seq: s.seq.wrapping_add(s.payload_len),
                    ack: s.ack,
                },
                (Role::FinAckOfFin, dir) => {
                    self.journal.record(
                        Some(id),
                        t,
                        Stage::Close,
                        What::FinAcked { dir, ack: s.ack },
                    );
                    What::Fin {
                        dir,
                        seq: s.seq.wrapping_add(s.payload_len),
                        ack: s.ack,
                    }
                }
                (Role::AckOfFin, dir) => What::FinAcked { dir, ack: s.ack },
                (Role::Rst, dir) => {
                    if dir == Direction::In
                        && let Some(conn) = self
                            .slots
                            .iter_mut()
                            .find_map(|s| s.conn.as_mut().filter(|c| c.tuple == tuple))
                    {
                        conn.reset_by_peer = true;
                    }
                    What::Rst { dir, seq: s.seq }
                }
                _ => continue,
            };
            let stage = if matches!(
                what,
                What::SynAck { .. }
                    | What::HandshakeAck { .. }
                    | What::SynSent { .. }
                    | What::SynAckReceived { .. }
                    | What::AckSent { .. }
            ) {
                Stage::Connect
            } else {
                Stage::Close
            };
            self.journal.record(Some(id), t, stage, what);
        }
    }

    pub(super) fn conn_id(&self, tuple: FourTuple) -> Option<ConnId> {
        self.slots
            .iter()
            .filter_map(|s| s.conn.as_ref())
            .find(|c| c.tuple == tuple)
            .map(|c| c.id)
    }

    /// The connection a SYN opened: the listener that took it is now SYN-RECEIVED with
    /// that peer as its remote end. Opens the journey record on first sight.
    pub(super) fn conn_for_syn(&mut self, tuple: FourTuple, now: Instant) -> Option<ConnId> {
        if let Some(id) = self.conn_id(tuple) {
            return Some(id);
        }
        let idx = self.slots.iter().position(|slot| {
            slot.conn.is_none() && {
                let sock = self.sockets.get::<tcp::Socket>(slot.handle);
                sock.state() != tcp::State::Listen
                    && sock.remote_endpoint().and_then(endpoint_v4) == Some(tuple.remote)
            }
        })?;
        Some(self.open_conn(idx, tuple, now))
    }

    pub(super) fn open_conn(&mut self, idx: usize, tuple: FourTuple, now: Instant) -> ConnId {
        let id = self
            .journal
            .open(tuple.local, tuple.remote, now.total_micros());
        self.counters.connections += 1;
        self.slots[idx].conn = Some(Conn {
            id,
            tuple,
            opened: now,
            time_wait_since: None,
            closed_at: None,
            session: None,
            established: false,
            reset_by_peer: false,
        });
        id
    }

    /// Compares every socket's state with the last one seen and records transitions.
    /// `attach` says which packet, if any, the capture should show each one on.
    pub(super) fn scan_states(&mut self, now: Instant, attach: Option<Attach>) {
        self.scan_states_of(now, attach, None);
    }

    /// As [`scan_states`](Self::scan_states), for the sockets one inbound segment can have
    /// changed: its connection's, and the listeners' if it was a SYN. With thousands of
    /// sockets (TIME-WAIT after a burst) a full scan per packet would dominate the loop.
    pub(super) fn scan_states_of(
        &mut self,
        now: Instant,
        attach: Option<Attach>,
        only: Option<(FourTuple, bool)>,
    ) {
        for idx in 0..self.slots.len() {
            if let Some((tuple, syn)) = only {
                let mine = match &self.slots[idx].conn {
                    Some(conn) => conn.tuple == tuple,
                    None => syn,
                };
                if !mine {
                    continue;
                }
            }
            let handle = self.slots[idx].handle;
            let sock = self.sockets.get::<tcp::Socket>(handle);
            let (new, old) = (sock.state(), self.slots[idx].state);
            if new == old {
                continue;
            }
            let remote = sock.remote_endpoint().and_then(endpoint_v4);
            let local = sock.local_endpoint().and_then(endpoint_v4);
            self.slots[idx].state = new;
            if self.slots[idx].conn.is_none()
                && let (Some(remote), Some(local)) = (remote, local)
            {
                self.open_conn(idx, FourTuple { local, remote }, now);
            }
            let Some(conn) = self.slots[idx].conn.as_mut() else {
                continue;
            };
            match new {
                tcp::State::Established => conn.established = true,
                tcp::State::TimeWait => conn.time_wait_since = Some(now),
                tcp::State::FinWait1 | tcp::State::LastAck => conn.closed_at = Some(now),
                _ => {}
            }
            let (id, tuple) = (conn.id, conn.tuple);
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
                Some(id),
                now.total_micros(),
                stage,
                What::State { from, to },
            );
            if let Some(attach) = attach {
                let mut text = format!("our side: {from} -> {to}");
                if new == tcp::State::SynReceived {
                    let (waiting, free) = self.queue(tuple.local.port());
                    text += &format!(" (accept queue {waiting}/{})", waiting + free);
                }
                self.notes.push(Note {
                    tuple,
                    attach,
                    text,
                });
            }
            // RFC 9293 §3.10.7.3: a RST in SYN-RECEIVED returns a passively opened
            // connection to LISTEN. The socket is a free listener again; the connection
            // that was forming is over.
            if new == tcp::State::Listen {
                self.end_conn(idx, now);
            }
        }
    }

    /// Closes a connection's journey record and detaches it from its socket.
    pub(super) fn end_conn(&mut self, idx: usize, now: Instant) {
        let Some(conn) = self.slots[idx].conn.take() else {
            return;
        };
        if self.slots[idx].port == 0 {
            let ended = super::Ended {
                established: conn.established,
                reset_by_peer: conn.reset_by_peer,
                time_wait: conn.time_wait_since.is_some(),
            };
            self.ended.push((conn.id, ended));
        }
        let (bytes_in, bytes_out, requests) = self
            .journal
            .get(conn.id)
            .map_or((0, 0, 0), |r| (r.bytes_in, r.bytes_out, r.requests));
        self.journal.record(
            Some(conn.id),
            now.total_micros(),
            Stage::Close,
            What::Closed {
                bytes_in,
                bytes_out,
                requests,
                duration_us: (now - conn.opened).total_micros(),
            },
        );
        self.journal.close(conn.id);
    }
}
