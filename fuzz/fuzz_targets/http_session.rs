//! The server's session (src/session/server.rs) fed raw bytes through the `Conversation`
//! trait as the node feeds it, with time passing and the peer closing, on plain HTTP.
//! What must hold: everything the server writes parses as HTTP/1.1 responses with synack's
//! own response decoder, one per request (HEAD ones without a body); the session never
//! has output that it will not give, nor a deadline it does not clear; every request it
//! owes an answer gets one; a peer that closed is let go.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use smoltcp::time::Duration;
use synack_fuzz::session::{REQUESTS, Setup, Watched};

#[derive(Arbitrary, Debug)]
enum Step {
    Bytes(Vec<u8>),
    Request(u8),
    WaitMs(u16),
    WaitSecs(u8),
    PeerClosed,
    /// The size of the send buffer's free space when the node asks for output.
    Piece(u16),
}

#[derive(Arbitrary, Debug)]
struct Input {
    setup: Setup,
    steps: Vec<Step>,
}

fuzz_target!(|input: Input| {
    let mut w = Watched::new(&input.setup, None);
    let mut pending: Vec<u8> = Vec::new();
    let mut piece = 1460;
    let mut out = Vec::new();
    let mut step = |w: &mut Watched, pending: &mut Vec<u8>, piece: usize| {
        for _ in 0..64 {
            let n = w.input(pending);
            let taken: Vec<u8> = pending.drain(..n).collect();
            w.mirror(&taken);
            out.clear();
            w.run(piece, &mut out);
            w.responses(&out);
            if n == 0 && out.is_empty() {
                break;
            }
        }
    };
    for s in input.steps.iter().take(128) {
        match s {
            Step::Bytes(b) => pending.extend_from_slice(b),
            Step::Request(i) => {
                pending.extend_from_slice(REQUESTS[usize::from(*i) % REQUESTS.len()])
            }
            Step::WaitMs(ms) => w.wait(Duration::from_millis(u64::from(*ms))),
            Step::WaitSecs(s) => w.wait(Duration::from_secs(u64::from(*s))),
            Step::PeerClosed => {
                // The FIN comes after every byte before it.
                step(&mut w, &mut pending, piece);
                if pending.is_empty() {
                    w.peer_closed();
                }
            }
            Step::Piece(p) => piece = usize::from(*p).max(1),
        }
        step(&mut w, &mut pending, piece);
        if w.saturated {
            return;
        }
    }
    step(&mut w, &mut pending, piece);
    w.settled();
});
