//! Two nodes joined by a link, stepped on one virtual clock (quinn-proto's test `Pair` is
//! the model): `synack demo`, and the tests of the node's behaviour that need no root.
//!
//! The link's `Direction::In` runs from the client to the server. Time moves only when
//! nothing more can happen at the current instant, and then straight to the next
//! deadline: 60 s of TIME-WAIT take microseconds, and a run is the same every time.

use smoltcp::time::{Duration, Instant};

use super::Edge;
use crate::link::Link;
use crate::observe::Direction;

/// Rounds of packet moves at one instant before the pair gives up on settling: a guard
/// against two nodes that answer each other forever.
const MAX_ROUNDS_PER_INSTANT: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum PairError {
    #[error("the simulation did not finish within {0} s of virtual time")]
    TooLong(u64),
    #[error("the simulation is stuck: nothing is scheduled and nothing is on the link")]
    Stuck,
    #[error("the two nodes never stop answering each other at one instant")]
    Livelock,
}

pub struct Pair {
    now: Instant,
    pub client: Edge,
    pub server: Edge,
    pub link: Link,
}

impl Pair {
    pub fn new(client: Edge, server: Edge, link: Link, start: Instant) -> Self {
        Pair {
            now: start,
            client,
            server,
            link,
        }
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    /// Runs timers and moves packets at the current instant until nothing more happens.
    pub fn settle(&mut self) -> Result<(), PairError> {
        let now = self.now;
        for _ in 0..MAX_ROUNDS_PER_INSTANT {
            self.client.timers(now);
            self.server.timers(now);
            self.client.drain(now, &mut self.link, Direction::In);
            self.server.drain(now, &mut self.link, Direction::Out);
            let mut moved = false;
            while let Some(a) = self.link.take_due(Direction::In, now) {
                self.server.deliver(now, &a.data, a.remark.as_deref());
                self.server.drain(now, &mut self.link, Direction::Out);
                self.link.recycle(a);
                moved = true;
            }
            while let Some(a) = self.link.take_due(Direction::Out, now) {
                self.client.deliver(now, &a.data, a.remark.as_deref());
                self.client.drain(now, &mut self.link, Direction::In);
                self.link.recycle(a);
                moved = true;
            }
            let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
            if !moved
                && !due(self.client.node.poll_timeout())
                && !due(self.server.node.poll_timeout())
            {
                return Ok(());
            }
        }
        Err(PairError::Livelock)
    }

    /// When anything next happens: a node's timer, a packet due off the link, a capture
    /// that wants to sync.
    pub fn next_event(&self) -> Option<Instant> {
        [
            self.client.next_deadline(),
            self.server.next_deadline(),
            self.link.next_due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Moves the clock to the next event. Returns false if nothing is scheduled at all.
    pub fn advance(&mut self) -> bool {
        self.client.idle(self.now);
        self.server.idle(self.now);
        let Some(next) = self.next_event() else {
            return false;
        };
        // At least a microsecond: something due now that changes nothing must not spin.
        self.now = next.max(self.now + Duration::from_micros(1));
        true
    }

    /// Moves the clock forward by `d`, settling at every event on the way.
    pub fn run_for(&mut self, d: Duration) -> Result<(), PairError> {
        let end = self.now + d;
        loop {
            self.settle()?;
            match self.next_event() {
                Some(t) if t <= end => {
                    self.advance();
                }
                _ => {
                    self.client.idle(self.now);
                    self.server.idle(self.now);
                    self.now = end;
                    return self.settle();
                }
            }
        }
    }

    /// Settles and advances until `done` says so, within `limit` of virtual time.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut Pair) -> bool,
    ) -> Result<(), PairError> {
        let end = self.now + limit;
        loop {
            self.settle()?;
            if done(self) {
                return Ok(());
            }
            // What `done` did (opened a connection, say) goes out at this instant.
            self.settle()?;
            if self.now > end {
                return Err(PairError::TooLong(limit.secs()));
            }
            if !self.advance() {
                return Err(PairError::Stuck);
            }
        }
    }
}
