//! TIME-WAIT as Linux keeps it: the connection's socket and buffers are given back, and a
//! small entry (4-tuple, the sequence numbers at the end, the window, the expiry) answers
//! for the connection until 2 MSL have passed (`net/ipv4/tcp_minisocks.c`).
//!
//! What a segment does to an entry (RFC 9293 §3.10.7.4, RFC 1122 §4.2.2.13, RFC 6191):
//! - a retransmitted FIN is acknowledged again, and the timer restarts;
//! - a SYN whose sequence number is beyond the old connection's starts a new connection;
//! - a RST exactly at RCV.NXT ends the entry early (Linux with `tcp_rfc1337 = 0`); any
//!   other RST is dropped;
//! - anything else gets an ACK repeating where the connection ended.

use std::collections::HashMap;

use smoltcp::time::{Duration, Instant};

use crate::journey::ConnId;
use crate::observe::{FourTuple, Segment};

use super::wire::Bare;

/// One connection in TIME-WAIT.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub tuple: FourTuple,
    /// Our SND.NXT: one past our FIN.
    pub snd_nxt: u32,
    /// Our RCV.NXT: one past the peer's FIN.
    pub rcv_nxt: u32,
    /// The window field of our last segment.
    pub window: u16,
    pub expires: Instant,
    /// When the connection entered TIME-WAIT.
    pub entered: Instant,
    pub conn: ConnId,
    /// We opened it (its opener waits for it to end).
    pub active: bool,
    pub generation: u32,
    /// Where the timer heap has it (see `timers`).
    pub scheduled: Option<Instant>,
    /// When the entry last sent an ACK for an unexpected segment (rate limited per
    /// entry, as Linux's `tcp_timewait_check_oow_rate_limit`).
    pub last_ack: Option<Instant>,
}

/// What a segment that found an entry does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The peer's FIN again: ACK it and restart the timer.
    FinAgain,
    /// A SYN with a higher sequence number: the entry ends, a new connection may begin.
    NewSyn,
    /// A RST at RCV.NXT: the entry ends.
    Reset,
    /// Anything else: ACK where the connection ended.
    Ack,
    /// A RST not at RCV.NXT: dropped.
    Ignore,
}

/// The entries, by 4-tuple.
#[derive(Debug, Default)]
pub struct Table {
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    by_tuple: HashMap<FourTuple, u32>,
    by_id: HashMap<ConnId, u32>,
    generations: Vec<u32>,
}

impl Table {
    pub fn len(&self) -> usize {
        self.by_tuple.len()
    }

    pub fn find(&self, tuple: &FourTuple) -> Option<u32> {
        self.by_tuple.get(tuple).copied()
    }

    pub fn get(&self, slot: u32) -> Option<&Entry> {
        self.slots.get(slot as usize)?.as_ref()
    }

    pub fn get_mut(&mut self, slot: u32) -> Option<&mut Entry> {
        self.slots.get_mut(slot as usize)?.as_mut()
    }

    /// Adds an entry; returns its slot and generation.
    pub fn insert(&mut self, mut entry: Entry) -> (u32, u32) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.generations.push(0);
            (self.slots.len() - 1) as u32
        });
        let generation = self.generations[slot as usize];
        entry.generation = generation;
        self.by_tuple.insert(entry.tuple, slot);
        self.by_id.insert(entry.conn, slot);
        self.slots[slot as usize] = Some(entry);
        (slot, generation)
    }

    pub fn remove(&mut self, slot: u32) -> Option<Entry> {
        let entry = self.slots.get_mut(slot as usize)?.take()?;
        self.by_tuple.remove(&entry.tuple);
        self.by_id.remove(&entry.conn);
        self.generations[slot as usize] = self.generations[slot as usize].wrapping_add(1);
        self.free.push(slot);
        Some(entry)
    }

    /// The slot of connection `id`'s entry.
    pub fn find_id(&self, id: ConnId) -> Option<u32> {
        self.by_id.get(&id).copied()
    }

    /// Every entry (at shutdown).
    pub fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.slots.len() as u32).filter(|&s| self.slots[s as usize].is_some())
    }
}

