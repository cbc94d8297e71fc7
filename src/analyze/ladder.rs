//! The ladder diagram: the two endpoints as columns, one arrow per segment, in the
//! terminal (coloured when it is one) or as an SVG picture.

use std::fmt::Write as _;

use super::flows::{Connection, Conversation, DnsExchange, Seg, Tag};

/// The arrow's width between the two columns, in characters.
const ARROW: usize = 58;

/// ANSI colours, or nothing when the output is not a terminal.
#[derive(Clone, Copy)]
pub struct Paint(pub bool);

impl Paint {
    fn wrap(self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
    fn tag(self, t: Tag) -> String {
        let code = match t {
            Tag::Retransmission | Tag::FastRetransmission | Tag::ZeroWindow => "1;31",
            Tag::DuplicateAck(_) | Tag::OutOfOrder => "33",
            Tag::WindowUpdate => "34",
            Tag::KeepAlive | Tag::TimeWait => "32",
        };
        self.wrap(code, &format!("[{}]", t.text()))
    }
    fn dim(self, text: &str) -> String {
        self.wrap("2", text)
    }
    fn bold(self, text: &str) -> String {
        self.wrap("1", text)
    }
}

/// What goes on a segment's arrow: flags, relative numbers, length, window, SYN options.
pub fn label(s: &Seg) -> String {
    let mut l = format!("{} seq={}", s.flags(), s.seq);
    if s.ack_flag {
        let _ = write!(l, " ack={}", s.ack);
    }
    let _ = write!(l, " len={} win={}", s.len, s.window);
    if s.syn {
        if let Some(m) = s.options.mss {
            let _ = write!(l, " mss={m}");
        }
        if let Some(w) = s.options.window_scale {
            let _ = write!(l, " ws={w}");
        }
        if s.options.sack_permitted {
            l.push_str(" sack");
        }
        if s.options.timestamps {
            l.push_str(" ts");
        }
    }
    l
}

fn arrow(text: &str, rightwards: bool) -> String {
    let body = format!(" {text} ");
    let fill = ARROW.saturating_sub(body.chars().count() + 3);
    let (left, right) = (fill / 2, fill - fill / 2);
    if rightwards {
        format!("|{}{body}{}>|", "-".repeat(left + 1), "-".repeat(right))
    } else {
        format!("|<{}{body}{}|", "-".repeat(left), "-".repeat(right + 1))
    }
}

fn header(out: &mut String, n: usize, title: &str, left: &str, right: &str, paint: Paint) {
    let _ = writeln!(out, "{}", paint.bold(&format!("#{n} {title}")));
    let _ = writeln!(
        out,
        "{:>6} {:>10}  {left:<w$}{right}",
        "frame",
        "time",
        w = ARROW - 6
    );
}

fn tcp(out: &mut String, n: usize, c: &Connection, paint: Paint) {
    let title = format!("TCP {} -> {}", c.client, c.server);
    header(
        out,
        n,
        &title,
        &c.client.to_string(),
        &c.server.to_string(),
        paint,
    );
    for s in &c.segments {
        let tags: Vec<String> = s.tags.iter().map(|&t| paint.tag(t)).collect();
        let _ = writeln!(
            out,
            "{:>6} {:>10.6}  {} {}",
            s.frame,
            s.time,
            arrow(&label(s), s.from_client),
            tags.join(" ")
        );
        if let Some(c) = &s.comment {
            let _ = writeln!(out, "{:>19}{}", "", paint.dim(&format!("# {c}")));
        }
    }
}

fn dns(out: &mut String, n: usize, x: &DnsExchange, paint: Paint) {
    let title = format!("DNS {} -> {}", x.client, x.server);
    header(
        out,
        n,
        &title,
        &x.client.to_string(),
        &x.server.to_string(),
        paint,
    );
    for (frame, time, query, text) in &x.messages {
        let _ = writeln!(out, "{frame:>6} {time:>10.6}  {}", arrow(text, *query));
    }
}

/// The ladder of every conversation (or only number `only`), as text.
pub fn text(conversations: &[Conversation], only: Option<usize>, paint: Paint) -> String {
    let mut out = String::new();
    for (i, c) in conversations.iter().enumerate() {
        let n = i + 1;
        if only.is_some_and(|o| o != n) {
            continue;
        }
        match c {
            Conversation::Tcp(c) => tcp(&mut out, n, c, paint),
            Conversation::Dns(x) => dns(&mut out, n, x, paint),
        }
        out.push('\n');
    }
    out
}

/// One arrow of the SVG ladder.
struct Row {
    when: String,
    text: String,
    rightwards: bool,
    tags: Vec<String>,
    comment: Option<String>,
}

/// Escapes text for SVG.
pub fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The same ladder as an SVG picture: the endpoints as two vertical lines, each segment a
/// sloping arrow with its label, tags in red, comments in grey.
pub fn svg(conversations: &[Conversation], only: Option<usize>) -> String {
    const LEFT: f64 = 260.0;
    const RIGHT: f64 = 900.0;
    const ROW: f64 = 34.0;
    let mut body = String::new();
    let mut y = 30.0;
    for (i, c) in conversations.iter().enumerate() {
        let n = i + 1;
        if only.is_some_and(|o| o != n) {
            continue;
        }
        let (title, left, right, rows) = match c {
            Conversation::Tcp(c) => (
                format!("#{n} TCP"),
                c.client.to_string(),
                c.server.to_string(),
                c.segments
                    .iter()
                    .map(|s| Row {
                        when: format!("{} {:.6}", s.frame, s.time),
                        text: label(s),
                        rightwards: s.from_client,
                        tags: s.tags.iter().map(|t| t.text()).collect(),
                        comment: s.comment.clone(),
                    })
                    .collect::<Vec<_>>(),
            ),
            Conversation::Dns(x) => (
                format!("#{n} DNS"),
                x.client.to_string(),
                x.server.to_string(),
                x.messages
                    .iter()
                    .map(|(f, t, q, text)| Row {
                        when: format!("{f} {t:.6}"),
                        text: text.clone(),
                        rightwards: *q,
                        tags: Vec::new(),
                        comment: None,
                    })
                    .collect(),
            ),
        };
        let top = y;
        let _ = writeln!(
            body,
            r#"<text x="10" y="{y}" font-weight="bold">{}</text><text x="{LEFT}" y="{y}" text-anchor="middle">{}</text><text x="{RIGHT}" y="{y}" text-anchor="middle">{}</text>"#,
            xml(&title),
            xml(&left),
            xml(&right)
        );
        y += 20.0;
        for Row {
            when,
            text,
            rightwards,
            tags,
            comment,
        } in rows
        {
            let (x1, x2) = if rightwards {
                (LEFT, RIGHT)
            } else {
                (RIGHT, LEFT)
            };
            let y2 = y + 14.0;
            let _ = writeln!(
                body,
                r##"<text x="10" y="{}" fill="#555">{}</text><line x1="{x1}" y1="{y}" x2="{x2}" y2="{y2}" stroke="black" marker-end="url(#arrow)"/><text x="{}" y="{}" text-anchor="middle">{}</text>"##,
                y + 10.0,
                xml(&when),
                (LEFT + RIGHT) / 2.0,
                y + 4.0,
                xml(&text)
            );
            if !tags.is_empty() {
                let _ = writeln!(
                    body,
                    r##"<text x="{}" y="{}" fill="#c00">{}</text>"##,
                    RIGHT + 12.0,
                    y + 10.0,
                    xml(&tags.join(", "))
                );
            }
            if let Some(c) = comment {
                let _ = writeln!(
                    body,
                    r##"<text x="{}" y="{}" fill="#777" font-size="10">{}</text>"##,
                    LEFT + 6.0,
                    y2 + 10.0,
                    xml(&c)
                );
                y += 10.0;
            }
            y += ROW;
        }
        let _ = writeln!(
            body,
            r##"<line x1="{LEFT}" y1="{}" x2="{LEFT}" y2="{y}" stroke="#888"/><line x1="{RIGHT}" y1="{}" x2="{RIGHT}" y2="{y}" stroke="#888"/>"##,
            top + 6.0,
            top + 6.0
        );
        y += 30.0;
    }
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="1400" height="{}" font-family="monospace" font-size="12">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z"/></marker></defs>
<rect width="100%" height="100%" fill="white"/>
{body}</svg>
"#,
        y + 10.0
    )
}
