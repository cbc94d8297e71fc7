//! What `synack ladder` and `synack stats` do with a capture, run on fuzz input, and what
//! their output must be whatever the capture held: text without control characters (a
//! comment from an untrusted capture must not reach the terminal raw), SVG that is
//! well-formed XML, numbers that are numbers.
//!
//! This is the one file that follows the analysis API (`synack::analyze`); the targets
//! only call [`run`].

use std::path::Path;

use synack::analyze::{self, Conversation, Ladder, Paint, Window};

/// How to draw, as the command-line flags would say it.
#[derive(Debug, Clone, Copy, Default, arbitrary::Arbitrary)]
pub struct Options {
    pub only: Option<u8>,
    pub time_scale_ms: Option<u16>,
    pub from_ms: Option<u16>,
    pub to_ms: Option<u16>,
}

/// Reads the capture at `path` as the commands do; `Err` is the reader's own error (a
/// damaged file is a fine answer), a panic is a finding.
pub fn run(path: &Path, o: Options) -> Result<usize, analyze::ReadError> {
    let frames = analyze::read(path)?;
    let convs = analyze::conversations(&frames);
    let only = o
        .only
        .map(|n| usize::from(n) % (convs.len() + 1))
        .filter(|n| *n > 0);
    let mut how = Ladder {
        only,
        time_scale_ms: o.time_scale_ms.map(|t| f64::from(t) / 10.0),
        paint: Paint(false),
    };
    let text = analyze::ladder_text(&convs, &how);
    plain_text(&text).unwrap_or_else(|e| panic!("ladder text: {e}"));
    how.paint = Paint(true);
    let _ = analyze::ladder_text(&convs, &how);
    how.paint = Paint(false);
    let svg = analyze::ladder_svg(&convs, &how);
    xml(&svg).unwrap_or_else(|e| panic!("ladder SVG: {e}"));
    for (n, c) in convs.iter().enumerate() {
        let Conversation::Tcp(c) = c else { continue };
        let s = analyze::stats(c);
        let t = analyze::stats_text(n + 1, &s);
        plain_text(&t).unwrap_or_else(|e| panic!("stats: {e}"));
        numbers(&t).unwrap_or_else(|e| panic!("stats: {e}"));
        let window = Window {
            from: o.from_ms.map(f64::from),
            to: o.to_ms.map(f64::from),
        };
        if let Ok(plot) = analyze::plot_svg(c, "connection", window) {
            xml(&plot).unwrap_or_else(|e| panic!("plot SVG: {e}"));
        }
    }
    Ok(frames.len())
}

/// No control characters but newlines (and tabs).
pub fn plain_text(t: &str) -> Result<(), String> {
    match t
        .chars()
        .find(|c| c.is_control() && *c != '\n' && *c != '\t')
    {
        Some(c) => Err(format!("control character {:?} in {:?}", c, excerpt(t, c))),
        None => Ok(()),
    }
}

/// No "NaN" or "inf" where a number should be.
pub fn numbers(t: &str) -> Result<(), String> {
    for bad in ["NaN", "inf"] {
        if let Some(i) = t.find(bad) {
            return Err(format!("{bad} in {:?}", &t[i.saturating_sub(40)..]));
        }
    }
    Ok(())
}

fn excerpt(t: &str, c: char) -> String {
    let i = t.find(c).unwrap_or(0);
    let start = t.floor_char_boundary(i.saturating_sub(40));
    let end = t.ceil_char_boundary((i + 40).min(t.len()));
    t[start..end].to_owned()
}

