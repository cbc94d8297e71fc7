//! A parsed script: options, events in the order written, and synack's directives.

/// Where something starts in the script (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Span {
    pub line: u32,
    pub col: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    pub file: String,
    /// `--name=value` lines at the top.
    pub options: Vec<ScriptOption>,
    /// A shell block before the first event (packetdrill's init command).
    pub init_shell: Option<Shell>,
    pub events: Vec<Event>,
    /// A shell block after the last event (packetdrill's cleanup command).
    pub cleanup_shell: Option<Shell>,
    /// `// synack-expect-fail: STACK: reason` directives.
    pub expected_failures: Vec<ExpectedFailure>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScriptOption {
    pub span: Span,
    pub name: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Shell {
    pub span: Span,
    pub text: String,
}

/// A stack that is known to differ from the script at some events, or anywhere in it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedFailure {
    pub span: Span,
    /// The backend's name: `linux` or `smoltcp`.
    pub stack: String,
    /// The line of the (first) event where it differs; `None`: the script as a whole
    /// (`anywhere`).
    pub line: Option<u32>,
    /// Every event marked (`next N` marks N), in order; empty for `anywhere`.
    pub lines: Vec<u32>,
    /// The lines of the `// synack-STACK: EVENT` events that stand for the marked ones
    /// on that stack (what it does instead); empty: the marked events run, and each
    /// must fail.
    pub replaced_by: Vec<u32>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub span: Span,
    pub time: Timing,
    pub action: Action,
    /// The one stack that runs it (a `// synack-STACK: EVENT` line), or `None`: every
    /// stack.
    pub stack: Option<String>,
}

/// When an event happens, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// `0.100`: since the start of the script.
    Absolute(i64),
    /// `+0.1`: after the previous event.
    Relative(i64),
    /// `*`: any time (outbound packets only).
    Any,
    /// `a~b`: a window since the start (outbound packets only).
    AbsoluteRange(i64, i64),
    /// `+a~+b`: a window after the previous event (outbound packets only).
    RelativeRange(i64, i64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Packet(PacketSpec),
    Call(CallSpec),
    Shell(Shell),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// `<`: the script sends it to the stack under test.
    Inbound,
    /// `>`: the stack under test is expected to send it.
    Outbound,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PacketSpec {
    pub dir: Dir,
    pub body: PacketBody,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PacketBody {
    Tcp(TcpSpec),
    Udp { len: u16, ports: Option<(u16, u16)> },
    Icmp(IcmpSpec),
}

/// TCP flag bits as in the header's 13th byte.
pub mod flag {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

#[derive(Debug, Clone, PartialEq)]
pub struct TcpSpec {
    pub flags: u8,
    /// Absolute on SYNs, relative to the sender's initial sequence number otherwise.
    pub seq: u32,
    pub len: u16,
    pub ack: u32,
    /// Required inbound; outbound, checked only when given.
    pub win: Option<u16>,
    pub urg: u16,
    /// `None`: `<...>`, the options are not checked.
    pub options: Option<Vec<TcpOpt>>,
    pub ports: Option<(u16, u16)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpOpt {
    Eol,
    Nop,
    Mss(u16),
    WScale(u8),
    SackOk,
    Sack(Vec<(u32, u32)>),
    Timestamp { val: u32, ecr: u32 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct IcmpSpec {
    pub icmp_type: u8,
    pub code: u8,
    pub mtu: Option<u16>,
    /// What the ICMP message quotes of the packet that caused it.
    pub echoed: Echoed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echoed {
    Tcp { seq: u32, len: u16 },
    Udp { len: u16 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct CallSpec {
    pub name: String,
    pub name_span: Span,
    pub args: Vec<Expr>,
    /// `...END`: a blocking call expected to return at END.
    pub end: Option<i64>,
    pub result: Expr,
    /// The errno expected with it, by name (`EAGAIN`).
    pub errno: Option<String>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `...`: the live value, whatever it is.
    Ellipsis,
    Int(i64),
    Word(String),
    Str(String),
    Or(Box<Expr>, Box<Expr>),
    /// `name=value`, in structures.
    Assign(String, Box<Expr>),
    List(Vec<Expr>),
    /// `{...}` that is none of the named structures below.
    Struct(Vec<Expr>),
    Linger {
        onoff: i64,
        linger: i64,
    },
    SockAddr {
        port: u16,
        addr: String,
    },
    /// `htons(8080)`, `inet_addr("192.0.2.1")`.
    Func(String, Vec<Expr>),
}

impl Event {
    pub fn line(&self) -> u32 {
        self.span.line
    }
}
