//! The server's session on the HTTPS port: a real TLS client (rustls) speaks to
//! it, the input says what the client writes, how its records are cut on the way, and
//! what breaks them (a flipped byte, bytes that are not TLS, close_notify, the peer's FIN).
//! What must hold, as for plain HTTP: no panic, no stall, no deadline left due; what the
//! client decrypts parses as HTTP/1.1 responses, one per request; with nothing broken on
//! the way every request gets its answer.

#![no_main]

use std::io::{Read, Write};

use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use smoltcp::time::Duration;
use synack::session::Conversation;
use synack_fuzz::session::{REQUESTS, Setup, Watched};

#[derive(Arbitrary, Debug)]
enum Step {
    Write(Vec<u8>),
    Request(u8),
    /// Records on the way to the server are cut in pieces of this size.
    Piece(u16),
    Corrupt {
        at: u16,
        xor: u8,
    },
    Garbage(Vec<u8>),
    CloseNotify,
    PeerClosed,
    WaitMs(u16),
    WaitSecs(u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    setup: Setup,
    steps: Vec<Step>,
}

fn identity() -> &'static synack::tls::Identity {
    static ID: OnceLock<synack::tls::Identity> = OnceLock::new();
    ID.get_or_init(|| {
        synack::tls::seeded::identity(
            1,
            &["synack.test".into()],
            std::net::Ipv4Addr::new(10, 77, 0, 2),
        )
        .expect("an identity")
    })
}

struct Run {
    w: Watched,
    client: rustls::ClientConnection,
    client_ok: bool,
    to_server: Vec<u8>,
    piece: usize,
    broken: bool,
}

impl Run {
    /// The client writes what its buffer takes; the mirror learns exactly that.
    fn write(&mut self, bytes: &[u8]) {
        let n = self.client.writer().write(bytes).unwrap_or(0);
        self.w.mirror(&bytes[..n]);
    }

    /// Moves bytes both ways until nothing moves.
    fn pump(&mut self) {
        let mut out = Vec::new();
        for _ in 0..64 {
            let mut moved = false;
            if self.client_ok {
                while self.client.wants_write() {
                    let _ = self.client.write_tls(&mut self.to_server);
                }
            }
            while !self.to_server.is_empty() {
                let n = self.piece.min(self.to_server.len());
                let taken = self.w.input(&self.to_server[..n]);
                self.to_server.drain(..taken);
                moved |= taken > 0;
                if taken < n {
                    break;
                }
            }
            out.clear();
            self.w.run(1460, &mut out);
            moved |= !out.is_empty();
            if self.client_ok && !out.is_empty() {
                let mut slice = &out[..];
                while !slice.is_empty() && self.client_ok {
                    match self.client.read_tls(&mut slice) {
                        Ok(0) => break,
                        Ok(_) => {
                            if let Err(e) = self.client.process_new_packets() {
                                assert!(self.broken, "the client refused the server's TLS: {e}");
                                self.client_ok = false;
                            }
                        }
                        Err(_) => self.client_ok = false,
                    }
                }
                let mut plain = Vec::new();
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = self.client.reader().read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    plain.extend_from_slice(&buf[..n]);
                }
                self.w.responses(&plain);
            }
            if !moved || self.w.saturated {
                break;
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let server = synack::tls::server_config_with(identity(), None, synack_fuzz::crypto())
        .expect("a server configuration");
    let client_config =
        synack::tls::client_config(synack::tls::Trust::Anyone, None, synack_fuzz::crypto())
            .expect("a client configuration");
    let name = rustls::pki_types::ServerName::try_from("synack.test").expect("a name");
    let client = rustls::ClientConnection::new(Arc::clone(&client_config), name).expect("a client");
    let mut run = Run {
        w: Watched::new(&input.setup, Some(server)),
        client,
        client_ok: true,
        to_server: Vec::new(),
        piece: 16 * 1024,
        broken: false,
    };
    for s in input.steps.iter().take(64) {
        match s {
            Step::Write(b) => run.write(b),
            Step::Request(i) => run.write(REQUESTS[usize::from(*i) % REQUESTS.len()]),
            Step::Piece(p) => run.piece = usize::from(*p).max(1),
            Step::Corrupt { at, xor } => {
                if !run.to_server.is_empty() && *xor != 0 {
                    let i = usize::from(*at) % run.to_server.len();
                    run.to_server[i] ^= xor;
                    run.broken = true;
                }
            }
            Step::Garbage(b) => {
                run.to_server.extend_from_slice(b);
                run.broken |= !b.is_empty();
            }
            Step::CloseNotify => {
                run.client.send_close_notify();
                run.broken = true;
            }
            Step::PeerClosed => {
                run.pump();
                if run.to_server.is_empty() {
                    run.w.peer_closed();
                    run.broken = true;
                }
            }
            Step::WaitMs(ms) => {
                let d = Duration::from_millis(u64::from(*ms));
                // A timeout before the handshake is done closes the connection with an
                // answer the client never decrypts.
                run.broken |= run.w.session.deadline().is_some_and(|t| t <= run.w.now + d);
                run.w.wait(d);
            }
            Step::WaitSecs(s) => {
                run.w.wait(Duration::from_secs(u64::from(*s)));
                run.broken = true;
            }
        }
        run.pump();
        if run.w.saturated {
            return;
        }
    }
    run.pump();
    if !run.broken && run.client_ok {
        run.w.settled();
    }
});