impl Entry {
    /// How a segment from the peer is taken.
    pub fn judge(&self, seg: &Segment) -> Verdict {
        let after = |a: u32, b: u32| (a.wrapping_sub(b) as i32) > 0;
        if seg.rst {
            // Only a RST exactly at RCV.NXT ends the entry; any other is dropped unanswered
            // (Linux's tcp_timewait_state_process with tcp_rfc1337 = 0).
            return if seg.seq == self.rcv_nxt {
                Verdict::Reset
            } else {
                Verdict::Ignore
            };
        }
        if seg.syn && !seg.ack_flag {
            // RFC 1122 §4.2.2.13 / RFC 6191: a new incarnation may start if its ISN is
            // beyond everything the old connection used.
            return if after(seg.seq, self.rcv_nxt) {
                Verdict::NewSyn
            } else {
                Verdict::Ack
            };
        }
        // The peer's FIN again: its end is our RCV.NXT.
        if seg.fin && seg.seq.wrapping_add(seg.seq_len()) == self.rcv_nxt {
            return Verdict::FinAgain;
        }
        Verdict::Ack
    }

    /// Our ACK, as the connection's last words: `<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>`.
    pub fn ack(&self) -> Bare {
        Bare {
            src: self.tuple.local,
            dst: self.tuple.remote,
            seq: self.snd_nxt,
            ack: Some(self.rcv_nxt),
            rst: false,
            syn: None,
            window: self.window,
        }
    }

    /// The entry lives this long again (a retransmitted FIN restarts it).
    pub fn restart(&mut self, now: Instant, length: Duration) {
        self.expires = now + length;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            tuple: FourTuple {
                local: "10.77.0.2:80".parse().unwrap(),
                remote: "10.77.0.1:5000".parse().unwrap(),
            },
            snd_nxt: 9000,
            rcv_nxt: 500,
            window: 1000,
            expires: Instant::from_secs(60),
            entered: Instant::ZERO,
            conn: 1,
            active: false,
            generation: 0,
            scheduled: None,
            last_ack: None,
        }
    }

    fn seg(flags: &str, seq: u32) -> Segment {
        Segment {
            src: "10.77.0.1:5000".parse().unwrap(),
            dst: "10.77.0.2:80".parse().unwrap(),
            seq,
            ack: 9000,
            syn: flags.contains('S'),
            ack_flag: flags.contains('.'),
            fin: flags.contains('F'),
            rst: flags.contains('R'),
            psh: false,
            window: 100,
            payload_len: 0,
            options: Default::default(),
        }
    }

    #[test]
    fn each_segment_gets_what_linux_gives_it() {
        let e = entry();
        assert_eq!(e.judge(&seg("F.", 499)), Verdict::FinAgain);
        assert_eq!(e.judge(&seg("S", 501)), Verdict::NewSyn);
        assert_eq!(e.judge(&seg("S", 400)), Verdict::Ack, "an old SYN");
        assert_eq!(e.judge(&seg("R", 500)), Verdict::Reset);
        assert_eq!(
            e.judge(&seg("R", 501)),
            Verdict::Ignore,
            "in the window but not at RCV.NXT: Linux drops it"
        );
        assert_eq!(e.judge(&seg("R", 5000)), Verdict::Ignore, "out of it");
        assert_eq!(e.judge(&seg(".", 500)), Verdict::Ack);
        let ack = e.ack();
        assert_eq!((ack.seq, ack.ack, ack.rst), (9000, Some(500), false));
    }

    #[test]
    fn the_table_finds_and_forgets() {
        let mut t = Table::default();
        let (slot, generation) = t.insert(entry());
        assert_eq!(t.find(&entry().tuple), Some(slot));
        assert!(t.remove(slot).is_some());
        assert_eq!(t.find(&entry().tuple), None);
        let (again, g2) = t.insert(entry());
        assert_eq!(again, slot, "the slot is reused");
        assert_ne!(g2, generation, "with a new generation");
        assert_eq!(t.len(), 1);
    }
}
