//! The HTTP/1.1 request decoder (src/http/decode.rs) on any bytes, under small and
//! default limits. What must hold:
//! - the answer does not depend on how the bytes were cut into reads: the requests and
//!   the final error are the same whole and in pieces (TCP may segment a request
//!   anywhere);
//! - every limit holds on what comes out (head size, header count, body size);
//! - the decoder never stalls: when it needs more, it has room to take more.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use synack::http::{Decoded, Limits, RequestDecoder};

#[derive(Arbitrary, Debug)]
struct Input {
    small_limits: bool,
    max_head: u8,
    max_headers: u8,
    max_body: u8,
    /// Where to cut the bytes into reads (lengths of the pieces).
    cuts: Vec<u8>,
    data: Vec<u8>,
}

/// What a request came out as, to compare.
#[derive(Debug, PartialEq, Eq)]
enum Out {
    Request {
        method: String,
        target: String,
        version: &'static str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        head_bytes: usize,
    },
    Error(u16),
}

fn check_limits(d: &Decoded, limits: &Limits) {
    if let Decoded::Request(r) = d {
        assert!(
            r.head_bytes <= limits.max_head,
            "a head of {} bytes",
            r.head_bytes
        );
        assert!(
            r.headers.len() <= limits.max_headers,
            "{} headers",
            r.headers.len()
        );
        assert!(
            r.body.len() <= limits.max_body,
            "a body of {} bytes",
            r.body.len()
        );
        assert!(!r.method.is_empty(), "a request without a method");
    }
}

fn decode(limits: Limits, pieces: &[&[u8]]) -> Vec<Out> {
    let mut d = RequestDecoder::new(limits);
    let mut out = Vec::new();
    for piece in pieces {
        let mut rest = *piece;
        loop {
            let n = d.input(rest);
            rest = &rest[n..];
            loop {
                let got = d.decode();
                check_limits(&got, &limits);
                match got {
                    Decoded::Request(r) => out.push(Out::Request {
                        method: r.method,
                        target: r.target,
                        version: r.version.as_str(),
                        headers: r.headers,
                        body: r.body,
                        head_bytes: r.head_bytes,
                    }),
                    Decoded::Continue => {}
                    Decoded::NeedMore => {
                        assert!(d.room() > 0, "the decoder needs more but takes nothing");
                        break;
                    }
                    Decoded::Error(e) => {
                        assert!((400..600).contains(&e.status), "status {}", e.status);
                        out.push(Out::Error(e.status));
                        return out;
                    }
                }
            }
            if rest.is_empty() {
                break;
            }
        }
    }
    out
}

fuzz_target!(|input: Input| {
    let limits = if input.small_limits {
        Limits {
            max_head: 16 + usize::from(input.max_head) * 4,
            max_headers: usize::from(input.max_headers % 8),
            max_body: usize::from(input.max_body) * 16,
        }
    } else {
        Limits::default()
    };
    let whole = decode(limits, &[&input.data]);
    let mut pieces = Vec::new();
    let mut rest = &input.data[..];
    for &c in &input.cuts {
        let n = usize::from(c).min(rest.len());
        pieces.push(&rest[..n]);
        rest = &rest[n..];
    }
    pieces.push(rest);
    let cut = decode(limits, &pieces);
    assert_eq!(
        whole,
        cut,
        "the same bytes cut into {} pieces",
        pieces.len()
    );
    // Byte by byte, the hardest cut of all.
    if input.data.len() <= 512 {
        let bytes: Vec<&[u8]> = input.data.chunks(1).collect();
        assert_eq!(
            whole,
            decode(limits, &bytes),
            "the same bytes one at a time"
        );
    }
});
