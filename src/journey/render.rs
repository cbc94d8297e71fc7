//! Renderers: the journey as a readable timeline or as JSON lines.

use std::io::Write;

use super::{ConnRecord, Event, Kept, What};
use crate::observe::{Direction, SynOptions};

/// One event as one JSON object on one line.
pub fn json_line(out: &mut dyn Write, event: &Event) {
    if serde_json::to_writer(&mut *out, event).is_ok() {
        let _ = out.write_all(b"\n");
    }
}

/// An event that belongs to no connection, on a line of its own, said by `side`.
pub fn loose_line(out: &mut dyn Write, side: &str, event: &Event) {
    let _ = writeln!(
        out,
        "{side:<7} {:<8} {}",
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
    // Client first, as the SYN went.
    let (from, to) = if rec.active {
        (rec.local, rec.remote)
    } else {
        (rec.remote, rec.local)
    };
    let _ = writeln!(
        s,
        "connection #{}  {from} -> {to}  ({:.3} ms, {} request{}, {} B in, {} B out)",
        rec.id,
        (end - start) as f64 / 1000.0,
        rec.requests,
        if rec.requests == 1 { "" } else { "s" },
        rec.bytes_in,
        rec.bytes_out
    );
    for (e, text) in readable(rec.events.iter()) {
        let _ = writeln!(
            s,
            "  {:>+10.3} ms  {:<8} {}",
            (e.t_us - start) as f64 / 1000.0,
            e.stage.name(),
            text
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

/// A SYN's options as the timeline shows them: ", MSS 1460, wscale 7, SACK-permitted".
fn syn_options(options: &SynOptions) -> String {
    let mut t = String::new();
    if let Some(m) = options.mss {
        t += &format!(", MSS {m}");
    }
    if let Some(w) = options.window_scale {
        t += &format!(", wscale {w}");
    }
    if options.sack_permitted {
        t += ", SACK-permitted";
    }
    t
}

/// Whether a timeline shows this event: a segment that left as new data or a plain ACK,
/// without having waited, is in the capture and the JSON journey, not in the timeline.
fn shown(what: &What) -> bool {
    match what {
        What::Segment { why, waited_us, .. } => {
            waited_us.is_some() || !(why == "new data" || why == "ACK")
        }
        _ => true,
    }
}

/// The events a text timeline shows, in words: runs of reads from the receive buffer
/// (one per segment on a download) fold into one line.
pub fn readable<'a>(events: impl Iterator<Item = &'a Event>) -> Vec<(&'a Event, String)> {
    let mut out: Vec<(&Event, String)> = Vec::new();
    let mut run: Option<(&Event, usize, u64, i64)> = None;
    let flush = |run: &mut Option<(&'a Event, usize, u64, i64)>,
                 out: &mut Vec<(&'a Event, String)>| {
        if let Some((first, n, bytes, last)) = run.take() {
            if n == 1 {
                out.push((first, describe(&first.what)));
            } else {
                out.push((
                    first,
                    format!(
                        "{n} reads from the receive buffer, {bytes} B in all, over {:.3} ms",
                        (last - first.t_us) as f64 / 1000.0
                    ),
                ));
            }
        }
    };
    for e in events.filter(|e| shown(&e.what)) {
        if let What::Received { bytes, .. } = e.what {
            match run.as_mut() {
                Some((first, n, total, last)) if first.conn == e.conn => {
                    *n += 1;
                    *total += bytes as u64;
                    *last = e.t_us;
                }
                _ => {
                    flush(&mut run, &mut out);
                    run = Some((e, 1, bytes as u64, e.t_us));
                }
            }
            continue;
        }
        flush(&mut run, &mut out);
        out.push((e, describe(&e.what)));
    }
    flush(&mut run, &mut out);
    out
}

/// One event in words.
pub fn describe(what: &What) -> String {
    match what {
        What::Lookup { name, server } => format!("DNS query: A {name}? to {server}"),
        What::LookedUp {
            name,
            addresses,
            error,
            duration_us,
        } => match error {
            Some(e) => format!("{name} did not resolve: {e}"),
            None => format!(
                "{name} is {} ({:.3} ms)",
                addresses
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                *duration_us as f64 / 1000.0
            ),
        },
        What::SynSent {
            local,
            remote,
            isn,
            window,
            options,
        } => format!(
            "SYN sent from {local} to {remote}, our ISN {isn}, window {window}{}",
            syn_options(options)
        ),
        What::SynAckReceived {
            isn,
            ack,
            window,
            options,
        } => format!(
            "SYN-ACK from the server, its ISN {isn}, ACK {ack}, window {window}{}",
            syn_options(options)
        ),
        What::AckSent { seq, ack } => format!("our ACK of the SYN-ACK, seq {seq}, ACK {ack}"),
        What::Requested {
            method,
            target,
            head_bytes,
            body_bytes,
        } => format!("request {method} {target}: {head_bytes} B head, {body_bytes} B body"),
        What::ResponseHead {
            status,
            reason,
            version,
            headers,
            head_bytes,
        } => {
            format!("response {version} {status} {reason}: {headers} headers, {head_bytes} B head")
        }
        What::ResponseDone {
            status,
            body_bytes,
            duration_us,
        } => format!(
            "response {status} complete: {body_bytes} B body, {:.3} ms after the request",
            *duration_us as f64 / 1000.0
        ),
        What::Failed { reason } => format!("failed: {reason}"),
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
            ..
        } => {
            format!(
                "SYN from {remote}, ISN {isn}, window {window}{}",
                syn_options(options)
            )
        }
        What::SynCookieSent {
            remote,
            cookie,
            mss,
        } => format!(
            "SYN from {remote}: the SYN queue is full, answered with a SYN cookie ({cookie}, MSS {mss}); nothing kept"
        ),
        What::CookieValidated {
            remote,
            mss,
            window_scale,
            sack_permitted,
        } => format!(
            "the ACK from {remote} returns a valid SYN cookie: rebuilt with MSS {mss}{}{}",
            window_scale.map_or(String::new(), |w| format!(", wscale {w}")),
            if *sack_permitted {
                ", SACK-permitted"
            } else {
                ""
            }
        ),
        What::ChallengeAck { reason, sent } => {
            if *sent {
                format!("{reason}: answered with a challenge ACK")
            } else {
                format!("{reason}: dropped (challenge ACKs at their rate limit)")
            }
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
            format!(
                "SYN-ACK sent, our ISN {isn}, ACK {ack}, window {window}{}",
                syn_options(options)
            )
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
        What::Segment {
            why,
            seq,
            len,
            in_flight,
            peer_window,
            rtt,
            waited_us,
            held_by,
            ..
        } => {
            let mut t = format!(
                "segment seq {seq}, {len} B: {why}; {in_flight} B in flight, peer window {peer_window} B"
            );
            if let Some(r) = rtt {
                t += &format!(
                    "; RTT sample {} ms, SRTT {} ms, RTTVAR {} ms, RTO {} ms",
                    r.sample_ms, r.srtt_ms, r.rttvar_ms, r.rto_ms
                );
            }
            if let Some(w) = waited_us {
                let why = match held_by.unwrap_or("") {
                    "nagle" => ": Nagle held it for the ACK of data in flight",
                    "peer_window" => ": the peer's window was full",
                    "congestion_window" => {
                        ": the congestion window (smoltcp does not say its size)"
                    }
                    "retransmission_timer" => ": lost data waited for the retransmission timer",
                    _ => "",
                };
                t += &format!("; it waited {:.1} ms{why}", *w as f64 / 1000.0);
            }
            t
        }
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
        What::SendTimeout { state, secs } => format!(
            "{state}: the peer took none of our data for {secs} s: reset (as nginx's send_timeout)"
        ),
        What::TooManyClosing { limit } => format!(
            "closed while {limit} closing connections wait already: reset (as Linux past tcp_max_orphans)"
        ),
        What::TimeWaitSkipped { limit } => format!(
            "no TIME-WAIT: {limit} entries in use (--max-time-wait), as Linux past tcp_max_tw_buckets"
        ),
        What::TimeWaitFinAgain { restarted_secs } => format!(
            "TIME-WAIT: the peer's FIN came again; ACKed again, {restarted_secs} s from now"
        ),
        What::TimeWaitEnded { why, after_ms } => {
            let why = match *why {
                "expired" => "over",
                "reset" => "ended by a RST",
                "new_syn" => "ended by a new SYN (a new connection on the same ports)",
                _ => "ended (stopping)",
            };
            format!("TIME-WAIT {why} after {:.3} s", *after_ms as f64 / 1000.0)
        }
        What::Closed {
            bytes_in,
            bytes_out,
            requests,
            duration_us,
            rx_buf,
            tx_buf,
            peak_rx,
            peak_tx,
            freed_bytes,
            time_wait_secs,
            ..
        } => format!(
            "socket {} after {:.3} ms: {requests} request{}, {bytes_in} B in, {bytes_out} B out; buffers {} + {} KiB (at most {peak_rx} B and {peak_tx} B in them), {} KiB resident given back{}",
            if time_wait_secs.is_some() {
                "released"
            } else {
                "closed and released"
            },
            *duration_us as f64 / 1000.0,
            if *requests == 1 { "" } else { "s" },
            rx_buf / 1024,
            tx_buf / 1024,
            freed_bytes / 1024,
            time_wait_secs.map_or(String::new(), |s| format!(
                "; TIME-WAIT goes on as a small entry for {s} s"
            ))
        ),
    }
}

/// Narrowest and widest column [`side_by_side`] makes.
const MIN_COLUMN: usize = 30;
const MAX_COLUMN: usize = 80;

/// Two ends' journeys in one timeline: `left` on the left, `right` on the right, each
/// event on the line of its time (relative to the first event of either), in `width`
/// characters (the terminal's).
pub fn side_by_side(left: (&str, &Kept), right: (&str, &Kept), width: usize) -> String {
    use std::fmt::Write;
    let column = (width.saturating_sub(16) / 2).clamp(MIN_COLUMN, MAX_COLUMN);
    let mut rows: Vec<(i64, usize, usize, &Event, String)> = Vec::new();
    for (side, kept) in [left.1, right.1].into_iter().enumerate() {
        rows.extend(
            readable(kept.events())
                .into_iter()
                .enumerate()
                .map(|(i, (e, text))| (e.t_us, side, i, e, text)),
        );
    }
    rows.sort_by_key(|r| (r.0, r.1, r.2));
    let start = rows.first().map_or(0, |r| r.0);
    let mut s = String::new();
    let _ = writeln!(s, "{:>10}   {:<column$} | {}", "ms", left.0, right.0);
    let _ = writeln!(s, "{:>10}   {:-<column$} | {:-<column$}", "", "", "");
    for (t, side, _, e, text) in rows {
        let conn = e.conn.map(|c| format!("#{c} ")).unwrap_or_default();
        let text = format!("{conn}{:<8} {text}", e.stage.name());
        for (n, line) in wrap(&text, column).iter().enumerate() {
            let time = if n == 0 {
                format!("{:+10.3}", (t - start) as f64 / 1000.0)
            } else {
                String::new()
            };
            let _ = if side == 0 {
                writeln!(s, "{time:>10}   {line:<column$} |")
            } else {
                writeln!(s, "{time:>10}   {:<column$} | {line}", "")
            };
        }
    }
    s
}

/// Splits `text` into lines of at most `width` characters, at spaces where it can.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
            line.push_str("  ");
        }
        if !line.is_empty() && !line.ends_with("  ") {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    lines
}
