//! Text from a capture (comments, HTTP request targets, DNS names) is untrusted: shown
//! raw, an escape sequence would drive the reader's terminal and a control character
//! makes an SVG invalid XML. Every such string goes through here on its way out.

use std::borrow::Cow;

/// Characters that must not reach a terminal or an XML document as they are: C0 and C1
/// controls and DEL (terminal commands), the bidirectional overrides and isolates that
/// make text display in another order than it reads (CVE-2021-42574), and the two
/// noncharacters XML 1.0 §2.2 excludes.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{fffe}' | '\u{ffff}')
}

/// `text` with every hidden character written out visibly: `\x1b`, `\u{202e}`.
pub fn visible(text: &str) -> Cow<'_, str> {
    if !text.chars().any(hidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !hidden(c) {
            out.push(c);
        } else if u32::from(c) < 0x100 {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        }
    }
    Cow::Owned(out)
}

/// `text` as XML character data or an attribute value: hidden characters made visible,
/// markup escaped.
pub fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in visible(text).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_shown_not_obeyed() {
        assert_eq!(visible("plain text, é ✓"), "plain text, é ✓");
        assert_eq!(visible("\x1b[2J\x07"), "\\x1b[2J\\x07");
        assert_eq!(
            visible("a\tb\nc\rd\x7f\u{9b}"),
            "a\\x09b\\x0ac\\x0dd\\x7f\\x9b"
        );
        assert_eq!(visible("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(
            xml("<b a=\"1\">&'\x00\u{ffff}"),
            "&lt;b a=&quot;1&quot;&gt;&amp;&apos;\\x00\\u{ffff}"
        );
    }
}
