//! One connection's conversation, on either side: TCP bytes in, [TLS,] HTTP, bytes out.
//!
//! A conversation never sees a socket: the stack hands it bytes and lends it buffers
//! ([`Conversation`]), so the same stack loop drives the server's sessions and the
//! client's exchanges alike.

use std::io;
use std::time::Duration;

use smoltcp::time::Instant;

use crate::app::App;
use crate::journey::{ConnId, Journal};

mod client;
mod server;
mod tls_layer;

pub use client::{BodySink, ClientRequest, ClientSession, Exchange, Outcome, Pacing};
pub use server::ServerSession;

/// What the stack needs from a connection's conversation to move its bytes.
pub trait Conversation {
    /// The connection's id in the journal.
    fn id(&self) -> ConnId;
    /// How many bytes it takes now. Zero holds them in the socket, and the advertised
    /// window shrinks until the conversation catches up.
    fn room(&self) -> usize;
    /// Takes received bytes (TLS records when it speaks TLS); returns how many it took.
    fn input(&mut self, data: &[u8], now: Instant) -> usize;
    /// The peer sent FIN: what is buffered is all there will be.
    fn peer_closed(&mut self);
    /// Acts on what has arrived: decodes, handles, prepares what goes out next.
    fn process(&mut self, now: Instant, app: &App, journal: &mut Journal);
    fn has_output(&self) -> bool;
    /// Fills `buf` with bytes to send. An error means a streamed body failed after its
    /// head was sent: the only honest thing left is to abort the connection.
    fn output(&mut self, buf: &mut [u8], now: Instant) -> io::Result<usize>;
    /// The message that completed in the last [`output`](Self::output), once.
    fn take_finished(&mut self) -> Option<Finished>;
    /// Everything is sent and nothing more will be read: time for our FIN.
    fn wants_close(&self) -> bool;
    /// Bytes of plaintext encrypted and of TLS records sent since the last call, if it
    /// speaks TLS (for the journey's encrypt stage).
    fn take_encrypted(&mut self) -> Option<(u64, u64)>;
    /// When [`poll_timeout`](Self::poll_timeout) has something to do.
    fn deadline(&self) -> Option<Instant>;
    /// What was handed to the socket is still on its way (unacknowledged): the peer is
    /// busy receiving, so neither the idle nor the request time-out may run out now.
    fn still_sending(&mut self, _now: Instant) {}
    fn poll_timeout(&mut self, now: Instant, journal: &mut Journal);
}

/// How long a client may take to send one request, from its first byte. Past this it
/// gets 408 and the connection closes: a slowloris client cannot hold a slot forever.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a kept-alive connection may sit idle between requests before it gets 408
/// and is closed. Browsers keep idle connections for about a minute; half that is
/// common on servers.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub request: Duration,
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            request: DEFAULT_REQUEST_TIMEOUT,
            idle: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// A message (a response, or a request on the client's side) completely handed to the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    /// The response's status; 0 for a request.
    pub status: u16,
    pub wire_bytes: u64,
}
