//! The grammar of packetdrill's `parser.y`, for the constructs synack runs, by recursive
//! descent over the lexer's tokens. Every error names the file, line and column.

use super::ast::*;
use super::error::ScriptError;
use super::lexer::{Comment, Tok, Token, lex};

/// The directive that marks an expected difference of one stack (see [`ExpectedFailure`]).
pub const EXPECT_FAIL: &str = "synack-expect-fail";

pub fn parse(file: &str, src: &str) -> std::result::Result<Script, ScriptError> {
    let lexed = lex(file, src)?;
    let mut p = Parser {
        file,
        src,
        toks: lexed.tokens,
        pos: 0,
    };
    let mut script = p.script()?;
    // Events for one stack only, written in comments so that packetdrill reads the
    // script as it is; merged in line order.
    for c in &lexed.comments {
        if let Some((stack, at)) = stack_line(src, c) {
            let mut event = parse_event_at(file, src, c.span.line, at)?;
            event.stack = Some(stack.to_owned());
            script.events.push(event);
        }
    }
    script.events.sort_by_key(|e| e.span);
    script.expected_failures = directives(file, &lexed.comments, &script.events)?;
    Ok(script)
}

/// The stacks a directive or an event line may name.
pub const STACKS: &[&str] = &["linux", "smoltcp"];

/// `// synack-STACK: EVENT`: the stack, and the byte offset of the event in the source.
fn stack_line(src: &str, c: &Comment) -> Option<(&'static str, usize)> {
    let stack = STACKS.iter().find(|s| {
        c.text
            .strip_prefix("synack-")
            .and_then(|t| t.strip_prefix(**s))
            .is_some_and(|t| t.starts_with(':'))
    })?;
    let line_start: usize = src
        .split_inclusive('\n')
        .take(c.span.line as usize - 1)
        .map(str::len)
        .sum();
    let line = src[line_start..].lines().next().unwrap_or("");
    let marker = format!("synack-{stack}:");
    let at = line.find(&marker)? + marker.len();
    Some((stack, line_start + at))
}

/// Parses the one event that starts at byte `at` of `src` and ends with its line, with
/// positions as in the file.
fn parse_event_at(file: &str, src: &str, line: u32, at: usize) -> Result<Event> {
    let line_start = src[..at].rfind('\n').map_or(0, |i| i + 1);
    let text = src[at..].lines().next().unwrap_or("");
    // The event where it stands: blank lines above, blanks before it on its line.
    let mut padded = "\n".repeat(line as usize - 1);
    padded.extend(src[line_start..at].chars().map(|_| ' '));
    padded.push_str(text);
    let lexed = lex(file, &padded)?;
    let mut p = Parser {
        file,
        src: &padded,
        toks: lexed.tokens,
        pos: 0,
    };
    let event = p.event()?;
    if p.peek().tok != Tok::Eof {
        return p.unexpected("the end of the line after the event");
    }
    Ok(event)
}

struct Parser<'a> {
    file: &'a str,
    src: &'a str,
    toks: Vec<Token>,
    pos: usize,
}

type Result<T> = std::result::Result<T, ScriptError>;

