//! The stack as a client: names looked up through smoltcp's DNS socket, and connections
//! opened actively (our SYN, our ISN), each carrying a conversation like the server's.

use std::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::{dns, tcp};
use smoltcp::time::Instant;
use smoltcp::wire::{DnsQueryType, IpAddress};

use super::conn::Opened;
use super::turn::Cause;
use super::{Node, NodeError};
use crate::journey::{ConnId, Stage, What};
use crate::observe::FourTuple;
use crate::session::Conversation;

/// How connections we opened and ended are remembered for their openers at most.
const MAX_ENDED: usize = 1024;

/// Why a lookup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("{0} has no address for it (NXDOMAIN or no A record)")]
    NoAddress(Ipv4Addr),
    #[error("no answer from {0}:53 in {1} s")]
    NoAnswer(Ipv4Addr, u64),
    #[error(
        "{0} is not a DNS server: nothing answers on UDP port 53 (ICMP port unreachable); give another with --resolver"
    )]
    Unreachable(Ipv4Addr),
    #[error("cannot look it up: {0}")]
    Local(String),
}

/// Lookups in flight at once: a fetch makes one.
const MAX_LOOKUPS: usize = 4;

/// Ephemeral ports (RFC 6335 §6: 49152-65535, as IANA suggests).
const EPHEMERAL_FIRST: u16 = 49152;
const EPHEMERAL_COUNT: u32 = 16384;

/// smoltcp's DNS socket gives up after this long without an answer (its
/// RETRANSMIT_TIMEOUT); a failure sooner means the server answered, but with no address.
const DNS_GIVE_UP: smoltcp::time::Duration = smoltcp::time::Duration::from_millis(9_500);

pub type LookupId = usize;

pub(super) struct Lookups {
    handle: SocketHandle,
    server: Ipv4Addr,
    pending: Vec<Pending>,
    /// Finished lookups, until their results are taken.
    done: Vec<(LookupId, Result<Vec<Ipv4Addr>, LookupError>)>,
    next_id: LookupId,
}

impl Lookups {
    pub(super) fn server(&self) -> Ipv4Addr {
        self.server
    }
}

struct Pending {
    id: LookupId,
    query: dns::QueryHandle,
    name: String,
    started: Instant,
}

/// How a connection we opened ended, kept for its opener after the socket is reclaimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// It reached ESTABLISHED at some point.
    pub established: bool,
    /// The peer reset it (a RST in SYN-SENT is "connection refused").
    pub reset_by_peer: bool,
    /// It went through TIME-WAIT (the active closer's last state, RFC 9293 §3.6).
    pub time_wait: bool,
}

/// Where a connection we opened stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnStatus {
    Open(tcp::State),
    Ended(Ended),
}

