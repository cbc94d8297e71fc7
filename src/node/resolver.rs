//! The DNS responder's socket: UDP datagrams to `--dns-port` answered by [`dns::Zone`],
//! each answer a journey event in the resolve stage.

use std::net::SocketAddrV4;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::udp;
use smoltcp::time::Instant;

use super::{Counters, endpoint_v4};

use crate::dns::{self, Outcome, Zone};
use crate::journey::{Journal, Stage, What};

/// Datagrams the socket holds each way before it drops: a burst of queries from a
/// resolver (A and AAAA for a few names) is a handful.
const SLOTS: usize = 64;
/// Bytes of datagrams held each way. A classic DNS message is at most 512 bytes; EDNS
/// ones a few KB.
const BYTES: usize = 64 * 1024;

pub(super) struct Resolver {
    handle: SocketHandle,
    zone: Zone,
    /// Reused for every datagram, so answering allocates only the journey's event.
    query: Vec<u8>,
    reply: Vec<u8>,
}

impl Resolver {
    pub(super) fn new(
        sockets: &mut SocketSet<'static>,
        port: u16,
        zone: Zone,
    ) -> Result<Self, udp::BindError> {
        let buffer =
            || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; SLOTS], vec![0; BYTES]);
        let mut socket = udp::Socket::new(buffer(), buffer());
        socket.bind(port)?;
        Ok(Resolver {
            handle: sockets.add(socket),
            zone,
            query: vec![0; BYTES],
            reply: Vec::with_capacity(512),
        })
    }

    /// Answers every datagram waiting in the socket.
    pub(super) fn serve(
        &mut self,
        sockets: &mut SocketSet<'static>,
        now: Instant,
        journal: &mut Journal,
        counters: &mut Counters,
    ) {
        let socket = sockets.get_mut::<udp::Socket>(self.handle);
        while socket.can_recv() {
            let Ok((len, meta)) = socket.recv_slice(&mut self.query) else {
                break;
            };
            let from =
                endpoint_v4(meta.endpoint).unwrap_or(SocketAddrV4::new([0, 0, 0, 0].into(), 0));
            let t = now.total_micros();
            match self.zone.answer(&self.query[..len], &mut self.reply) {
                Outcome::Reply(a) => {
                    counters.dns_answered += 1;
                    if let Err(e) = socket.send_slice(&self.reply, meta.endpoint) {
                        log::warn!("DNS answer to {from} not sent: {e}");
                    }
                    let what = What::Resolved {
                        from,
                        id: a.id,
                        name: a.name,
                        qtype: dns::type_name(a.qtype),
                        answer: a.answer,
                        rcode: a.rcode.name(),
                    };
                    journal.record(None, t, Stage::Resolve, what);
                }
                Outcome::Dropped(reason) => {
                    counters.dns_dropped += 1;
                    journal.record(
                        None,
                        t,
                        Stage::Resolve,
                        What::DnsDropped {
                            from,
                            bytes: len,
                            reason,
                        },
                    );
                }
            }
        }
    }
}
