//! The socket table: the accept queue refilled, closed sockets reclaimed, and the bounds
//! on connections that are closing (FIN-WAIT timeout, TIME-WAIT count).

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::time::Instant;

use super::{Slot, Stack, limits, state_name};
use crate::capture::{Attach, Note};
use crate::device::Link;
use crate::journey::{Stage, What};

impl<L: Link> Stack<L> {
    /// On `port`: connections that reached a listener and are not taken yet, and the free
    /// listeners.
    pub(super) fn queue(&self, port: u16) -> (usize, usize) {
        let on_port = self.slots.iter().filter(|s| s.port == port);
        let waiting = on_port
            .clone()
            .filter(|s| s.conn.as_ref().is_some_and(|c| c.session.is_none()))
            .count();
        let free = on_port.filter(|s| s.conn.is_none()).count();
        (waiting, free)
    }

    /// Keeps `backlog` sockets in each listening port's accept queue.
    pub(super) fn refill(&mut self) {
        for port in self.cfg.listening_ports() {
            self.refill_port(port);
        }
    }

    /// Removes sockets that reached CLOSED and ends their connections' records.
    pub(super) fn reclaim(&mut self, now: Instant) {
        self.cut_time_wait(now);
        let mut idx = 0;
        while idx < self.slots.len() {
            if self.slots[idx].state == tcp::State::Closed {
                self.end_conn(idx, now);
                let slot = self.slots.swap_remove(idx);
                // A CLOSED socket keeps its buffers: the next listener reuses them rather
                // than allocating and zeroing rx + tx bytes again.
                if self.spare.len() < self.cfg.backlog {
                    self.spare.push(slot.handle);
                } else {
                    self.sockets.remove(slot.handle);
                }
            } else {
                idx += 1;
            }
        }
    }

    /// Resets connections that we closed more than FIN_TIMEOUT ago and that are still not
    /// closed (the peer never sent its FIN, or never acknowledged ours).
    pub(super) fn expire_closing(&mut self, now: Instant) {
        let closing = |s: tcp::State| {
            matches!(
                s,
                tcp::State::FinWait1
                    | tcp::State::FinWait2
                    | tcp::State::Closing
                    | tcp::State::LastAck
            )
        };
        for slot in &mut self.slots {
            let Some(conn) = slot.conn.as_mut() else {
                continue;
            };
            let expired = conn
                .closed_at
                .is_some_and(|t| now - t >= limits::FIN_TIMEOUT.into());
            if !expired || !closing(slot.state) {
                continue;
            }
            conn.closed_at = None;
            self.counters.fin_timeouts += 1;
            let state = state_name(slot.state);
            let secs = limits::FIN_TIMEOUT.as_secs();
            self.journal.record(
                Some(conn.id),
                now.total_micros(),
                Stage::Close,
                What::FinTimeout { state, secs },
            );
            self.notes.push(Note {
                tuple: conn.tuple,
                attach: Attach::NextControl,
                text: format!("reset: still {state} {secs} s after our FIN (tcp_fin_timeout)"),
            });
            self.sockets.get_mut::<tcp::Socket>(slot.handle).abort();
        }
    }

    /// Past `--max-time-wait` sockets in TIME-WAIT, marks the oldest for reclaiming now.
    pub(super) fn cut_time_wait(&mut self, now: Instant) {
        let limit = self.cfg.max_time_wait;
        let in_time_wait = self
            .slots
            .iter()
            .filter(|s| s.state == tcp::State::TimeWait)
            .count();
        if in_time_wait <= limit {
            return;
        }
        let mut oldest: Vec<(Instant, usize)> = (self.slots.iter().enumerate())
            .filter(|(_, s)| s.state == tcp::State::TimeWait)
            .filter_map(|(i, s)| Some((s.conn.as_ref()?.time_wait_since?, i)))
            .collect();
        oldest.sort_unstable();
        for &(_, idx) in oldest.iter().take(in_time_wait - limit) {
            if let Some(id) = self.slots[idx].conn.as_ref().map(|c| c.id) {
                let t = now.total_micros();
                self.journal
                    .record(Some(id), t, Stage::Close, What::TimeWaitCut { limit });
            }
            self.counters.time_wait_cut += 1;
            // Removed without a RST, as Linux drops a TIME-WAIT bucket: a late segment
            // from the peer gets smoltcp's RST for an unknown connection.
            self.slots[idx].state = tcp::State::Closed;
        }
    }

    /// A socket for a new listener or connection: a reclaimed one (its buffers reused) or
    /// a new one, with the TCP knobs set.
    pub(super) fn socket(&mut self) -> SocketHandle {
        let handle = self.spare.pop().unwrap_or_else(|| {
            self.sockets.add(tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; self.cfg.rx_buf]),
                tcp::SocketBuffer::new(vec![0; self.cfg.tx_buf]),
            ))
        });
        self.cfg
            .knobs
            .apply(self.sockets.get_mut::<tcp::Socket>(handle));
        handle
    }

    /// Keeps `backlog` sockets in the accept queue (listening or holding a connection not
    /// yet taken), then arms the gate if none of them is free to take a new SYN.
    fn refill_port(&mut self, port: u16) {
        let (waiting, free) = self.queue(port);
        for _ in waiting + free..self.cfg.backlog {
            let handle = self.socket();
            // listen() resets the socket: state, buffers, timers, sequence numbers.
            let sock = self.sockets.get_mut::<tcp::Socket>(handle);
            if sock.listen(port).is_err() {
                log::error!("cannot listen on port {port}");
                return;
            }
            self.slots.push(Slot {
                handle,
                port,
                state: tcp::State::Listen,
                conn: None,
            });
        }
        let (_, free) = self.queue(port);
        if free == 0 {
            let queued = (self.slots.iter().filter(|s| s.port == port))
                .filter_map(|s| s.conn.as_ref())
                .filter(|c| c.session.is_none());
            self.dev.arm(port, queued.map(|c| c.tuple.remote));
        } else {
            self.dev.disarm(port);
        }
    }
}
