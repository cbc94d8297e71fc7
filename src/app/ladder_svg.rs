//! The `/journey` page's ladder diagram: one connection's journey events drawn as inline
//! SVG, the client's column on the left, the server's on the right, one arrow per
//! segment or message that crossed between them (SYN, SYN-ACK, ACK, requests, responses,
//! FIN, ACK, RST), its label above it, its time on the left, our side's TCP state on the
//! right. It draws from the journey alone, never from the capture (`synack ladder` reads
//! captures; this page has none).

use std::fmt::Write as _;

use crate::http::reason_phrase;
use crate::journey::{ConnRecord, What};
use crate::observe::{Direction, SynOptions};

use super::journey_page::escape;

/// Where things go, in pixels.
const WIDTH: u32 = 900;
/// The times' right edge.
const TIME_X: u32 = 78;
const CLIENT_X: u32 = 130;
const SERVER_X: u32 = 570;
/// Our side's TCP state, right of the server's column.
const NOTE_X: u32 = 625;
const TOP: u32 = 74;
const ROW: u32 = 34;
/// How far an arrow falls while it crosses: the diagram's hint that travel takes time.
const FALL: u32 = 10;
/// The longest label, in characters: what fits between the columns in 12 px monospace.
const MAX_LABEL: usize = 58;

const HANDSHAKE: &str = "#0969da";
const REQUEST: &str = "#1a7f37";
const RESPONSE: &str = "#8250df";
const CLOSE: &str = "#57606a";
const ERROR: &str = "#cf222e";

/// One line of the diagram.
enum Mark {
    Arrow {
        rightwards: bool,
        label: String,
        colour: &'static str,
        dashed: bool,
    },
    /// Something both sides did together (the TLS handshake): a band across both columns.
    Band { label: String },
}

struct Row {
    t_us: i64,
    mark: Mark,
    /// Our side's state changes that came with it.
    note: String,
}

