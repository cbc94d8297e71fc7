//! The client's journey on a stack: resolve the host (smoltcp's DNS socket), connect
//! (our SYN), run the requests, close first, and wait out TIME-WAIT. Shared by
//! `synack fetch` (on a TUN device, real time) and `synack demo` (in memory, virtual time).

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;
use std::sync::Arc;

use smoltcp::socket::tcp;
use smoltcp::time::Instant;

use crate::journey::ConnId;
use crate::node::{ConnStatus, LookupId, Node};
use crate::session::{BodySink, ClientRequest, ClientSession, Exchange, Outcome};

/// Where the request goes and how.
pub struct Plan {
    /// The host as the URL names it (also the Host header and the TLS server name).
    pub host: String,
    /// Its address, if the URL gave one; otherwise it is looked up at `resolver`.
    pub ip: Option<Ipv4Addr>,
    pub resolver: Ipv4Addr,
    pub port: u16,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub requests: Vec<ClientRequest>,
    /// Stay until TIME-WAIT ends (RFC 9293 §3.6.1: 2 x MSL; smoltcp waits 10 s).
    pub wait_time_wait: bool,
}

/// Why a fetch failed; each has its own exit code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("cannot resolve {0}: {1}")]
    Dns(String, String),
    #[error("connection to {0} refused (the server answered our SYN with a RST)")]
    Refused(SocketAddrV4),
    #[error("connection to {0} reset by the server")]
    Reset(SocketAddrV4),
    #[error("no connection to {0}: the SYN went unanswered")]
    Unreachable(SocketAddrV4),
    #[error("timed out after {0} s")]
    Timeout(u64),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Protocol(String),
    #[error("{0}")]
    Local(String),
}

impl FetchError {
    /// The process exit code for this failure (the README lists them).
    pub fn exit_code(&self) -> u8 {
        match self {
            FetchError::Local(_) => 1,
            FetchError::Dns(..) => 3,
            FetchError::Refused(_) => 4,
            FetchError::Timeout(_) | FetchError::Unreachable(_) => 5,
            FetchError::Tls(_) => 7,
            FetchError::Reset(_) | FetchError::Protocol(_) => 8,
        }
    }
}

/// What a finished fetch found.
#[derive(Debug, Clone)]
pub struct Report {
    pub remote: SocketAddrV4,
    pub conn: ConnId,
    pub exchanges: Vec<Exchange>,
    /// Our side went through TIME-WAIT (we closed first).
    pub time_wait: bool,
}

enum Phase {
    Start,
    Resolving(LookupId),
    Talking {
        conn: ConnId,
        remote: SocketAddrV4,
        outcome: Rc<RefCell<Outcome>>,
        /// The conversation is over; only TIME-WAIT is left.
        done: bool,
    },
    Finished,
}

/// Drives a [`Plan`] on a stack, one [`poll`](Client::poll) per turn of its loop.
pub struct Client {
    plan: Plan,
    phase: Phase,
    sink: Option<BodySink>,
}

impl Client {
    pub fn new(plan: Plan, sink: BodySink) -> Self {
        Client {
            plan,
            phase: Phase::Start,
            sink: Some(sink),
        }
    }