impl Parser<'_> {
    fn peek(&self) -> &Token {
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn peek_at(&self, n: usize) -> &Tok {
        &self.toks[(self.pos + n).min(self.toks.len() - 1)].tok
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn err<T>(&self, span: Span, message: impl Into<String>) -> Result<T> {
        Err(ScriptError::at(self.file, span, message))
    }

    fn unexpected<T>(&self, wanted: &str) -> Result<T> {
        let t = self.peek();
        self.err(
            t.span,
            format!("expected {wanted}, found {}", t.tok.describe()),
        )
    }

    fn is_punct(&self, c: char) -> bool {
        self.peek().tok == Tok::Punct(c)
    }

    fn eat_punct(&mut self, c: char) -> bool {
        if self.is_punct(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, c: char) -> Result<Span> {
        if self.is_punct(c) {
            Ok(self.next().span)
        } else {
            self.unexpected(&format!("'{c}'"))
        }
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(&self.peek().tok, Tok::Word(x) if x == w)
    }

    fn eat_word(&mut self, w: &str) -> bool {
        if self.is_word(w) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_word(&mut self, w: &str) -> Result<()> {
        if self.eat_word(w) {
            Ok(())
        } else {
            self.unexpected(&format!("'{w}'"))
        }
    }

    fn int(&mut self, what: &str) -> Result<(i64, Span)> {
        match self.peek().tok {
            Tok::Int(n) => {
                let span = self.next().span;
                Ok((n, span))
            }
            _ => self.unexpected(what),
        }
    }

    fn ranged<T: TryFrom<i64>>(&mut self, what: &str) -> Result<T> {
        let (n, span) = self.int(what)?;
        T::try_from(n).or_else(|_| self.err(span, format!("{what} {n} is out of range")))
    }

    fn script(&mut self) -> Result<Script> {
        let mut options = Vec::new();
        while let Tok::Flag(name) = &self.peek().tok {
            let name = name.clone();
            let span = self.next().span;
            // The value is the rest of the line after '=', whatever tokens it makes.
            let mut value = None;
            if self.is_punct('=') && self.peek().span.line == span.line {
                let line = self.src.lines().nth(span.line as usize - 1).unwrap_or("");
                let after = line
                    .char_indices()
                    .skip(span.col as usize - 1)
                    .find(|(_, c)| *c == '=')
                    .map(|(i, _)| line[i + 1..].trim())
                    .unwrap_or("");
                value = Some(after.to_owned());
                while self.peek().span.line == span.line && self.peek().tok != Tok::Eof {
                    self.pos += 1;
                }
            }
            options.push(ScriptOption { span, name, value });
        }
        let mut init_shell = None;
        if let Tok::Shell(text) = &self.peek().tok {
            let text = text.clone();
            let span = self.next().span;
            init_shell = Some(Shell { span, text });
        }
        let mut events = Vec::new();
        let mut cleanup_shell = None;
        loop {
            match &self.peek().tok {
                Tok::Eof => break,
                Tok::Shell(text) if matches!(self.peek_at(1), Tok::Eof) => {
                    let text = text.clone();
                    let span = self.next().span;
                    cleanup_shell = Some(Shell { span, text });
                }
                Tok::Flag(f) => {
                    let f = f.clone();
                    return self.err(
                        self.peek().span,
                        format!("--{f} must come before the first event, at the top of the script"),
                    );
                }
                _ => events.push(self.event()?),
            }
        }
        if events.is_empty() {
            return self.err(self.peek().span, "the script has no events");
        }
        // packetdrill's run.c: the script's clock starts at its first event.
        if let Timing::Absolute(t) | Timing::Relative(t) = events[0].time
            && t != 0
        {
            return self.err(events[0].span, "first event should be at time 0");
        }
        Ok(Script {
            file: self.file.to_owned(),
            options,
            init_shell,
            events,
            cleanup_shell,
            expected_failures: Vec::new(),
        })
    }

    /// Seconds as written (`1`, `0.100`, `.1`) to microseconds.
    fn time(&mut self) -> Result<(i64, Span)> {
        let t = self.next();
        let us = match &t.tok {
            Tok::Int(n) if *n >= 0 => n.checked_mul(1_000_000),
            Tok::Float(f) if !f.starts_with('-') => seconds_to_us(f),
            Tok::Int(_) | Tok::Float(_) => return self.err(t.span, "negative time"),
            _ => {
                self.pos -= 1;
                return self.unexpected("a time in seconds");
            }
        };
        match us {
            Some(us) => Ok((us, t.span)),
            None => self.err(t.span, "this time is too large"),
        }
    }

    fn event(&mut self) -> Result<Event> {
        let start = self.peek().span;
        let time = if self.eat_punct('*') {
            Timing::Any
        } else if self.eat_punct('+') {
            let (a, _) = self.time()?;
            if self.eat_punct('~') {
                self.expect_punct('+')?;
                let (b, span) = self.time()?;
                if b < a {
                    return self.err(span, "time range is backwards");
                }
                Timing::RelativeRange(a, b)
            } else {
                Timing::Relative(a)
            }
        } else if matches!(self.peek().tok, Tok::Int(_) | Tok::Float(_)) {
            let (a, _) = self.time()?;
            if self.eat_punct('~') {
                let (b, span) = self.time()?;
                if b < a {
                    return self.err(span, "time range is backwards");
                }
                Timing::AbsoluteRange(a, b)
            } else {
                Timing::Absolute(a)
            }
        } else {
            return self.unexpected("an event time (0.100, +0.1, * or a~b)");
        };
        let action = match &self.peek().tok {
            Tok::Punct('<') | Tok::Punct('>') => Action::Packet(self.packet()?),
            Tok::Shell(text) => {
                let shell = Shell {
                    span: self.peek().span,
                    text: text.clone(),
                };
                self.pos += 1;
                Action::Shell(shell)
            }
            Tok::Code => {
                return self.err(
                    self.peek().span,
                    "Python blocks (%{ ... }%) are not supported by synack script; remove the block or check its values another way",
                );
            }
            Tok::Word(_) | Tok::Ellipsis => Action::Call(self.call()?),
            _ => return self.unexpected("a packet ('<' or '>'), a system call or a shell block"),
        };
        let outbound = matches!(&action, Action::Packet(p) if p.dir == Dir::Outbound);
        match time {
            Timing::Any if !outbound => {
                return self.err(
                    start,
                    "event time <star> can only be used with outbound packets",
                );
            }
            Timing::AbsoluteRange(..) | Timing::RelativeRange(..) if !outbound => {
                return self.err(
                    start,
                    "event time range can only be used with outbound packets",
                );
            }
            _ => {}
        }
        Ok(Event {
            span: start,
            time,
            action,
            stack: None,
        })
    }

    fn packet(&mut self) -> Result<PacketSpec> {
        let start = self.peek().span;
        let dir = if self.next().tok == Tok::Punct('<') {
            Dir::Inbound
        } else {
            Dir::Outbound
        };
        if self.is_punct('(') || self.is_punct('[') || self.is_word("ipv4") || self.is_word("ipv6")
        {
            return self.err(
                self.peek().span,
                "IP header fields (tos, ecn, ttl, flow label, explicit addresses) are not supported by synack script",
            );
        }
        let mut ports = None;
        if matches!(self.peek().tok, Tok::Int(_)) && self.peek_at(1) == &Tok::Punct('>') {
            let src = self.ranged::<u16>("source port")?;
            self.expect_punct('>')?;
            let dst = self.ranged::<u16>("destination port")?;
            ports = Some((src, dst));
        }
        if self.eat_word("udp") {
            self.expect_punct('(')?;
            let len = self.ranged::<u16>("UDP payload size")?;
            self.expect_punct(')')?;
            return Ok(PacketSpec {
                dir,
                body: PacketBody::Udp { len, ports },
            });
        }
        if self.eat_word("icmp") {
            return Ok(PacketSpec {
                dir,
                body: PacketBody::Icmp(self.icmp()?),
            });
        }
        let tcp = self.tcp(dir, ports, start)?;
        Ok(PacketSpec {
            dir,
            body: PacketBody::Tcp(tcp),
        })
    }

    fn icmp(&mut self) -> Result<IcmpSpec> {
        let span = self.peek().span;
        let Tok::Word(name) = self.next().tok else {
            return self.err(
                span,
                "expected an ICMP type (unreachable, echo_request, ...)",
            );
        };
        let Some(icmp_type) = ICMP_TYPES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t) else {
            return self.err(span, format!("unknown ICMP type '{name}'"));
        };
        let mut code = 0;
        if let Tok::Word(w) = &self.peek().tok
            && w != "mtu"
        {
            let span = self.peek().span;
            let w = w.clone();
            self.pos += 1;
            code = match ICMP_UNREACHABLE_CODES.iter().find(|(n, _)| *n == w) {
                Some((_, c)) if icmp_type == 3 => *c,
                _ => match w.parse() {
                    Ok(c) => c,
                    Err(_) => return self.err(span, format!("unknown ICMP code '{w}'")),
                },
            };
        } else if let Tok::Int(_) = self.peek().tok {
            code = self.ranged("ICMP code")?;
        }
        let mut mtu = None;
        if self.eat_word("mtu") {
            mtu = Some(self.ranged("MTU")?);
        }
        let mut echoed = Echoed::Tcp { seq: 0, len: 0 };
        if self.eat_punct('[') {
            if self.eat_word("udp") {
                self.expect_punct('(')?;
                echoed = Echoed::Udp {
                    len: self.ranged("UDP payload size")?,
                };
                self.expect_punct(')')?;
            } else {
                let (seq, len) = self.seq()?;
                echoed = Echoed::Tcp { seq, len };
            }
            self.expect_punct(']')?;
        }
        Ok(IcmpSpec {
            icmp_type,
            code,
            mtu,
            echoed,
        })
    }

    /// `start:end(len)`.
    fn seq(&mut self) -> Result<(u32, u16)> {
        let (start, span) = self.int("a sequence range start:end(length)")?;
        self.expect_punct(':')?;
        let (end, _) = self.int("the end of the sequence range")?;
        self.expect_punct('(')?;
        let (len, _) = self.int("the payload length")?;
        self.expect_punct(')')?;
        let (Ok(s), Ok(e), Ok(l)) = (u32::try_from(start), u32::try_from(end), u16::try_from(len))
        else {
            return self.err(span, "sequence number or payload size out of range");
        };
        if e != s.wrapping_add(u32::from(l)) {
            return self.err(span, "inconsistent TCP sequence numbers and payload size");
        }
        Ok((s, l))
    }

    fn tcp(&mut self, dir: Dir, ports: Option<(u16, u16)>, start: Span) -> Result<TcpSpec> {
        let span = self.peek().span;
        let mut flags = 0u8;
        let letters = match &self.peek().tok {
            Tok::Word(w) => {
                let w = w.clone();
                self.pos += 1;
                if self.eat_punct('.') {
                    flags |= flag::ACK;
                }
                w
            }
            Tok::Punct('.') => {
                self.pos += 1;
                flags |= flag::ACK;
                String::new()
            }
            Tok::Punct('-') => {
                self.pos += 1;
                String::new()
            }
            _ => return self.unexpected("TCP flags (S, F, R, P, ., U, E, W or -), udp or icmp"),
        };
        for c in letters.chars() {
            flags |= match c {
                'F' => flag::FIN,
                'S' => flag::SYN,
                'R' => flag::RST,
                'P' => flag::PSH,
                'U' => flag::URG,
                'E' => flag::ECE,
                'W' => flag::CWR,
                _ => return self.err(span, format!("unknown TCP flag '{c}' in '{letters}'")),
            };
        }
        let (seq, len) = self.seq()?;
        let mut ack = 0;
        if self.eat_word("ack") {
            ack = self.ranged::<u32>("TCP ack sequence number")?;
        }
        let mut win = None;
        if self.eat_word("win") {
            win = Some(self.ranged::<u16>("TCP window value")?);
        }
        let mut urg = 0;
        if self.eat_word("urg") {
            urg = self.ranged::<u16>("urg_ptr value")?;
        }
        let mut options = Some(Vec::new());
        if self.is_punct('<') {
            let lt = self.next().span;
            if self.peek().tok == Tok::Ellipsis {
                self.pos += 1;
                if dir == Dir::Inbound {
                    return self.err(
                        lt,
                        "<...> for TCP options can only be used with outbound packets",
                    );
                }
                options = None;
            } else {
                let mut list = Vec::new();
                loop {
                    list.push(self.tcp_option()?);
                    if !self.eat_punct(',') {
                        break;
                    }
                }
                options = Some(list);
            }
            self.expect_punct('>')?;
        }
        if dir == Dir::Inbound && win.is_none() {
            return self.err(start, "an inbound TCP packet needs its window: add 'win N'");
        }
        Ok(TcpSpec {
            flags,
            seq,
            len,
            ack,
            win,
            urg,
            options,
            ports,
        })
    }

    fn tcp_option(&mut self) -> Result<TcpOpt> {
        let span = self.peek().span;
        let Tok::Word(w) = self.next().tok else {
            self.pos -= 1;
            return self.unexpected("a TCP option (mss, wscale, sackOK, sack, TS, nop, eol)");
        };
        Ok(match w.as_str() {
            "nop" => TcpOpt::Nop,
            "eol" => TcpOpt::Eol,
            "mss" => TcpOpt::Mss(self.ranged("mss value")?),
            "wscale" => TcpOpt::WScale(self.ranged("window scale shift count")?),
            "sackOK" => TcpOpt::SackOk,
            "sack" => {
                let mut blocks = Vec::new();
                while let Tok::Int(_) = self.peek().tok {
                    let left = self.ranged::<u32>("SACK left sequence number")?;
                    self.expect_punct(':')?;
                    let right = self.ranged::<u32>("SACK right sequence number")?;
                    blocks.push((left, right));
                }
                if blocks.is_empty() {
                    return self.err(span, "sack needs at least one block left:right");
                }
                TcpOpt::Sack(blocks)
            }
            "TS" => {
                self.expect_word("val")?;
                let val = self.ranged("ts val")?;
                self.expect_word("ecr")?;
                let ecr = self.ranged("ecr val")?;
                TcpOpt::Timestamp { val, ecr }
            }
            other => {
                return self.err(
                    span,
                    format!("TCP option '{other}' is not supported by synack script (mss, wscale, sackOK, sack, TS, nop, eol are)"),
                );
            }
        })
    }

    fn call(&mut self) -> Result<CallSpec> {
        let mut end = None;
        if self.peek().tok == Tok::Ellipsis {
            self.pos += 1;
            end = Some(self.time()?.0);
        }
        let name_span = self.peek().span;
        let Tok::Word(name) = self.next().tok else {
            self.pos -= 1;
            return self.unexpected("a system call name");
        };
        self.expect_punct('(')?;
        let mut args = Vec::new();
        if !self.eat_punct(')') {
            loop {
                args.push(self.expr()?);
                if self.eat_punct(')') {
                    break;
                }
                self.expect_punct(',')?;
            }
        }
        self.expect_punct('=')?;
        let result = self.expr()?;
        let mut errno = None;
        if let Tok::Word(w) = &self.peek().tok
            && self.peek().span.line == name_span.line
        {
            errno = Some(w.clone());
            self.pos += 1;
        }
        let mut note = None;
        if self.is_punct('(') {
            let open = self.next().span;
            let mut depth = 1;
            let mut words = Vec::new();
            loop {
                let t = self.next();
                match t.tok {
                    Tok::Punct('(') => depth += 1,
                    Tok::Punct(')') => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Tok::Eof => return self.err(open, "this '(' is never closed"),
                    _ => {}
                }
                words.push(token_text(&t.tok));
            }
            note = Some(words.join(" "));
        }
        Ok(CallSpec {
            name,
            name_span,
            args,
            end,
            result,
            errno,
            note,
        })
    }

    fn expr(&mut self) -> Result<Expr> {
        let mut e = self.primary()?;
        while self.eat_punct('|') {
            let rhs = self.primary()?;
            e = Expr::Or(Box::new(e), Box::new(rhs));
        }
        Ok(e)
    }

    fn primary(&mut self) -> Result<Expr> {
        let t = self.next();
        Ok(match t.tok {
            Tok::Ellipsis => Expr::Ellipsis,
            Tok::Int(n) => Expr::Int(n),
            Tok::Str(mut s) => {
                while let Tok::Str(more) = &self.peek().tok {
                    s.push_str(more);
                    self.pos += 1;
                }
                if self.peek().tok == Tok::Ellipsis {
                    self.pos += 1;
                }
                Expr::Str(s)
            }
            Tok::Word(w) => {
                if self.eat_punct('=') {
                    Expr::Assign(w, Box::new(self.expr()?))
                } else if self.is_punct('(') {
                    self.pos += 1;
                    let mut args = Vec::new();
                    if !self.eat_punct(')') {
                        loop {
                            args.push(self.expr()?);
                            if self.eat_punct(')') {
                                break;
                            }
                            self.expect_punct(',')?;
                        }
                    }
                    Expr::Func(w, args)
                } else {
                    Expr::Word(w)
                }
            }
            Tok::Punct('[') => Expr::List(self.list(']')?),
            Tok::Punct('{') => {
                let items = self.list('}')?;
                structure(items)
            }
            _ => {
                self.pos -= 1;
                return self.unexpected("an expression");
            }
        })
    }

    fn list(&mut self, close: char) -> Result<Vec<Expr>> {
        let mut items = Vec::new();
        if self.eat_punct(close) {
            return Ok(items);
        }
        loop {
            items.push(self.expr()?);
            if self.eat_punct(close) {
                return Ok(items);
            }
            self.expect_punct(',')?;
        }
    }
}

/// Recognises the structures synack understands among `{...}` lists.
fn structure(items: Vec<Expr>) -> Expr {
    let field = |name: &str| {
        items.iter().find_map(|e| match e {
            Expr::Assign(n, v) if n == name => Some(v.as_ref().clone()),
            _ => None,
        })
    };
    if let (Some(Expr::Int(onoff)), Some(Expr::Int(linger))) = (field("onoff"), field("linger")) {
        return Expr::Linger { onoff, linger };
    }
    if let (Some(Expr::Func(h, port)), Some(Expr::Func(i, addr))) =
        (field("sin_port"), field("sin_addr"))
        && h == "htons"
        && i == "inet_addr"
        && let ([Expr::Int(port)], [Expr::Str(addr)]) = (port.as_slice(), addr.as_slice())
        && let Ok(port) = u16::try_from(*port)
    {
        return Expr::SockAddr {
            port,
            addr: addr.clone(),
        };
    }
    Expr::Struct(items)
}

fn token_text(t: &Tok) -> String {
    match t {
        Tok::Int(n) => n.to_string(),
        Tok::Float(f) => f.clone(),
        Tok::Word(w) => w.clone(),
        Tok::Str(s) => format!("\"{s}\""),
        Tok::Punct(c) => c.to_string(),
        Tok::Ellipsis => "...".into(),
        Tok::Flag(f) => format!("--{f}"),
        _ => String::new(),
    }
}

/// `0.100` seconds in microseconds, without going through a float.
fn seconds_to_us(text: &str) -> Option<i64> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut digits: String = frac.chars().take(6).collect();
    while digits.len() < 6 {
        digits.push('0');
    }
    whole
        .checked_mul(1_000_000)?
        .checked_add(digits.parse().ok()?)
}

/// packetdrill's ICMPv4 type names (icmp_packet.c).
pub const ICMP_TYPES: &[(&str, u8)] = &[
    ("echo_reply", 0),
    ("unreachable", 3),
    ("source_quench", 4),
    ("redirect", 5),
    ("echo_request", 8),
    ("time_exceeded", 11),
    ("parameter_problem", 12),
];

pub const ICMP_UNREACHABLE_CODES: &[(&str, u8)] = &[
    ("net_unreachable", 0),
    ("host_unreachable", 1),
    ("protocol_unreachable", 2),
    ("port_unreachable", 3),
    ("frag_needed", 4),
    ("source_route_failed", 5),
    ("net_unknown", 6),
    ("host_unknown", 7),
    ("source_host_isolated", 8),
    ("net_prohibited", 9),
    ("host_prohibited", 10),
    ("net_unreachable_for_tos", 11),
    ("host_unreachable_for_tos", 12),
    ("packet_filtered", 13),
    ("precedence_violation", 14),
    ("precedence_cutoff", 15),
];

/// Reads `// synack-expect-fail STACK: reason` (the next event),
/// `// synack-expect-fail STACK next N: reason` (the next N events) and
/// `// synack-expect-fail STACK anywhere: reason` (the script as a whole), with the
/// `// synack-STACK: EVENT` lines that follow a directive (what STACK does instead of the
/// events it marks).
fn directives(file: &str, comments: &[Comment], events: &[Event]) -> Result<Vec<ExpectedFailure>> {
    let mut out: Vec<ExpectedFailure> = Vec::new();
    let shape = format!(
        "write the directive as '// {EXPECT_FAIL} STACK: reason', '// {EXPECT_FAIL} STACK next N: reason' or '// {EXPECT_FAIL} STACK anywhere: reason'"
    );
    for c in comments {
        let Some(rest) = c.text.strip_prefix(EXPECT_FAIL) else {
            continue;
        };
        let Some((head, reason)) = rest.split_once(':') else {
            return Err(ScriptError::at(file, c.span, shape.as_str()));
        };
        let mut words = head.split_whitespace();
        let stack = words.next().unwrap_or("").to_owned();
        let (anywhere, count) = match (words.next(), words.next(), words.next()) {
            (None, _, _) => (false, 1),
            (Some("anywhere"), None, _) => (true, 0),
            (Some("next"), Some(n), None) => match n.parse::<usize>() {
                Ok(n) if n >= 1 => (false, n),
                _ => {
                    return Err(ScriptError::at(
                        file,
                        c.span,
                        format!("'next {n}': the number of events marked must be 1 or more"),
                    ));
                }
            },
            (Some(other), _, _) => {
                return Err(ScriptError::at(
                    file,
                    c.span,
                    format!(
                        "unexpected '{other}' in the directive: only 'anywhere' or 'next N' may follow the stack's name"
                    ),
                ));
            }
        };
        if !STACKS.contains(&stack.as_str()) {
            return Err(ScriptError::at(
                file,
                c.span,
                format!("the directive names stack '{stack}': it must be linux or smoltcp"),
            ));
        }
        let (line, lines) = if anywhere {
            (None, Vec::new())
        } else {
            let lines: Vec<u32> = events
                .iter()
                .filter(|e| e.stack.is_none() && e.span.line > c.span.line)
                .take(count)
                .map(|e| e.span.line)
                .collect();
            if lines.len() < count {
                return Err(ScriptError::at(
                    file,
                    c.span,
                    if count == 1 {
                        "this directive has no event after it".to_owned()
                    } else {
                        format!(
                            "this directive marks {count} events but only {} follow it",
                            lines.len()
                        )
                    },
                ));
            }
            (lines.first().copied(), lines)
        };
        out.push(ExpectedFailure {
            span: c.span,
            stack,
            line,
            lines,
            replaced_by: Vec::new(),
            reason: reason.trim().to_owned(),
        });
    }
    // Each event for one stack belongs to the directive of that stack just above it,
    // before the first event that directive marks.
    for e in events {
        let Some(stack) = &e.stack else { continue };
        let owner = out.iter_mut().rev().find(|d| {
            d.stack == *stack
                && d.span.line < e.span.line
                && d.line.is_none_or(|first| e.span.line < first)
        });
        match owner {
            Some(d) if d.line.is_some() => d.replaced_by.push(e.span.line),
            Some(_) => {
                return Err(ScriptError::at(
                    file,
                    e.span,
                    format!(
                        "a 'synack-{stack}:' event cannot replace part of an 'anywhere' directive: mark the events it stands for with '// {EXPECT_FAIL} {stack}: reason' or '... next N: reason'"
                    ),
                ));
            }
            None => {
                return Err(ScriptError::at(
                    file,
                    e.span,
                    format!(
                        "a 'synack-{stack}:' event says what {stack} does instead of marked events: put it under a '// {EXPECT_FAIL} {stack}: reason' line, before the events it marks"
                    ),
                ));
            }
        }
    }
    Ok(out)
}
