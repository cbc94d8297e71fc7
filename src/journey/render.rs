//! Renderers: the journey as a readable timeline or as JSON lines.

use std::io::Write;

use super::{ConnRecord, Event, What};
use crate::observe::Direction;

/// One event as one JSON object on one line.
pub fn json_line(out: &mut dyn Write, event: &Event) {
    if serde_json::to_writer(&mut *out, event).is_ok() {
        let _ = out.write_all(b"\n");
    }
}

/// An event that belongs to no connection, on a line of its own.
pub fn server_line(out: &mut dyn Write, event: &Event) {
    let _ = writeln!(
        out,
        "server  {:<8} {}",
        event.stage.name(),
        describe(&event.what)
    );
}

/// A connection's whole journey, one event a line, times relative to its first event.
pub fn timeline(out: &mut dyn Write, rec: &ConnRecord) {
    let _ = write!(out, "{}", timeline_string(rec));
    let _ = out.flush();
}

pub fn timeline_string(rec: &ConnRecord) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let start = rec.events.first().map_or(rec.opened_us, |e| e.t_us);
    let end = rec.events.last().map_or(start, |e| e.t_us);
    let _ = writeln!(
        s,
        "connection #{}  {} -> {}  ({:.3} ms, {} request{}, {} B in, {} B out)",
        rec.id,
        rec.remote,
        rec.local,
        (end - start) as f64 / 1000.0,
        rec.requests,
        if rec.requests == 1 { "" } else { "s" },
        rec.bytes_in,
        rec.bytes_out
    );
    for e in &rec.events {
        let _ = writeln!(
            s,
            "  {:>+10.3} ms  {:<8} {}",
            (e.t_us - start) as f64 / 1000.0,
            e.stage.name(),
            describe(&e.what)
        );
    }
    if rec.events_dropped > 0 {
        let _ = writeln!(s, "  ... and {} more events not kept", rec.events_dropped);
    }
    s
}

fn sender(dir: Direction) -> &'static str {
    match dir {
        Direction::In => "the peer",
        Direction::Out => "us",
    }
}

/// One event in words.
pub fn describe(what: &What) -> String {
    match what {
        What::TlsEstablished {
            version,
            cipher,
            sni,
            alpn,
            handshake_us,
        } => format!(
            "TLS handshake done in {:.3} ms: {version}, {cipher}, SNI {}, ALPN {}",
            *handshake_us as f64 / 1000.0,
            sni.as_deref().unwrap_or("(none)"),
            alpn.as_deref().unwrap_or("(none)")
        ),
        What::Decrypted {
            record_bytes,
            plaintext_bytes,
        } => {
            format!("{record_bytes} B of TLS records opened into {plaintext_bytes} B of plaintext")
        }
        What::Encrypted {
            plaintext_bytes,
            record_bytes,
        } => {
            format!("{plaintext_bytes} B of plaintext sealed into {record_bytes} B of TLS records")
        }
        What::Resolved {
            from,
            id,
            name,
            qtype,
            answer,
            rcode,
        } => {
            let answer = answer.map_or_else(|| "no address".to_owned(), |a| a.to_string());
            format!("DNS query 0x{id:04x} from {from}: {qtype} {name} -> {answer} ({rcode})")
        }
        What::DnsDropped {
            from,
            bytes,
            reason,
        } => {
            format!("DNS datagram of {bytes} B from {from} dropped: {reason}")
        }
        What::Syn {
            remote,
            isn,
            window,
            options,
            queue_depth,
            backlog,
            ..
        } => {
            let mut t = format!("SYN from {remote}, ISN {isn}, window {window}");
            if let Some(m) = options.mss {
                t += &format!(", MSS {m}");
            }
            if let Some(w) = options.window_scale {
                t += &format!(", wscale {w}");
            }
            if options.sack_permitted {
                t += ", SACK-permitted";
            }
            t + &format!("; accept queue {queue_depth}/{backlog}")
        }
        What::SynDropped { remote, backlog } => {
            format!(
                "SYN from {remote} dropped: accept queue full ({backlog}/{backlog}); the client will retransmit"
            )
        }
        What::SynAck {
            isn,
            ack,
            window,
            options,
            ..
        } => {
            let mut t = format!("SYN-ACK sent, our ISN {isn}, ACK {ack}, window {window}");
            if let Some(m) = options.mss {
                t += &format!(", MSS {m}");
            }
            if let Some(w) = options.window_scale {
                t += &format!(", wscale {w}");
            }
            t
        }
        What::HandshakeAck { seq, ack } => format!("ACK of our SYN-ACK, seq {seq}, ACK {ack}"),
        What::Accepted {
            queue_depth,
            backlog,
            active,
        } => format!(
            "taken from the accept queue ({queue_depth}/{backlog} left), {active} active connection{}",
            if *active == 1 { "" } else { "s" }
        ),
        What::State { from, to } => format!("{from} -> {to}"),
        What::Received {
            bytes,
            rx_fill,
            rx_capacity,
            window,
        } => format!(
            "{bytes} B read from the receive buffer ({rx_fill}/{rx_capacity} B were queued), window now {window} B"
        ),
        What::Parsed {
            method,
            path,
            version,
            headers,
            head_bytes,
            body_bytes,
        } => format!(
            "{method} {path} {version}, {headers} header{}, head {head_bytes} B, body {body_bytes} B",
            if *headers == 1 { "" } else { "s" }
        ),
        What::Rejected { status, reason } => format!("rejected with {status}: {reason}"),
        What::Decoded {
            content_type,
            bytes,
            ok,
            detail,
        } => format!(
            "{content_type}, {bytes} B, {}: {detail}",
            if *ok { "decoded" } else { "invalid" }
        ),
        What::Processed { route, duration_us } => format!("route {route}, {duration_us} us"),
        What::Responded {
            status,
            length,
            streamed,
            keep_alive,
        } => format!(
            "{status}, {length} B body{}, {}",
            if *streamed { " (streamed)" } else { "" },
            if *keep_alive {
                "keep-alive"
            } else {
                "then close"
            }
        ),
        What::Sent {
            bytes,
            tx_fill,
            tx_capacity,
        } => {
            format!("{bytes} B queued for sending, send buffer {tx_fill}/{tx_capacity} B")
        }
        What::Fin { dir, seq, ack } => format!("FIN from {}, seq {seq}, ACK {ack}", sender(*dir)),
        What::FinAcked {
            dir: Direction::In,
            ack,
        } => format!("the peer ACKed our FIN, ACK {ack}"),
        What::FinAcked {
            dir: Direction::Out,
            ack,
        } => format!("we ACKed the peer's FIN, ACK {ack}"),
        What::Rst { dir, seq } => format!("RST from {}, seq {seq}", sender(*dir)),
        What::FinTimeout { state, secs } => {
            format!("still {state} {secs} s after our FIN: reset (as Linux's tcp_fin_timeout)")
        }
        What::TimeWaitCut { limit } => format!(
            "TIME-WAIT cut short: more than {limit} sockets in TIME-WAIT (--max-time-wait), as Linux does past tcp_max_tw_buckets"
        ),
        What::Closed {
            bytes_in,
            bytes_out,
            requests,
            duration_us,
        } => format!(
            "socket closed and reclaimed after {:.3} ms: {requests} request{}, {bytes_in} B in, {bytes_out} B out",
            *duration_us as f64 / 1000.0,
            if *requests == 1 { "" } else { "s" }
        ),
    }
}