/// A small check that `doc` is well-formed XML (XML 1.0 §2): characters allowed,
/// tags nested and closed, attribute values quoted, `&` only in references, `<` only at
/// markup. Enough to catch what a capture's bytes could break in an SVG.
pub fn xml(doc: &str) -> Result<(), String> {
    if let Some(c) = doc
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r'))
    {
        return Err(format!("character {c:?} is not allowed in XML"));
    }
    let b = doc.as_bytes();
    let mut stack: Vec<&str> = Vec::new();
    let mut i = 0;
    let reference = |i: usize| -> Result<usize, String> {
        let end = doc[i..]
            .find(';')
            .filter(|&e| e > 1 && e < 12)
            .ok_or_else(|| format!("a bare & at {i}: {:?}", &doc[i..(i + 20).min(doc.len())]))?;
        let name = &doc[i + 1..i + end];
        let ok = matches!(name, "amp" | "lt" | "gt" | "quot" | "apos")
            || (name.starts_with("#x")
                && name.len() > 2
                && name[2..].bytes().all(|c| c.is_ascii_hexdigit()))
            || (name.starts_with('#')
                && name.len() > 1
                && name[1..].bytes().all(|c| c.is_ascii_digit()));
        if ok {
            Ok(i + end + 1)
        } else {
            Err(format!("unknown reference &{name};"))
        }
    };
    while i < b.len() {
        match b[i] {
            b'&' => i = reference(i)?,
            b'<' if doc[i..].starts_with("<!--") => {
                let end = doc[i..].find("-->").ok_or("an unclosed comment")?;
                i += end + 3;
            }
            b'<' if doc[i..].starts_with("<?") || doc[i..].starts_with("<!") => {
                let end = doc[i..].find('>').ok_or("an unclosed declaration")?;
                i += end + 1;
            }
            b'<' if doc[i..].starts_with("</") => {
                let end = doc[i..].find('>').ok_or("an unclosed end tag")?;
                let name = doc[i + 2..i + end].trim();
                match stack.pop() {
                    Some(open) if open == name => {}
                    other => return Err(format!("</{name}> closes {other:?}")),
                }
                i += end + 1;
            }
            b'<' => {
                let name_end = doc[i + 1..]
                    .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
                    .ok_or("a tag runs off the end")?
                    + i
                    + 1;
                let name = &doc[i + 1..name_end];
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_alphanumeric() || "-_:.".contains(c))
                {
                    return Err(format!("a bad tag name {name:?}"));
                }
                i = name_end;
                // Attributes: name="value" or name='value'.
                loop {
                    while i < b.len() && b[i].is_ascii_whitespace() {
                        i += 1;
                    }
                    match b.get(i) {
                        Some(b'>') => {
                            stack.push(name);
                            i += 1;
                            break;
                        }
                        Some(b'/') if b.get(i + 1) == Some(&b'>') => {
                            i += 2;
                            break;
                        }
                        Some(_) => {
                            let eq = doc[i..].find('=').ok_or("an attribute without =")? + i;
                            let attr = doc[i..eq].trim();
                            if attr.is_empty()
                                || !attr
                                    .chars()
                                    .all(|c| c.is_alphanumeric() || "-_:.".contains(c))
                            {
                                return Err(format!("a bad attribute name {attr:?} in <{name}>"));
                            }
                            let q = *b.get(eq + 1).ok_or("an attribute runs off the end")?;
                            if q != b'"' && q != b'\'' {
                                return Err(format!("attribute {attr} of <{name}> is not quoted"));
                            }
                            let close = doc[eq + 2..]
                                .find(q as char)
                                .ok_or("an unclosed attribute")?
                                + eq
                                + 2;
                            let value = &doc[eq + 2..close];
                            if value.contains('<') {
                                return Err(format!("< in attribute {attr} of <{name}>"));
                            }
                            let mut j = 0;
                            while let Some(k) = value[j..].find('&') {
                                j = reference_in(value, j + k)?;
                            }
                            i = close + 1;
                        }
                        None => return Err("a tag runs off the end".into()),
                    }
                }
            }
            _ => i += 1,
        }
    }
    if let Some(open) = stack.pop() {
        return Err(format!("<{open}> is never closed"));
    }
    Ok(())
}

fn reference_in(value: &str, i: usize) -> Result<usize, String> {
    let end = value[i..]
        .find(';')
        .filter(|&e| e > 1 && e < 12)
        .ok_or_else(|| format!("a bare & in an attribute: {value:?}"))?;
    Ok(i + end + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_xml_check_takes_svg_and_refuses_what_breaks_it() {
        assert!(
            xml("<?xml version=\"1.0\"?><svg a=\"1\"><text x='2'>a &amp; b</text><g/></svg>")
                .is_ok()
        );
        assert!(xml("<svg><text>a & b</text></svg>").is_err());
        assert!(xml("<svg><text>a \u{1b}[31m</text></svg>").is_err());
        assert!(xml("<svg><text>a</svg>").is_err());
        assert!(xml("<svg a=\"<\"></svg>").is_err());
    }
}
