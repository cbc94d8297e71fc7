//! Tokens of packetdrill's language, each with the line and column where it starts.
//!
//! The token classes follow packetdrill's `lexer.l`: integers (decimal, negative, hex),
//! floats written with a dot (`.1`, `0.100`), words, `...`, `--option` flags, quoted
//! strings, back-quoted shell blocks, `%{ }%` Python blocks, and single punctuation
//! characters. `//` and `/* */` comments are skipped, but kept aside so that synack's own
//! directives (`// synack-expect-fail: ...`) can be read from them.

use super::ast::Span;
use super::error::ScriptError;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Int(i64),
    /// A number written with a dot; kept as text so times convert without rounding.
    Float(String),
    Word(String),
    Str(String),
    /// A shell block between back quotes.
    Shell(String),
    /// A Python block between `%{` and `}%`.
    Code,
    /// A `--name` flag (without its dashes).
    Flag(String),
    Ellipsis,
    Punct(char),
    Eof,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub span: Span,
}

/// A comment and the line it ends on.
#[derive(Debug, Clone)]
pub struct Comment {
    pub span: Span,
    pub text: String,
}

pub struct Lexed {
    pub tokens: Vec<Token>,
    pub comments: Vec<Comment>,
}

pub fn lex(file: &str, src: &str) -> Result<Lexed, ScriptError> {
    let b = src.as_bytes();
    let mut i = 0;
    let mut line = 1u32;
    let mut col = 1u32;
    let mut tokens = Vec::new();
    let mut comments = Vec::new();
    // Advances over `n` bytes, keeping line and column right.
    let advance = |i: &mut usize, line: &mut u32, col: &mut u32, n: usize| {
        for &c in &b[*i..*i + n] {
            if c == b'\n' {
                *line += 1;
                *col = 1;
            } else if c & 0xC0 != 0x80 {
                *col += 1;
            }
        }
        *i += n;
    };
    while i < b.len() {
        let c = b[i];
        let span = Span { line, col };
        let rest = &b[i..];
        if c.is_ascii_whitespace() {
            advance(&mut i, &mut line, &mut col, 1);
            continue;
        }
        if rest.starts_with(b"//") {
            let n = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            comments.push(Comment {
                span,
                text: String::from_utf8_lossy(&rest[2..n]).trim().to_owned(),
            });
            advance(&mut i, &mut line, &mut col, n);
            continue;
        }
        if rest.starts_with(b"/*") {
            let Some(end) = find(&rest[2..], b"*/") else {
                return Err(ScriptError::at(
                    file,
                    span,
                    "this /* comment is never closed",
                ));
            };
            comments.push(Comment {
                span,
                text: String::from_utf8_lossy(&rest[2..2 + end]).trim().to_owned(),
            });
            advance(&mut i, &mut line, &mut col, end + 4);
            continue;
        }
        if rest.starts_with(b"%{") {
            let Some(end) = find(&rest[2..], b"}%") else {
                return Err(ScriptError::at(file, span, "this %{ block is never closed"));
            };
            tokens.push(Token {
                tok: Tok::Code,
                span,
            });
            advance(&mut i, &mut line, &mut col, end + 4);
            continue;
        }
        if rest.starts_with(b"...") {
            tokens.push(Token {
                tok: Tok::Ellipsis,
                span,
            });
            advance(&mut i, &mut line, &mut col, 3);
            continue;
        }
        if rest.starts_with(b"--") && rest.get(2).is_some_and(|c| is_word(*c)) {
            let n = 2 + rest[2..].iter().take_while(|c| is_word(**c)).count();
            tokens.push(Token {
                tok: Tok::Flag(String::from_utf8_lossy(&rest[2..n]).into_owned()),
                span,
            });
            advance(&mut i, &mut line, &mut col, n);
            continue;
        }
        if c == b'"' || c == b'`' {
            let mut n = 1;
            while n < rest.len() && rest[n] != c {
                n += if rest[n] == b'\\' { 2 } else { 1 };
            }
            if n >= rest.len() {
                let what = if c == b'"' { "string" } else { "shell block" };
                return Err(ScriptError::at(
                    file,
                    span,
                    format!("this {what} is never closed"),
                ));
            }
            let text = String::from_utf8_lossy(&rest[1..n]).into_owned();
            tokens.push(Token {
                tok: if c == b'"' {
                    Tok::Str(text)
                } else {
                    Tok::Shell(text)
                },
                span,
            });
            advance(&mut i, &mut line, &mut col, n + 1);
            continue;
        }
        // Numbers: 0x.., -12, 12, .5, 0.100 (a dot counts only when a digit follows it,
        // so `0...0.2` is 0, ..., 0.2 as in packetdrill).
        let neg = c == b'-'
            && rest
                .get(1)
                .is_some_and(|d| d.is_ascii_digit() || *d == b'.');
        let start = usize::from(neg);
        if rest.len() > start + 1
            && rest[start] == b'0'
            && (rest[start + 1] == b'x' || rest[start + 1] == b'X')
            && !neg
        {
            let n = 2 + rest[2..]
                .iter()
                .take_while(|c| c.is_ascii_hexdigit())
                .count();
            let text = std::str::from_utf8(&rest[2..n]).unwrap_or("");
            let value = i64::from_str_radix(text, 16)
                .map_err(|_| ScriptError::at(file, span, "this hex number is too large"))?;
            tokens.push(Token {
                tok: Tok::Int(value),
                span,
            });
            advance(&mut i, &mut line, &mut col, n);
            continue;
        }
        if rest.get(start).is_some_and(|c| c.is_ascii_digit())
            || (rest.get(start) == Some(&b'.')
                && rest.get(start + 1).is_some_and(u8::is_ascii_digit))
        {
            let mut n = start
                + rest[start..]
                    .iter()
                    .take_while(|c| c.is_ascii_digit())
                    .count();
            let mut float = false;
            if rest.get(n) == Some(&b'.') && rest.get(n + 1).is_some_and(u8::is_ascii_digit) {
                float = true;
                n += 1 + rest[n + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_digit())
                    .count();
            }
            // A word that starts with digits (a hex blob) stays a word, as in flex's
            // longest match.
            if !float
                && rest
                    .get(n)
                    .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
            {
                let n = rest.iter().take_while(|c| is_word(**c)).count();
                tokens.push(Token {
                    tok: Tok::Word(String::from_utf8_lossy(&rest[..n]).into_owned()),
                    span,
                });
                advance(&mut i, &mut line, &mut col, n);
                continue;
            }
            let text = String::from_utf8_lossy(&rest[..n]).into_owned();
            let tok = if float {
                Tok::Float(text)
            } else {
                Tok::Int(text.parse().map_err(|_| {
                    ScriptError::at(file, span, format!("the number {text} is too large"))
                })?)
            };
            tokens.push(Token { tok, span });
            advance(&mut i, &mut line, &mut col, n);
            continue;
        }
        if is_word(c) {
            let n = rest.iter().take_while(|c| is_word(**c)).count();
            // `sequence#` is one word in packetdrill; nothing else has a '#'.
            tokens.push(Token {
                tok: Tok::Word(String::from_utf8_lossy(&rest[..n]).into_owned()),
                span,
            });
            advance(&mut i, &mut line, &mut col, n);
            continue;
        }
        let ch = src[i..].chars().next().unwrap_or('?');
        tokens.push(Token {
            tok: Tok::Punct(ch),
            span,
        });
        advance(&mut i, &mut line, &mut col, ch.len_utf8());
    }
    tokens.push(Token {
        tok: Tok::Eof,
        span: Span { line, col },
    });
    Ok(Lexed { tokens, comments })
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Tok {
    /// How the token reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            Tok::Int(n) => format!("the number {n}"),
            Tok::Float(f) => format!("the number {f}"),
            Tok::Word(w) => format!("'{w}'"),
            Tok::Str(s) => format!("the string \"{s}\""),
            Tok::Shell(_) => "a shell block".into(),
            Tok::Code => "a Python block".into(),
            Tok::Flag(f) => format!("--{f}"),
            Tok::Ellipsis => "'...'".into(),
            Tok::Punct(c) => format!("'{c}'"),
            Tok::Eof => "the end of the script".into(),
        }
    }
}