/// The ladder of `rec` as an `<svg>` element, every text from the record escaped.
pub fn ladder(rec: &ConnRecord) -> String {
    let rows = rows(rec);
    let start = rec.events.first().map_or(rec.opened_us, |e| e.t_us);
    let height = TOP + ROW * rows.len() as u32 + 16;
    let (client, server) = if rec.active {
        (rec.local, rec.remote)
    } else {
        (rec.remote, rec.local)
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="ladder diagram of connection {id}" font-family="ui-monospace, Menlo, Consolas, monospace" font-size="12">
<text x="{TIME_X}" y="24" text-anchor="end" fill="#57606a">ms</text>
<text x="{CLIENT_X}" y="24" text-anchor="middle" font-weight="bold">client</text>
<text x="{CLIENT_X}" y="40" text-anchor="middle" fill="#57606a">{client}</text>
<text x="{SERVER_X}" y="24" text-anchor="middle" font-weight="bold">server</text>
<text x="{SERVER_X}" y="40" text-anchor="middle" fill="#57606a">{server}</text>
<text x="{NOTE_X}" y="24" fill="#57606a">{side}'s TCP state</text>
<line x1="{CLIENT_X}" y1="50" x2="{CLIENT_X}" y2="{bottom}" stroke="#8c959f" stroke-width="2"/>
<line x1="{SERVER_X}" y1="50" x2="{SERVER_X}" y2="{bottom}" stroke="#8c959f" stroke-width="2"/>
"##,
        id = rec.id,
        side = if rec.active { "client" } else { "server" },
        bottom = height - 8,
    );
    for (i, row) in rows.iter().enumerate() {
        let y = TOP + ROW * i as u32;
        let ms = (row.t_us - start) as f64 / 1000.0;
        let _ = writeln!(
            s,
            r##"<text x="{TIME_X}" y="{}" text-anchor="end" fill="#57606a">{ms:.3}</text>"##,
            y + 4
        );
        match &row.mark {
            Mark::Arrow {
                rightwards,
                label,
                colour,
                dashed,
            } => arrow(&mut s, y, *rightwards, label, colour, *dashed),
            Mark::Band { label } => {
                let _ = writeln!(
                    s,
                    r##"<rect x="{CLIENT_X}" y="{}" width="{}" height="22" fill="#fff8c5" stroke="#d4a72c"/><text x="{}" y="{}" text-anchor="middle" fill="#6e5700">{}</text>"##,
                    y - 11,
                    SERVER_X - CLIENT_X,
                    (CLIENT_X + SERVER_X) / 2,
                    y + 4,
                    escape(&shorten(label))
                );
            }
        }
        if !row.note.is_empty() {
            let _ = writeln!(
                s,
                r##"<text x="{NOTE_X}" y="{}" fill="#57606a">{}</text>"##,
                y + 8,
                escape(&row.note)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// An arrow from one column to the other, falling [`FALL`] as it goes, its head drawn as
/// a triangle (no markers: nothing to share between SVGs on a page), its label above.
fn arrow(s: &mut String, y: u32, rightwards: bool, label: &str, colour: &str, dashed: bool) {
    let (x1, x2) = if rightwards {
        (CLIENT_X, SERVER_X)
    } else {
        (SERVER_X, CLIENT_X)
    };
    let (y1, y2) = (y, y + FALL);
    // The head: 9 px back along the shaft, 4 px either side of it.
    let (dx, dy) = (x2 as f64 - x1 as f64, (y2 - y1) as f64);
    let len = (dx * dx + dy * dy).sqrt();
    let (ux, uy) = (dx / len, dy / len);
    let (bx, by) = (x2 as f64 - 9.0 * ux, y2 as f64 - 9.0 * uy);
    let dash = if dashed {
        r#" stroke-dasharray="6 4""#
    } else {
        ""
    };
    let _ = writeln!(
        s,
        r##"<line x1="{x1}" y1="{y1}" x2="{bx:.1}" y2="{by:.1}" stroke="{colour}" stroke-width="1.6"{dash}/><polygon points="{x2},{y2} {:.1},{:.1} {:.1},{:.1}" fill="{colour}"/><text x="{}" y="{}" text-anchor="middle" fill="{colour}">{}</text>"##,
        bx - 4.0 * uy,
        by + 4.0 * ux,
        bx + 4.0 * uy,
        by - 4.0 * ux,
        (CLIENT_X + SERVER_X) / 2,
        y - 3,
        escape(&shorten(label))
    );
}

/// At most [`MAX_LABEL`] characters, the cut marked.
fn shorten(label: &str) -> String {
    if label.chars().count() <= MAX_LABEL {
        return label.to_owned();
    }
    let cut = label
        .char_indices()
        .nth(MAX_LABEL - 1)
        .map_or(label.len(), |(at, _)| at);
    format!("{}…", &label[..cut])
}

/// The SYN options as the capture ladders write them.
fn options(o: &SynOptions) -> String {
    let mut t = String::new();
    if let Some(m) = o.mss {
        let _ = write!(t, " mss={m}");
    }
    if let Some(w) = o.window_scale {
        let _ = write!(t, " ws={w}");
    }
    if o.sack_permitted {
        t.push_str(" sack");
    }
    t
}

/// The diagram's rows, from the events that crossed between the two sides. Sequence and
/// acknowledgment numbers are relative to each side's ISN, as Wireshark shows them.
fn rows(rec: &ConnRecord) -> Vec<Row> {
    // The client's ISN numbers what goes rightwards, the server's what goes leftwards.
    let (client_isn, server_isn) = (
        rec.handshake.client_isn.unwrap_or(0),
        rec.handshake.server_isn.unwrap_or(0),
    );
    let rel = |rightwards: bool, seq: u32, ack: u32| {
        if rightwards {
            (seq.wrapping_sub(client_isn), ack.wrapping_sub(server_isn))
        } else {
            (seq.wrapping_sub(server_isn), ack.wrapping_sub(client_isn))
        }
    };
    // A packet from the peer goes rightwards when the peer is the client.
    let rightwards = |dir: Direction| (dir == Direction::In) != rec.active;
    let (from_peer, from_us) = (rightwards(Direction::In), rightwards(Direction::Out));
    let mut rows: Vec<Row> = Vec::new();
    let mut answered = true;
    for e in &rec.events {
        let arrow = |rightwards: bool, label: String, colour: &'static str| Mark::Arrow {
            rightwards,
            label,
            colour,
            dashed: false,
        };
        let mark = match &e.what {
            What::Syn {
                window, options: o, ..
            } => arrow(
                from_peer,
                format!("SYN seq=0 win={window}{}", options(o)),
                HANDSHAKE,
            ),
            What::SynSent {
                window, options: o, ..
            } => arrow(
                from_us,
                format!("SYN seq=0 win={window}{}", options(o)),
                HANDSHAKE,
            ),
            What::SynAck {
                window, options: o, ..
            } => arrow(
                from_us,
                format!("SYN-ACK seq=0 ack=1 win={window}{}", options(o)),
                HANDSHAKE,
            ),
            What::SynAckReceived {
                window, options: o, ..
            } => arrow(
                from_peer,
                format!("SYN-ACK seq=0 ack=1 win={window}{}", options(o)),
                HANDSHAKE,
            ),
            What::HandshakeAck { seq, ack } | What::AckSent { seq, ack } => {
                let to = if matches!(e.what, What::HandshakeAck { .. }) {
                    from_peer
                } else {
                    from_us
                };
                let (seq, ack) = rel(to, *seq, *ack);
                arrow(to, format!("ACK seq={seq} ack={ack}"), HANDSHAKE)
            }
            What::CookieValidated { mss, .. } => arrow(
                from_peer,
                format!("ACK with a valid SYN cookie, mss={mss}"),
                HANDSHAKE,
            ),
            // RFC 5961 §3.2, §4.2: a RST or SYN not trusted, answered with an ACK.
            What::ChallengeAck { reason, sent: true } => {
                arrow(from_us, format!("challenge ACK: {reason}"), ERROR)
            }
            What::TlsEstablished {
                version,
                cipher,
                alpn,
                handshake_us,
                ..
            } => Mark::Band {
                label: format!(
                    "TLS handshake {:.3} ms: {version} {cipher}{}",
                    *handshake_us as f64 / 1000.0,
                    alpn.as_deref()
                        .map(|a| format!(" ALPN {a}"))
                        .unwrap_or_default()
                ),
            },
            What::Parsed {
                method,
                path,
                version,
                ..
            } => {
                answered = false;
                arrow(from_peer, format!("{method} {path} {version}"), REQUEST)
            }
            What::Requested { method, target, .. } => {
                arrow(from_us, format!("{method} {target}"), REQUEST)
            }
            What::Responded { status, length, .. } => {
                answered = true;
                arrow(
                    from_us,
                    format!("{status} {}, {length} B body", reason_phrase(*status)),
                    RESPONSE,
                )
            }
            What::ResponseHead { status, reason, .. } => {
                arrow(from_peer, format!("{status} {reason}"), RESPONSE)
            }
            What::Rejected { status, reason } => {
                answered = true;
                arrow(from_us, format!("{status}: {reason}"), ERROR)
            }
            What::Fin { dir, seq, ack } => {
                let to = rightwards(*dir);
                let (seq, ack) = rel(to, *seq, *ack);
                arrow(to, format!("FIN seq={seq} ack={ack}"), CLOSE)
            }
            What::FinAcked { dir, ack } => {
                let to = rightwards(*dir);
                let (_, ack) = rel(to, 0, *ack);
                arrow(to, format!("ACK of the FIN, ack={ack}"), CLOSE)
            }
            What::Rst { dir, seq } => {
                let to = rightwards(*dir);
                let (seq, _) = rel(to, *seq, 0);
                arrow(to, format!("RST seq={seq}"), ERROR)
            }
            What::State { from, to } => {
                if let Some(last) = rows.last_mut() {
                    if last.note.is_empty() {
                        last.note = format!("{from} → {to}");
                    } else {
                        let _ = write!(last.note, " → {to}");
                    }
                }
                continue;
            }
            _ => continue,
        };
        rows.push(Row {
            t_us: e.t_us,
            mark,
            note: String::new(),
        });
    }
    // The request being answered now (this page's, on the server) has no response in
    // the journey yet: it is the one on its way.
    if !answered && !rec.active {
        let t_us = rows.last().map_or(rec.opened_us, |r| r.t_us);
        rows.push(Row {
            t_us,
            mark: Mark::Arrow {
                rightwards: from_us,
                label: "this page, on its way".into(),
                colour: RESPONSE,
                dashed: true,
            },
            note: String::new(),
        });
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journey::Journal;

    fn record() -> ConnRecord {
        let mut j = Journal::silent();
        let id = j.open(
            "10.77.0.2:80".parse().unwrap(),
            "10.77.0.1:40000".parse().unwrap(),
            1_000_000,
        );
        let o = SynOptions {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            timestamps: false,
        };
        let connect = crate::journey::Stage::Connect;
        let mut at = |t: i64, stage, what| j.record(Some(id), 1_000_000 + t, stage, what);
        at(
            0,
            connect,
            What::Syn {
                remote: "10.77.0.1:40000".parse().unwrap(),
                local: "10.77.0.2:80".parse().unwrap(),
                isn: 1000,
                window: 64240,
                options: o,
            },
        );
        at(
            0,
            connect,
            What::State {
                from: "LISTEN",
                to: "SYN-RECEIVED",
            },
        );
        at(
            50,
            connect,
            What::SynAck {
                isn: 5000,
                ack: 1001,
                window: 65535,
                options: o,
            },
        );
        at(
            900,
            connect,
            What::HandshakeAck {
                seq: 1001,
                ack: 5001,
            },
        );
        at(
            900,
            connect,
            What::State {
                from: "SYN-RECEIVED",
                to: "ESTABLISHED",
            },
        );
        at(
            1000,
            crate::journey::Stage::Parse,
            What::Parsed {
                method: "GET".into(),
                path: "/<script>alert(1)</script>&\"'".into(),
                version: "HTTP/1.1",
                headers: 1,
                head_bytes: 40,
                body_bytes: 0,
            },
        );
        let rec = j.get(id).unwrap().clone();
        let mut rec = rec;
        rec.handshake.client_isn = Some(1000);
        rec.handshake.server_isn = Some(5000);
        rec
    }

    #[test]
    fn the_handshake_and_the_request_are_arrows_the_right_way() {
        let rec = record();
        let rows = rows(&rec);
        let arrows: Vec<(bool, &str)> = rows
            .iter()
            .filter_map(|r| match &r.mark {
                Mark::Arrow {
                    rightwards, label, ..
                } => Some((*rightwards, label.as_str())),
                Mark::Band { .. } => None,
            })
            .collect();
        assert_eq!(
            arrows,
            [
                (true, "SYN seq=0 win=64240 mss=1460 ws=7 sack"),
                (false, "SYN-ACK seq=0 ack=1 win=65535 mss=1460 ws=7 sack"),
                (true, "ACK seq=1 ack=1"),
                (true, "GET /<script>alert(1)</script>&\"' HTTP/1.1"),
                (false, "this page, on its way"),
            ]
        );
        assert_eq!(rows[0].note, "LISTEN → SYN-RECEIVED");
        assert_eq!(rows[2].note, "SYN-RECEIVED → ESTABLISHED");
    }

    fn arrows(rec: &ConnRecord) -> Vec<(bool, String)> {
        rows(rec)
            .into_iter()
            .filter_map(|r| match r.mark {
                Mark::Arrow {
                    rightwards, label, ..
                } => Some((rightwards, label)),
                Mark::Band { .. } => None,
            })
            .collect()
    }

    #[test]
    fn responses_and_the_close_go_the_right_way() {
        let mut rec = record();
        let close = crate::journey::Stage::Close;
        let mut push = |what| {
            let t = rec.events.last().unwrap().t_us + 100;
            rec.events.push(crate::journey::Event {
                conn: Some(rec.id),
                t_us: t,
                stage: close,
                what,
            });
        };
        push(What::Responded {
            status: 200,
            length: 12,
            streamed: false,
            keep_alive: false,
        });
        push(What::Fin {
            dir: Direction::Out,
            seq: 5101,
            ack: 1041,
        });
        push(What::FinAcked {
            dir: Direction::In,
            ack: 5102,
        });
        push(What::Fin {
            dir: Direction::In,
            seq: 1041,
            ack: 5102,
        });
        push(What::FinAcked {
            dir: Direction::Out,
            ack: 1042,
        });
        push(What::Rst {
            dir: Direction::In,
            seq: 1042,
        });
        push(What::ChallengeAck {
            reason: "an in-window RST not at RCV.NXT",
            sent: true,
        });
        push(What::ChallengeAck {
            reason: "a SYN",
            sent: false,
        });
        let got = arrows(&rec);
        let tail: Vec<(bool, &str)> = got[4..].iter().map(|(r, l)| (*r, l.as_str())).collect();
        assert_eq!(
            tail,
            [
                (false, "200 OK, 12 B body"),
                (false, "FIN seq=101 ack=41"),
                (true, "ACK of the FIN, ack=102"),
                (true, "FIN seq=41 ack=102"),
                (false, "ACK of the FIN, ack=42"),
                (true, "RST seq=42"),
                (false, "challenge ACK: an in-window RST not at RCV.NXT"),
            ],
            "answered: no arrow on its way"
        );
        // Seen from the client's side (fetch), our SYN goes rightwards.
        rec.active = true;
        (rec.handshake.client_isn, rec.handshake.server_isn) = (Some(5000), Some(1000));
        rec.events.retain(|e| matches!(e.what, What::Fin { .. }));
        assert_eq!(
            arrows(&rec),
            [
                (true, "FIN seq=101 ack=41".to_owned()),
                (false, "FIN seq=41 ack=102".to_owned())
            ]
        );
    }

    #[test]
    fn the_svg_escapes_what_the_peer_sent_and_is_well_formed() {
        let svg = ladder(&record());
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(
            svg.contains("GET /&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&#39; HTTP/1.1")
        );
        // Every element is closed: as many openings as closings and self-closings.
        let opened = svg.matches('<').count() - svg.matches("</").count();
        let closed = svg.matches("</").count() + svg.matches("/>").count();
        assert_eq!(opened, closed, "{svg}");
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polygon").count(), 5, "one head per arrow");
        assert!(svg.contains(">0.900<"), "times on the left, in ms: {svg}");
    }

    #[test]
    fn long_labels_are_cut() {
        let long = "x".repeat(200);
        let cut = shorten(&long);
        assert_eq!(cut.chars().count(), MAX_LABEL);
        assert!(cut.ends_with('…'));
        assert_eq!(shorten("short"), "short");
        let exact = "y".repeat(MAX_LABEL);
        assert_eq!(shorten(&exact), exact);
        let wide = "é".repeat(100);
        assert_eq!(shorten(&wide).chars().count(), MAX_LABEL);
    }
}