    /// Moves the journey on after the node has run; the result once it is over. What it
    /// makes the node send (a lookup, a SYN) is for the driver to take.
    pub fn poll(&mut self, stack: &mut Node, now: Instant) -> Option<Result<Report, FetchError>> {
        loop {
            match &mut self.phase {
                Phase::Finished => return None,
                Phase::Start => match self.plan.ip {
                    Some(ip) => {
                        if let Err(e) = self.connect(stack, now, ip) {
                            return Some(self.finish(Err(e)));
                        }
                    }
                    None => match stack.lookup(now, &self.plan.host, self.plan.resolver) {
                        Ok(id) => self.phase = Phase::Resolving(id),
                        Err(e) => {
                            let host = self.plan.host.clone();
                            return Some(self.finish(Err(FetchError::Dns(host, e.to_string()))));
                        }
                    },
                },
                Phase::Resolving(id) => match stack.lookup_result(*id)? {
                    Ok(addrs) => {
                        if let Err(e) = self.connect(stack, now, addrs[0]) {
                            return Some(self.finish(Err(e)));
                        }
                    }
                    Err(e) => {
                        let host = self.plan.host.clone();
                        return Some(self.finish(Err(FetchError::Dns(host, e.to_string()))));
                    }
                },
                Phase::Talking {
                    conn,
                    remote,
                    outcome,
                    done,
                } => {
                    let (conn, remote) = (*conn, *remote);
                    let status = stack.conn_status(conn)?;
                    let finished = match status {
                        ConnStatus::Ended(_) => true,
                        // With --no-time-wait we leave as soon as our side waits.
                        ConnStatus::Open(tcp::State::TimeWait) => !self.plan.wait_time_wait,
                        ConnStatus::Open(_) => false,
                    };
                    let talked = {
                        let o = outcome.borrow();
                        o.error.is_some()
                            || (!o.exchanges.is_empty()
                                && o.exchanges.len() == self.plan.requests.len()
                                && o.exchanges.iter().all(|e| e.complete))
                    };
                    if talked && !*done {
                        *done = true;
                    }
                    if !finished {
                        return None;
                    }
                    let outcome = Rc::clone(outcome);
                    let result = report(conn, remote, status, &outcome.borrow());
                    return Some(self.finish(result));
                }
            }
        }
    }

    /// Whether only TIME-WAIT is left to wait for (the exchanges are over).
    pub fn talked(&self) -> bool {
        matches!(
            self.phase,
            Phase::Talking { done: true, .. } | Phase::Finished
        )
    }

    fn connect(&mut self, stack: &mut Node, now: Instant, ip: Ipv4Addr) -> Result<(), FetchError> {
        let remote = SocketAddrV4::new(ip, self.plan.port);
        let requests = self.plan.requests.clone();
        let tls = self.plan.tls.clone().map(|c| (c, self.plan.host.clone()));
        let sink = self
            .sink
            .take()
            .ok_or_else(|| FetchError::Local("connected twice".into()))?;
        let mut shared = None;
        let conn = stack
            .connect(now, remote, |id, now: Instant| {
                let (session, outcome) = ClientSession::new(id, requests, tls, sink, now);
                shared = Some(outcome);
                Box::new(session)
            })
            .map_err(|e| FetchError::Local(e.to_string()))?;
        let outcome = shared.ok_or_else(|| FetchError::Local("no conversation".into()))?;
        self.phase = Phase::Talking {
            conn,
            remote,
            outcome,
            done: false,
        };
        Ok(())
    }

    fn finish(&mut self, result: Result<Report, FetchError>) -> Result<Report, FetchError> {
        self.phase = Phase::Finished;
        result
    }
}

/// The fetch's result once its connection has ended (or waits in TIME-WAIT).
fn report(
    conn: ConnId,
    remote: SocketAddrV4,
    status: ConnStatus,
    outcome: &Outcome,
) -> Result<Report, FetchError> {
    let (established, reset, time_wait) = match status {
        ConnStatus::Ended(e) => (e.established, e.reset_by_peer, e.time_wait),
        ConnStatus::Open(state) => (true, false, state == tcp::State::TimeWait),
    };
    if let Some(e) = &outcome.error {
        return Err(if outcome.tls_failed {
            FetchError::Tls(e.clone())
        } else {
            FetchError::Protocol(e.clone())
        });
    }
    if !established {
        return Err(if reset {
            FetchError::Refused(remote)
        } else {
            FetchError::Unreachable(remote)
        });
    }
    let complete = !outcome.exchanges.is_empty() && outcome.exchanges.iter().all(|e| e.complete);
    if !complete {
        return Err(if reset {
            FetchError::Reset(remote)
        } else {
            FetchError::Protocol("the connection ended before the response was complete".into())
        });
    }
    Ok(Report {
        remote,
        conn,
        exchanges: outcome.exchanges.clone(),
        time_wait,
    })
}
