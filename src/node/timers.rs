//! When each connection, TIME-WAIT entry and the node's other sockets next need the
//! clock: a binary heap with lazy deletion.
//!
//! Every owner keeps the instant it is scheduled for. Scheduling earlier pushes an entry;
//! scheduling later pushes nothing (the earlier entry fires, finds nothing due, and the
//! owner schedules again). An entry whose instant is not its owner's current one is stale
//! and skipped. So each packet costs O(log n) at most. Stale entries are swept out when
//! they outnumber the live ones (one pass over the heap after at least as many pushes:
//! O(1) a push, amortized), so the heap stays within twice the owners however often
//! deadlines move earlier, and a quiet node is not woken for the ghosts of a past load.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use smoltcp::time::Instant;

/// Who a timer belongs to. Connections and TIME-WAIT entries are named by slot and
/// generation, so a timer of a slot's previous owner is recognised as stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    Conn {
        slot: u32,
        generation: u32,
    },
    TimeWait {
        slot: u32,
        generation: u32,
    },
    /// The DNS sockets, the fragment reassembly, the capture's housekeeping.
    Misc,
}

#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Owner)>>,
}

impl Timers {
    /// Makes sure `owner` is woken at `at`, given that it is now scheduled for `current`;
    /// returns what it is scheduled for afterwards.
    pub fn schedule(&mut self, owner: Owner, at: Instant, current: Option<Instant>) -> Instant {
        match current {
            Some(c) if c <= at => c,
            _ => {
                self.heap.push(Reverse((at, owner)));
                at
            }
        }
    }

    /// The earliest instant anything is scheduled for (possibly a stale entry: waking for
    /// one costs a pop).
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// An entry due by `now`, if any, with the instant it was scheduled for.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, Owner)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether stale entries have grown past the `owners` that can have a live one.
    pub fn wants_sweep(&self, owners: usize) -> bool {
        self.heap.len() > 2 * owners + SWEEP_SLACK
    }

    /// Keeps only the entries `live` says are still their owner's.
    pub fn sweep(&mut self, mut live: impl FnMut(Instant, Owner) -> bool) {
        self.heap.retain(|Reverse((at, owner))| live(*at, *owner));
    }
}

/// Stale entries tolerated before a sweep, however few the owners: a sweep of a small
/// heap is not worth doing often.
const SWEEP_SLACK: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: i64) -> Instant {
        Instant::from_millis(n)
    }

    #[test]
    fn earlier_pushes_later_waits_for_the_earlier_entry() {
        let mut t = Timers::default();
        let a = Owner::Conn {
            slot: 1,
            generation: 0,
        };
        let at = t.schedule(a, ms(100), None);
        assert_eq!(at, ms(100));
        // Later: nothing pushed, still scheduled for 100.
        assert_eq!(t.schedule(a, ms(200), Some(at)), ms(100));
        assert_eq!(t.len(), 1);
        // Earlier: a new entry; the one at 100 becomes stale.
        assert_eq!(t.schedule(a, ms(50), Some(at)), ms(50));
        assert_eq!(t.next(), Some(ms(50)));
        assert_eq!(t.pop_due(ms(10)), None);
        assert_eq!(t.pop_due(ms(60)), Some((ms(50), a)));
        assert_eq!(t.pop_due(ms(100)), Some((ms(100), a)), "the stale one");
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_sweep_keeps_the_live_entries_only() {
        let mut t = Timers::default();
        let a = Owner::Conn {
            slot: 1,
            generation: 0,
        };
        let mut current = None;
        // Each deadline earlier than the last: every previous entry goes stale.
        for i in 0..5000 {
            current = Some(t.schedule(a, ms(10_000 - i), current));
        }
        assert!(t.wants_sweep(1));
        t.sweep(|at, owner| owner == a && Some(at) == current);
        assert_eq!(t.len(), 1);
        assert!(!t.wants_sweep(1));
        assert_eq!(t.next(), current);
    }
}
