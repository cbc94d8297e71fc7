//! One connection's turn: bytes from the socket to its session, responses back into the
//! send buffer, and our FIN once the session is done.

use smoltcp::socket::tcp;
use smoltcp::time::Instant;

use crate::app::App;
use crate::journey::{Journal, Stage, What};
use crate::session::Conversation;

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Drive {
    Ok,
    Aborted,
}

/// Moves bytes between one socket and its session: request bytes in, response bytes out,
/// and our FIN once the session is done.
pub(super) fn drive(
    sock: &mut tcp::Socket<'_>,
    session: &mut dyn Conversation,
    now: Instant,
    app: &App,
    journal: &mut Journal,
    read: &mut u64,
) -> Drive {
    // A connection we opened has its conversation from the start; it speaks once the
    // handshake is done (before that, may_recv() would read as the peer's FIN).
    if sock.state() == tcp::State::SynSent {
        return Drive::Ok;
    }
    let id = session.id();
    let t = now.total_micros();
    // Receive: copy out what the session has room for; the rest waits in the socket
    // and the advertised window shrinks until the session catches up.
    while sock.can_recv() && session.room() > 0 {
        let queued = sock.recv_queue();
        let Ok(n) = sock.recv(|buf| {
            let n = session.input(buf, now);
            (n, n)
        }) else {
            break;
        };
        if n == 0 {
            break;
        }
        *read += n as u64;
        let rx_capacity = sock.recv_capacity();
        let window = rx_capacity - sock.recv_queue();
        journal.record(
            Some(id),
            t,
            Stage::Receive,
            What::Received {
                bytes: n,
                rx_fill: queued,
                rx_capacity,
                window,
            },
        );
        if let Some(rec) = journal.get_mut(id) {
            rec.bytes_in += n as u64;
        }
    }
    if !sock.may_recv() && sock.recv_queue() == 0 {
        session.peer_closed();
    }
    session.process(now, app, journal);
    // Send: fill the send buffer straight from the response, answering pipelined
    // requests one after another while there is room.
    while session.has_output() && sock.can_send() {
        let mut failed = false;
        let sent = sock.send(|buf| match session.output(buf, now) {
            Ok(n) => (n, n),
            Err(_) => {
                failed = true;
                (0, 0)
            }
        });
        if failed {
            log::warn!("connection #{id}: a streamed body failed mid-way; aborting the connection");
            sock.abort();
            return Drive::Aborted;
        }
        let n = sent.unwrap_or(0);
        if let Some(rec) = journal.get_mut(id) {
            rec.bytes_out += n as u64;
        }
        if let Some(done) = session.take_finished() {
            if let Some((plaintext_bytes, record_bytes)) = session.take_encrypted() {
                let what = What::Encrypted {
                    plaintext_bytes,
                    record_bytes,
                };
                journal.record(Some(id), t, Stage::Encrypt, what);
            }
            journal.record(
                Some(id),
                t,
                Stage::Send,
                What::Sent {
                    bytes: done.wire_bytes,
                    tx_fill: sock.send_queue(),
                    tx_capacity: sock.send_capacity(),
                },
            );
            session.process(now, app, journal);
        } else if n == 0 {
            break;
        }
    }
    if session.wants_close() && sock.may_send() {
        // RFC 9112 §9.6: the server initiates the close after the final response.
        sock.close();
    }
    Drive::Ok
}
