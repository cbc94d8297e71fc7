//! The ladder diagram: the two endpoints as columns, one arrow per segment, in the
//! terminal (coloured when it is one) or as an SVG picture.
//!
//! A lost segment's arrow stops short of the receiver with an X. What a segment carries
//! for the application (TLS records, an HTTP request or status line) is named beside its
//! arrow. With a time scale, the space between arrows follows the time between them.

use std::fmt::Write as _;

use super::escape::{visible, xml};
use super::flows::{Connection, Conversation, DnsExchange, Seg, Tag};

/// The arrow's width between the two columns, in characters.
const ARROW: usize = 58;

/// How far short of the receiver a lost segment's arrow stops, in characters.
const LOST_GAP: usize = 8;

/// With a time scale, a pause longer than this many rows is cut short and marked with
/// the time it lasted, so a 1 s timeout does not fill screens with empty rows.
const MAX_GAP_ROWS: f64 = 12.0;

/// ANSI colours, or nothing when the output is not a terminal.
#[derive(Clone, Copy, Default)]
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
            Tag::Retransmission
            | Tag::FastRetransmission
            | Tag::SpuriousRetransmission
            | Tag::ZeroWindow
            | Tag::Lost
            | Tag::ProbablyLost => "1;31",
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

/// How to draw the ladder.
#[derive(Clone, Copy, Default)]
pub struct Ladder {
    /// Only conversation N (1-based, as numbered in the output).
    pub only: Option<usize>,
    /// Space arrows by time: one row per this many milliseconds between packets
    /// (arrows closer in time stay one row apart). `None`: one row each.
    pub time_scale_ms: Option<f64>,
    pub paint: Paint,
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

/// `|---- text ---->|`, or for a lost segment `|---- text ----X        |`: always
/// `ARROW + 1` characters wide. A text too long for the shaft is left out of it and
/// returned, to go beside the arrow.
fn arrow(text: &str, rightwards: bool, lost: bool) -> (String, Option<&str>) {
    // What the shaft holds between the ends: `|` and `>|`, `|<` and `|`, or for a lost
    // segment `|` and `X` plus the gap.
    let room = if lost {
        ARROW - 2 - LOST_GAP
    } else {
        ARROW - 2
    };
    let fits = text.chars().count() + 2 <= room;
    let body = if fits {
        format!(" {text} ")
    } else {
        String::new()
    };
    let dashes = room - body.chars().count();
    // Centred, the odd dash on the sender's side.
    let left = if rightwards {
        dashes.div_ceil(2)
    } else {
        dashes.saturating_sub(1) / 2
    };
    let (left, right) = ("-".repeat(left), "-".repeat(dashes - left));
    let drawn = match (lost, rightwards) {
        (true, true) => format!("|{left}{body}{right}X{}|", " ".repeat(LOST_GAP)),
        (true, false) => format!("|{}X{left}{body}{right}|", " ".repeat(LOST_GAP)),
        (false, true) => format!("|{left}{body}{right}>|"),
        (false, false) => format!("|<{left}{body}{right}|"),
    };
    (drawn, (!fits).then_some(text))
}

/// Empty rows (or a cut) before an arrow that comes `gap` seconds after the one before.
enum Pause {
    Rows(usize),
    /// Longer than `MAX_GAP_ROWS`: shown as one marked row.
    Cut(f64),
}

fn pause(scale_ms: Option<f64>, gap: f64) -> Pause {
    let Some(scale) = scale_ms.filter(|s| *s > 0.0) else {
        return Pause::Rows(0);
    };
    let rows = gap * 1000.0 / scale;
    if rows > MAX_GAP_ROWS {
        Pause::Cut(gap)
    } else {
        // The arrow's own row is one of them.
        Pause::Rows((rows.round() as usize).saturating_sub(1))
    }
}

/// A pause's length as text: `1.000 s`, `35.0 ms`.
fn duration(secs: f64) -> String {
    if secs >= 1.0 {
        format!("{secs:.3} s")
    } else {
        format!("{:.1} ms", secs * 1000.0)
    }
}

const GUTTER: usize = 19;

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

fn empty_rows(out: &mut String, p: Pause) {
    let blank = format!("{:GUTTER$}|{:w$}|", "", "", w = ARROW - 1);
    match p {
        Pause::Rows(n) => {
            for _ in 0..n {
                let _ = writeln!(out, "{}", blank.trim_end());
            }
        }
        Pause::Cut(secs) => {
            let note = format!(" {} later ", duration(secs));
            let fill = (ARROW - 1).saturating_sub(note.chars().count());
            let _ = writeln!(out, "{blank}");
            let _ = writeln!(
                out,
                "{:GUTTER$}:{}{note}{}:",
                "",
                "~".repeat(fill / 2),
                "~".repeat(fill - fill / 2)
            );
            let _ = writeln!(out, "{blank}");
        }
    }
}

fn tcp(out: &mut String, n: usize, c: &Connection, o: &Ladder) {
    let paint = o.paint;
    let title = format!("TCP {} -> {}", c.client, c.server);
    header(
        out,
        n,
        &title,
        &c.client.to_string(),
        &c.server.to_string(),
        paint,
    );
    let mut before: Option<f64> = None;
    for s in &c.segments {
        if let Some(t) = before {
            empty_rows(out, pause(o.time_scale_ms, s.time - t));
        }
        before = Some(s.time);
        let label = label(s);
        let (drawn, long) = arrow(&label, s.from_client, s.lost());
        let mut beside: Vec<String> = long.map(str::to_owned).into_iter().collect();
        if let Some(app) = &s.app {
            beside.push(paint.bold(&visible(app)));
        }
        beside.extend(s.tags.iter().map(|&t| paint.tag(t)));
        let line = format!(
            "{:>6} {:>10.6}  {drawn} {}",
            s.frame,
            s.time,
            beside.join(" ")
        );
        let _ = writeln!(out, "{}", line.trim_end());
        if let Some(c) = &s.comment {
            let _ = writeln!(
                out,
                "{:GUTTER$}{}",
                "",
                paint.dim(&format!("# {}", visible(c)))
            );
        }
    }
}

fn dns(out: &mut String, n: usize, x: &DnsExchange, o: &Ladder) {
    let title = format!("DNS {} -> {}", x.client, x.server);
    header(
        out,
        n,
        &title,
        &x.client.to_string(),
        &x.server.to_string(),
        o.paint,
    );
    let mut before: Option<f64> = None;
    for (frame, time, query, text) in &x.messages {
        if let Some(t) = before {
            empty_rows(out, pause(o.time_scale_ms, time - t));
        }
        before = Some(*time);
        let text = visible(text);
        let (drawn, long) = arrow(&text, *query, false);
        let line = format!("{frame:>6} {time:>10.6}  {drawn} {}", long.unwrap_or(""));
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// The ladder of every conversation (or only `o.only`), as text.
pub fn text(conversations: &[Conversation], o: &Ladder) -> String {
    let mut out = String::new();
    for (i, c) in conversations.iter().enumerate() {
        let n = i + 1;
        if o.only.is_some_and(|x| x != n) {
            continue;
        }
        match c {
            Conversation::Tcp(c) => tcp(&mut out, n, c, o),
            Conversation::Dns(x) => dns(&mut out, n, x, o),
        }
        out.push('\n');
    }
    out
}

/// One arrow of the SVG ladder.
struct Row {
    time: f64,
    frame: usize,
    text: String,
    app: Option<String>,
    rightwards: bool,
    lost: bool,
    tags: Vec<String>,
    comment: Option<String>,
}

/// Splits `text` into lines of at most `width` characters, at spaces where it can.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let (n, w) = (line.chars().count(), word.chars().count());
        if n > 0 && n + 1 + w > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
        // A word longer than a line is cut where the line ends.
        while line.chars().count() > width {
            let head: String = line.chars().take(width).collect();
            line = line.chars().skip(width).collect();
            lines.push(head);
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

// The SVG ladder's geometry, in pixels (monospace 12 px: about 7.2 px a character).
const WIDTH: f64 = 1160.0;
const LEFT: f64 = 180.0;
const RIGHT: f64 = 820.0;
/// Vertical drop of an arrow from sender to receiver: time passes on the way.
const SLOPE: f64 = 14.0;
/// One row: the label above the arrow, the arrow, and a gap.
const ROW: f64 = 36.0;
const COMMENT_LINE: f64 = 12.0;
/// A line of 12 px text.
const LINE: f64 = 13.0;
/// Characters of a label that fit between the columns (monospace 12 px: 7.2 px each).
const LABEL_CHARS: usize = ((RIGHT - LEFT - 40.0) / 7.2) as usize;
/// Characters of a comment line (font size 10: 6 px each) between the columns.
const COMMENT_WIDTH: usize = ((RIGHT - LEFT - 16.0) / 6.0) as usize;
/// Where a lost segment's arrow stops, as a share of the way across.
const LOST_AT: f64 = 0.72;

fn rows_of(c: &Conversation) -> (String, String, String, Vec<Row>) {
    match c {
        Conversation::Tcp(c) => (
            "TCP".into(),
            c.client.to_string(),
            c.server.to_string(),
            c.segments
                .iter()
                .map(|s| Row {
                    time: s.time,
                    frame: s.frame,
                    text: label(s),
                    app: s.app.clone(),
                    rightwards: s.from_client,
                    lost: s.lost(),
                    tags: s.tags.iter().map(|t| t.text()).collect(),
                    comment: s.comment.clone(),
                })
                .collect(),
        ),
        Conversation::Dns(x) => (
            "DNS".into(),
            x.client.to_string(),
            x.server.to_string(),
            x.messages
                .iter()
                .map(|(f, t, q, text)| Row {
                    time: *t,
                    frame: *f,
                    text: text.clone(),
                    app: None,
                    rightwards: *q,
                    lost: false,
                    tags: Vec::new(),
                    comment: None,
                })
                .collect(),
        ),
    }
}

/// The same ladder as an SVG picture: the endpoints as two vertical lines, each segment a
/// sloping arrow with its label above it (what it carries for the application in bold),
/// tags in red beside the receiver's column, comments in grey below.
pub fn svg(conversations: &[Conversation], o: &Ladder) -> String {
    let mut body = String::new();
    let mut y = 34.0;
    let angle = (SLOPE / (RIGHT - LEFT)).atan().to_degrees();
    for (i, c) in conversations.iter().enumerate() {
        let n = i + 1;
        if o.only.is_some_and(|x| x != n) {
            continue;
        }
        let (kind, left, right, rows) = rows_of(c);
        let top = y;
        let _ = writeln!(
            body,
            r##"<text x="10" y="{y}" font-weight="bold">#{n} {kind}</text><text x="50" y="{}" fill="#555" text-anchor="end">frame</text><text x="60" y="{0}" fill="#555">time (s)</text><text x="{LEFT}" y="{y}" text-anchor="middle" font-weight="bold">{}</text><text x="{RIGHT}" y="{y}" text-anchor="middle" font-weight="bold">{}</text>"##,
            y + 16.0,
            xml(&left),
            xml(&right)
        );
        y += 30.0;
        let mut before: Option<f64> = None;
        for r in rows {
            if let Some(t) = before {
                match pause(o.time_scale_ms, r.time - t) {
                    Pause::Rows(n) => y += n as f64 * ROW,
                    Pause::Cut(secs) => {
                        let _ = writeln!(
                            body,
                            r##"<text x="{}" y="{}" text-anchor="middle" fill="#555" font-style="italic">~ {} later ~</text>"##,
                            (LEFT + RIGHT) / 2.0,
                            y + 4.0,
                            duration(secs)
                        );
                        y += ROW;
                    }
                }
            }
            before = Some(r.time);
            // What the segment carries goes before its label, or on a line of its own
            // above it when the two would not fit between the columns.
            let app_len = r.app.as_deref().map_or(0, |a| a.chars().count() + 2);
            let stacked = app_len + r.text.chars().count() > LABEL_CHARS;
            if stacked {
                y += LINE;
            }
            // The label's line sits above the arrow, which starts 16 px down the row.
            let mut ya = y + 16.0;
            let (x1, x2) = if r.rightwards {
                (LEFT, RIGHT)
            } else {
                (RIGHT, LEFT)
            };
            let share = if r.lost { LOST_AT } else { 1.0 };
            let (xe, ye) = (x1 + (x2 - x1) * share, ya + SLOPE * share);
            let _ = write!(
                body,
                r##"<text x="50" y="{0}" fill="#555" text-anchor="end">{1}</text><text x="60" y="{0}" fill="#555">{2:.6}</text>"##,
                ya + 4.0,
                r.frame,
                r.time
            );
            if r.lost {
                let _ = write!(
                    body,
                    r##"<line x1="{x1}" y1="{ya}" x2="{xe:.1}" y2="{ye:.1}" stroke="#c00" stroke-dasharray="6 3"/><path d="M {:.1} {:.1} l 10 10 m 0 -10 l -10 10" stroke="#c00" stroke-width="2.5"/>"##,
                    xe - 5.0,
                    ye - 5.0
                );
            } else {
                let _ = write!(
                    body,
                    r##"<line x1="{x1}" y1="{ya}" x2="{x2}" y2="{ye}" stroke="black" marker-end="url(#arrow)"/>"##
                );
            }
            // The label, parallel to the arrow and 5 px above its drawn part's middle.
            let (mx, my) = ((x1 + xe) / 2.0, (ya + ye) / 2.0);
            let a = if r.rightwards { angle } else { -angle };
            let app = r.app.as_deref().map_or(String::new(), |a| {
                format!(
                    r##"<tspan font-weight="bold" fill="#036">{}</tspan>"##,
                    xml(a)
                )
            });
            let label = if stacked {
                format!(
                    r#"<text y="{}" text-anchor="middle">{app}</text><text y="-5" text-anchor="middle">{}</text>"#,
                    -5.0 - LINE,
                    xml(&r.text)
                )
            } else {
                let gap = if app.is_empty() { "" } else { "  " };
                format!(
                    r#"<text y="-5" text-anchor="middle" xml:space="preserve">{app}{gap}{}</text>"#,
                    xml(&r.text)
                )
            };
            let _ = writeln!(
                body,
                r##"<g transform="translate({mx:.1} {my:.1}) rotate({a:.3})">{label}</g>"##
            );
            if !r.tags.is_empty() {
                let _ = writeln!(
                    body,
                    r##"<text x="{}" y="{}" fill="#c00">{}</text>"##,
                    RIGHT + 14.0,
                    ya + SLOPE / 2.0 + 4.0,
                    xml(&r.tags.join(", "))
                );
            }
            y += ROW;
            // The comment below the arrow's lower end, between the columns.
            if let Some(c) = r.comment {
                for line in wrap(&visible(&c), COMMENT_WIDTH) {
                    let _ = writeln!(
                        body,
                        r##"<text x="{}" y="{}" fill="#666" font-size="10">{}</text>"##,
                        LEFT + 8.0,
                        ya + SLOPE + 12.0,
                        xml(&line)
                    );
                    ya += COMMENT_LINE;
                    y += COMMENT_LINE;
                }
                y += 4.0;
            }
        }
        let _ = writeln!(
            body,
            r##"<line x1="{LEFT}" y1="{}" x2="{LEFT}" y2="{y}" stroke="#888"/><line x1="{RIGHT}" y1="{}" x2="{RIGHT}" y2="{y}" stroke="#888"/>"##,
            top + 8.0,
            top + 8.0
        );
        y += 40.0;
    }
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{}" font-family="monospace" font-size="12">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z"/></marker></defs>
<rect width="100%" height="100%" fill="white"/>
{body}</svg>
"#,
        y + 10.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrows_keep_their_width_lost_or_not() {
        let long = "DNS response 0xb373: A a-rather-long-name.synack.test -> 10.77.0.2 (NOERROR)";
        for text in ["SYN seq=0", "x", long] {
            for right in [true, false] {
                let (a, beside) = arrow(text, right, false);
                let (l, _) = arrow(text, right, true);
                assert_eq!(a.chars().count(), ARROW + 1, "{a}");
                assert_eq!(l.chars().count(), ARROW + 1, "{l}");
                assert!(l.contains('X') && !l.contains('>'));
                // The text in the shaft, or beside the arrow when it is too long.
                assert_eq!(beside.is_some(), text == long);
                assert_eq!(a.contains(text), text != long);
            }
        }
        assert!(
            arrow("a", true, true)
                .0
                .ends_with(&format!("X{}|", " ".repeat(LOST_GAP)))
        );
        assert!(
            arrow("a", false, true)
                .0
                .starts_with(&format!("|{}X", " ".repeat(LOST_GAP)))
        );
    }

    #[test]
    fn pauses_follow_the_time_scale_and_long_ones_are_cut() {
        assert!(matches!(pause(None, 5.0), Pause::Rows(0)));
        assert!(matches!(pause(Some(10.0), 0.001), Pause::Rows(0)));
        assert!(matches!(pause(Some(10.0), 0.050), Pause::Rows(4)));
        assert!(matches!(pause(Some(10.0), 1.0), Pause::Cut(_)));
    }

    #[test]
    fn comments_wrap_at_spaces_and_long_words_are_cut() {
        assert_eq!(wrap("aa bb cc", 5), ["aa bb", "cc"]);
        assert_eq!(wrap("abcdefgh", 3), ["abc", "def", "gh"]);
        assert!(wrap("", 5).is_empty());
    }
}