/// A deterministic spread of ports: splitmix64 of the seed and a counter, so a seeded
/// run picks the same ports every time.
pub(super) fn ephemeral_port(seed: u64, n: u32) -> u16 {
    let mut z = seed.wrapping_add(
        u64::from(n)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    EPHEMERAL_FIRST + (z % u64::from(EPHEMERAL_COUNT)) as u16
}

impl Node {
    /// Starts looking up `name`'s IPv4 address at the DNS server `server` (port 53); the
    /// query goes out through [`next_transmit`](Self::next_transmit).
    pub fn lookup(
        &mut self,
        now: Instant,
        name: &str,
        server: Ipv4Addr,
    ) -> Result<LookupId, LookupError> {
        let lookups = self.lookups.get_or_insert_with(|| {
            let queries: Vec<Option<dns::DnsQuery>> = (0..MAX_LOOKUPS).map(|_| None).collect();
            let socket = dns::Socket::new(&[IpAddress::Ipv4(server)], queries);
            Lookups {
                handle: self.misc.add(socket),
                server,
                pending: Vec::new(),
                done: Vec::new(),
                next_id: 0,
            }
        });
        let socket = self.misc.get_mut::<dns::Socket>(lookups.handle);
        if lookups.server != server {
            socket.update_servers(&[IpAddress::Ipv4(server)]);
            lookups.server = server;
        }
        let query = socket
            .start_query(self.iface.context(), name, DnsQueryType::A)
            .map_err(|e| LookupError::Local(format!("{name:?}: {e}")))?;
        let id = lookups.next_id;
        lookups.next_id += 1;
        lookups.pending.push(Pending {
            id,
            query,
            name: name.to_owned(),
            started: now,
        });
        let what = What::Lookup {
            name: name.to_owned(),
            server,
        };
        self.journal
            .record(None, now.total_micros(), Stage::Resolve, what);
        self.misc_turn(now);
        Ok(id)
    }

    /// The addresses `name` resolved to, or why it did not; `None` while pending.
    pub fn lookup_result(&mut self, id: LookupId) -> Option<Result<Vec<Ipv4Addr>, LookupError>> {
        let done = &mut self.lookups.as_mut()?.done;
        let i = done.iter().position(|(d, _)| *d == id)?;
        Some(done.swap_remove(i).1)
    }

    /// Every pending lookup fails with `error` (the server is unreachable).
    pub(super) fn fail_lookups(&mut self, error: LookupError) {
        let Some(lookups) = self.lookups.as_mut() else {
            return;
        };
        let socket = self.misc.get_mut::<dns::Socket>(lookups.handle);
        for p in lookups.pending.drain(..) {
            socket.cancel_query(p.query);
            let what = What::LookedUp {
                name: p.name,
                addresses: Vec::new(),
                error: Some(error.to_string()),
                duration_us: 0,
            };
            self.journal.record(None, 0, Stage::Resolve, what);
            lookups.done.push((p.id, Err(error.clone())));
        }
    }

    /// Collects answers smoltcp's DNS socket has, into the journal and `done`.
    pub(super) fn poll_lookups(&mut self, now: Instant) {
        let Some(lookups) = self.lookups.as_mut() else {
            return;
        };
        let socket = self.misc.get_mut::<dns::Socket>(lookups.handle);
        let server = lookups.server;
        let mut i = 0;
        while i < lookups.pending.len() {
            let p = &lookups.pending[i];
            let result = match socket.get_query_result(p.query) {
                Err(dns::GetQueryResultError::Pending) => {
                    i += 1;
                    continue;
                }
                Ok(addrs) => {
                    let v4: Vec<Ipv4Addr> = addrs
                        .iter()
                        .map(|a| match a {
                            IpAddress::Ipv4(a) => *a,
                        })
                        .collect();
                    if v4.is_empty() {
                        Err(LookupError::NoAddress(server))
                    } else {
                        Ok(v4)
                    }
                }
                Err(dns::GetQueryResultError::Failed) if now - p.started < DNS_GIVE_UP => {
                    Err(LookupError::NoAddress(server))
                }
                Err(dns::GetQueryResultError::Failed) => {
                    Err(LookupError::NoAnswer(server, (now - p.started).secs()))
                }
            };
            let p = lookups.pending.swap_remove(i);
            let (addresses, error) = match &result {
                Ok(a) => (a.clone(), None),
                Err(e) => (Vec::new(), Some(e.to_string())),
            };
            let what = What::LookedUp {
                name: p.name,
                addresses,
                error,
                duration_us: (now - p.started).total_micros(),
            };
            self.journal
                .record(None, now.total_micros(), Stage::Resolve, what);
            lookups.done.push((p.id, result));
        }
    }

    /// Opens a connection to `remote` from an ephemeral port: our SYN goes out through
    /// [`next_transmit`](Self::next_transmit). `conversation` makes what will speak on
    /// it, given the connection's id.
    pub fn connect(
        &mut self,
        now: Instant,
        remote: SocketAddrV4,
        conversation: impl FnOnce(ConnId, Instant) -> Box<dyn Conversation>,
    ) -> Result<ConnId, NodeError> {
        let port = self.free_ephemeral_port(remote)?;
        let tuple = FourTuple {
            local: SocketAddrV4::new(self.cfg.addr, port),
            remote,
        };
        let id = self
            .journal
            .open(tuple.local, tuple.remote, now.total_micros());
        if let Some(rec) = self.journal.get_mut(id) {
            rec.active = true;
        }
        let session = conversation(id, now);
        let opts = self.cfg.socket_options();
        self.open_active(now, tuple, Some(session), Some(id), opts, false)
    }

    /// An ephemeral port whose 4-tuple to `remote` is neither in use nor in TIME-WAIT,
    /// as Linux's connect() picks one; none after a whole round of the range.
    pub(super) fn free_ephemeral_port(&mut self, remote: SocketAddrV4) -> Result<u16, NodeError> {
        for _ in 0..EPHEMERAL_COUNT {
            let port = ephemeral_port(self.cfg.seed, self.ports_used);
            self.ports_used = self.ports_used.wrapping_add(1);
            let local = SocketAddrV4::new(self.cfg.addr, port);
            if !self.tuple_in_use(&FourTuple { local, remote }) {
                return Ok(port);
            }
        }
        Err(NodeError::Connect(
            remote,
            "no ephemeral port is free".into(),
        ))
    }

    /// Whether a connection or a TIME-WAIT entry holds `tuple`.
    pub(super) fn tuple_in_use(&self, tuple: &FourTuple) -> bool {
        self.conns.find(tuple).is_some() || self.time_wait.find(tuple).is_some()
    }

    /// Opens connection `tuple` (our SYN goes out at once). `session`, `id`, `app`: as
    /// `new_conn` takes them.
    pub(super) fn open_active(
        &mut self,
        now: Instant,
        tuple: FourTuple,
        session: Option<Box<dyn Conversation>>,
        id: Option<ConnId>,
        opts: super::SocketOptions,
        app: bool,
    ) -> Result<ConnId, NodeError> {
        let slot = self.new_conn(now, tuple, Opened::Active, session, id, opts, app)?;
        let mut conn = self.conns.take(slot).expect("just made");
        let opened = conn.socket_mut().connect(
            self.iface.context(),
            (IpAddress::Ipv4(*tuple.remote.ip()), tuple.remote.port()),
            tuple.local.port(),
        );
        let id = conn.id;
        if let Err(e) = opened {
            // Nothing was sent: the reserved connection, its buffers and its 4-tuple go.
            self.remove_conn(now, slot, conn, None);
            return Err(NodeError::Connect(tuple.remote, e.to_string()));
        }
        self.conns.put(slot, conn);
        self.turn(now, slot, Cause::App);
        Ok(id)
    }

    /// Where the connection `id` we opened stands.
    pub fn conn_status(&self, id: ConnId) -> Option<ConnStatus> {
        if let Some(conn) = self.conns.find_id(id).and_then(|s| self.conns.get(s)) {
            return Some(ConnStatus::Open(conn.state));
        }
        if self.time_wait.find_id(id).is_some() {
            return Some(ConnStatus::Open(tcp::State::TimeWait));
        }
        self.ended
            .iter()
            .find(|(e, _)| *e == id)
            .map(|(_, ended)| ConnStatus::Ended(*ended))
    }

    pub(super) fn push_ended(&mut self, id: ConnId, ended: Ended) {
        if self.ended.len() == MAX_ENDED {
            self.ended.remove(0);
        }
        self.ended.push((id, ended));
    }
}
