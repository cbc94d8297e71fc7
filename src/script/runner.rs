//! Steps through a script's events in order against a [`Backend`], as packetdrill's
//! `run.c`, `run_packet.c` and `run_system_call.c` do, and says where the stack diverged.
//!
//! Semantics kept from packetdrill:
//! - a relative time counts from when the previous event actually happened, except that
//!   consecutive inbound packets count from each other's script time (no drift);
//! - the tolerance is `--tolerance_usecs` (4 ms) or 12.5 % of the gap since the previous
//!   event, whichever is larger;
//! - an outbound packet is the next packet the stack sent for the socket under test;
//!   packets for other sockets are passed over; several consecutive segments are joined
//!   when the script expects one larger segment (a TSO super-segment), unless
//!   `--strict_segments`;
//! - sequence numbers are absolute on SYNs and relative to each side's initial sequence
//!   number otherwise; TCP timestamps the stack sends are mapped from the first one seen;
//! - a blocking call (`+a...b`) runs while later events go on; its result and return
//!   time are checked when it returns. synack checks them between events (an event in
//!   progress finishes first), so a run's first failure does not depend on thread timing.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::ast::*;
use super::backend::*;
use super::dump::{self, TcpView};
use super::symbols;
use super::wire::{self, Seen, SeenBody, SeenTcp};

/// packetdrill's defaults (config.c).
pub const DEFAULT_TOLERANCE_USECS: i64 = 4_000;
pub const DEFAULT_TOLERANCE_PERCENT: f64 = 12.5;
/// packetdrill's port for bind() and connect() with `...` addresses.
const DEFAULT_PORT: u16 = 8080;
/// How long after its expected time the runner waits for an outbound packet before
/// "Timed out waiting for packet" (packetdrill: 2 s).
const SNIFF_GRACE_US: i64 = 2_000_000;
/// How long `*` waits for an outbound packet (packetdrill waits for ever).
const ANY_TIME_WAIT_US: i64 = 60_000_000;
/// How long a blocking call may still be running when the next call starts or the script
/// ends (packetdrill: 1 s).
const AWAIT_IDLE_US: i64 = 1_000_000;
/// How long a call written without `...END` may block before it is an error.
const NONBLOCKING_CALL_LIMIT_US: i64 = 10_000_000;
/// The largest read or write a script may ask for: the backend allocates a buffer of
/// that size for the call.
const MAX_IO_LEN: usize = 64 << 20;
/// The largest IPv4 packet (RFC 791: the total length is 16 bits).
const MAX_IP_LEN: usize = 65_535;
/// Waits in a row after which a backend whose clock has not moved is a bug.
const MAX_STALLS: u32 = 100_000;
/// How often a wait looks at the stop flag (SIGINT), when there is one.
const STOP_CHECK_US: i64 = 100_000;
/// The first port the script's side uses for passive connections.
const FIRST_REMOTE_PORT: u16 = 46_000;

/// How the run is tuned: the defaults, the script's `--` lines, then the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Tuning {
    pub tolerance_usecs: i64,
    pub tolerance_percent: f64,
    pub bind_port: u16,
    pub connect_port: u16,
    /// Check the TS val the stack sends, at this many microseconds a tick (0: not).
    pub tcp_ts_tick_usecs: i64,
    pub strict_segments: bool,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            tolerance_usecs: DEFAULT_TOLERANCE_USECS,
            tolerance_percent: DEFAULT_TOLERANCE_PERCENT,
            bind_port: DEFAULT_PORT,
            connect_port: DEFAULT_PORT,
            tcp_ts_tick_usecs: 0,
            strict_segments: false,
        }
    }
}

/// How one event went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventStatus {
    Passed,
    Failed(String),
    NotReached,
    /// An event for another stack (`// synack-OTHER: EVENT`): not run.
    Skipped,
    /// The stack differs here, as a directive says: the event failed as expected (its
    /// message), or it was replaced by the stack's own lines.
    Differed(String),
}

/// An event where the stack differed from the script as a directive says it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The marked event's line.
    pub line: u32,
    /// The directive's reason.
    pub reason: String,
    /// What the stack did: the marked event's failure, in packetdrill's words; `None`
    /// when the stack's own lines replaced it (they passed).
    pub message: Option<String>,
    /// The lines that replaced it, if any.
    pub replaced_by: Vec<u32>,
}

/// What a run does with one event, by the directives for the stack it runs on.
#[derive(Debug, Clone, Copy)]
enum Plan<'s> {
    Run,
    /// Not for this stack.
    Skip,
    /// Marked as differing: it runs, must fail, and the run goes on.
    Marked(&'s ExpectedFailure),
    /// Marked, and the stack's own lines stand for it: not run.
    Replaced(&'s ExpectedFailure),
}

fn plan<'s>(script: &'s Script, stack: &str, e: &Event) -> Plan<'s> {
    if e.stack.as_deref().is_some_and(|s| s != stack) {
        return Plan::Skip;
    }
    let line = e.line();
    match script
        .expected_failures
        .iter()
        .find(|d| d.stack == stack && d.lines.contains(&line))
    {
        Some(d) if d.replaced_by.is_empty() => Plan::Marked(d),
        Some(d) => Plan::Replaced(d),
        None => Plan::Run,
    }
}

/// Where a run failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub line: u32,
    /// packetdrill's wording: `file:line: error handling packet: ...` and the dumps.
    pub message: String,
}

/// A packet for the capture: when, which way, the bytes and what it was.
#[derive(Debug, Clone)]
pub struct Captured {
    pub at: Duration,
    pub inbound: bool,
    pub bytes: Vec<u8>,
    pub comment: String,
}

/// What one run of a script against one backend did.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub backend: String,
    /// Per event, in the script's order: (line, status).
    pub events: Vec<(u32, EventStatus)>,
    pub failure: Option<Failure>,
    pub packets: Vec<Captured>,
    /// Where the stack differed as marked (the run went on past each).
    pub differences: Vec<Difference>,
    /// Marked events that passed: (line, the directive's reason). The mark is out of
    /// date.
    pub unexpected_passes: Vec<(u32, String)>,
}

/// Runs a parsed script with the given tuning against `backend`.
pub fn run_script(script: &Script, tuning: &Tuning, backend: &mut dyn Backend) -> RunResult {
    run_script_until(script, tuning, backend, None)
}

/// [`run_script`] that stops, as a failure at the event in progress, when `stop` is set
/// (a SIGINT handler's flag): the caller then drops the backend and writes the capture.
pub fn run_script_until(
    script: &Script,
    tuning: &Tuning,
    backend: &mut dyn Backend,
    stop: Option<Arc<AtomicBool>>,
) -> RunResult {
    let mut r = Runner {
        stop,
        line: 0,
        stalls: 0,
        script,
        t: tuning.clone(),
        b: backend,
        queue: VecDeque::new(),
        fds: HashMap::new(),
        conn: None,
        last_time: None,
        last_inbound: false,
        pending: None,
        next_port: FIRST_REMOTE_PORT,
        packets: Vec::new(),
        prev_absolute: None,
        event_offset: 0,
    };
    let mut events: Vec<(u32, EventStatus)> = script
        .events
        .iter()
        .map(|e| (e.line(), EventStatus::NotReached))
        .collect();
    let stack = r.b.name().to_owned();
    let mut differences = Vec::new();
    let mut unexpected_passes = Vec::new();
    let absorb = |events: &mut Vec<(u32, EventStatus)>,
                  differences: &mut Vec<Difference>,
                  f: Failure|
     -> Option<Failure> { absorb(script, &stack, events, differences, f) };
    let mut failure = None;
    if let Some(shell) = &script.init_shell
        && let Err(message) = r.shell(shell)
    {
        failure = Some(Failure {
            line: shell.span.line,
            message: format!("{}:{}: {message}", script.file, shell.span.line),
        });
    }
    if failure.is_none() {
        for (i, event) in script.events.iter().enumerate() {
            // A blocking call that returned is checked before the next event starts.
            if let Err(f) = r.check_finished() {
                failure = absorb(&mut events, &mut differences, f);
                if failure.is_some() {
                    break;
                }
            }
            match plan(script, &stack, event) {
                Plan::Skip => {
                    events[i].1 = EventStatus::Skipped;
                    continue;
                }
                Plan::Replaced(d) => {
                    events[i].1 = EventStatus::Differed(format!(
                        "replaced by line{} {}",
                        if d.replaced_by.len() > 1 { "s" } else { "" },
                        join_lines(&d.replaced_by)
                    ));
                    differences.push(Difference {
                        line: event.line(),
                        reason: d.reason.clone(),
                        message: None,
                        replaced_by: d.replaced_by.clone(),
                    });
                    continue;
                }
                Plan::Run | Plan::Marked(_) => {}
            }
            match r.event(event) {
                Ok(()) => {
                    events[i].1 = EventStatus::Passed;
                    if let Plan::Marked(d) = plan(script, &stack, event) {
                        unexpected_passes.push((event.line(), d.reason.clone()));
                    }
                }
                Err(message) => {
                    events[i].1 = EventStatus::Failed(message.clone());
                    let f = Failure {
                        line: event.line(),
                        message,
                    };
                    failure = absorb(&mut events, &mut differences, f);
                    if failure.is_some() {
                        break;
                    }
                }
            }
        }
    }
    if failure.is_none() {
        if let Err(f) = r.finish() {
            failure = absorb(&mut events, &mut differences, f);
        }
    }
    r.drain();
    // What the stack sent and the script never looked at.
    while let Some(p) = r.queue.pop_front() {
        r.packets.push(Captured {
            at: p.at,
            inbound: false,
            comment: with_note(
                format!(
                    "seen after the script's last look: {}",
                    r.describe_seen(&p.bytes)
                ),
                &p.note,
            ),
            bytes: p.bytes,
        });
    }
    let mut packets = std::mem::take(&mut r.packets);
    packets.sort_by_key(|p| p.at);
    RunResult {
        backend: r.b.name().to_owned(),
        events,
        failure,
        packets,
        differences,
        unexpected_passes,
    }
}

/// `14`, `14, 15`: line numbers for a message.
pub fn join_lines(lines: &[u32]) -> String {
    lines
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A capture comment with what the stack said about the packet, if anything.
fn with_note(comment: String, note: &str) -> String {
    if note.is_empty() {
        comment
    } else {
        format!("{comment}; {note}")
    }
}

/// A failure at a marked event is the difference the mark expects: noted, and the run
/// goes on (`None`). Any other failure ends the run.
fn absorb(
    script: &Script,
    stack: &str,
    events: &mut [(u32, EventStatus)],
    differences: &mut Vec<Difference>,
    f: Failure,
) -> Option<Failure> {
    let marked = script
        .expected_failures
        .iter()
        .find(|d| d.stack == stack && d.replaced_by.is_empty() && d.lines.contains(&f.line));
    match marked {
        Some(d) => {
            if let Some(e) = events.iter_mut().find(|(l, _)| *l == f.line) {
                e.1 = EventStatus::Differed(f.message.clone());
            }
            differences.push(Difference {
                line: f.line,
                reason: d.reason.clone(),
                message: Some(f.message),
                replaced_by: Vec::new(),
            });
            None
        }
        None => {
            mark(events, f.line, &f.message);
            Some(f)
        }
    }
}

fn mark(events: &mut [(u32, EventStatus)], line: u32, message: &str) {
    if let Some(e) = events.iter_mut().find(|(l, _)| *l == line) {
        e.1 = EventStatus::Failed(message.to_owned());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    New,
    Listening,
    Connecting,
    SynSent,
    SynReceived,
    Synchronized,
}

/// The socket under test (packetdrill tests one connection at a time), with both the
/// script's and the live view of its addresses and initial sequence numbers.
#[derive(Debug, Clone)]
struct Conn {
    proto: Proto,
    state: ConnState,
    /// The stack's end.
    local: SocketAddrV4,
    /// The script's end.
    remote: SocketAddrV4,
    /// Whether `local`'s port is known yet (an active open learns it from the SYN).
    local_port_known: bool,
    script_local_isn: u32,
    live_local_isn: u32,
    remote_isn: u32,
    /// An inbound SYN on an existing connection: if the stack answers with a SYN-ACK,
    /// a new connection took the 4-tuple (a SYN into TIME-WAIT) and both sides' numbers
    /// start again from it.
    new_syn: Option<u32>,
    /// TS val: script value -> live value, and the first pair seen.
    ts_map: HashMap<u32, u32>,
    ts_first: Option<(u32, u32)>,
}

impl Conn {
    fn new(proto: Proto, local: SocketAddrV4, remote: SocketAddrV4) -> Self {
        Conn {
            proto,
            state: ConnState::New,
            local,
            remote,
            local_port_known: false,
            script_local_isn: 0,
            live_local_isn: 0,
            remote_isn: 0,
            new_syn: None,
            ts_map: HashMap::new(),
            ts_first: None,
        }
    }

    fn local_offset(&self, syn: bool) -> u32 {
        if syn {
            self.live_local_isn.wrapping_sub(self.script_local_isn)
        } else {
            self.live_local_isn
        }
    }

    fn remote_offset(&self, syn: bool) -> u32 {
        if syn { 0 } else { self.remote_isn }
    }
}

struct Pending {
    id: CallId,
    line: u32,
    name: String,
    /// When the call started (script time after adjustment) and should return.
    start: i64,
    end: i64,
    spec: CallSpec,
    call: Call,
}

struct Runner<'a> {
    script: &'a Script,
    t: Tuning,
    b: &'a mut dyn Backend,
    /// What the stack sent that no outbound event has looked at yet.
    queue: VecDeque<Emitted>,
    /// Script descriptor -> the backend's socket.
    fds: HashMap<i64, SocketId>,
    conn: Option<Conn>,
    /// The adjusted time of the previous event.
    last_time: Option<i64>,
    last_inbound: bool,
    pending: Option<Pending>,
    next_port: u16,
    packets: Vec<Captured>,
    prev_absolute: Option<i64>,
    /// What the current event's relative time counts from.
    event_offset: i64,
    stop: Option<Arc<AtomicBool>>,
    /// The line of the event in progress.
    line: u32,
    /// Waits in a row that did not move the backend's clock.
    stalls: u32,
}

fn us(d: Duration) -> i64 {
    d.as_micros() as i64
}

fn dur(us: i64) -> Duration {
    Duration::from_micros(us.max(0) as u64)
}

/// A packet expected by the script, resolved to the script's numbering.
enum Expect<'s> {
    Tcp(&'s TcpSpec),
    Udp(u16),
    Icmp(&'s IcmpSpec),
}

impl Runner<'_> {
    fn file(&self) -> &str {
        &self.script.file
    }

    fn now(&self) -> i64 {
        us(self.b.now())
    }

    /// Moves what the backend has sent into the queue.
    fn drain(&mut self) {
        while let Some(p) = self.b.take_emitted() {
            self.queue.push_back(p);
        }
    }

    /// Lets the backend's time pass towards `deadline` (it may return early), in slices
    /// short enough to notice the stop flag.
    fn pause(&mut self, deadline: i64) -> Result<(), String> {
        let mut until = deadline;
        if let Some(stop) = &self.stop {
            if stop.load(Ordering::Relaxed) {
                return Err(format!(
                    "{}:{}: interrupted (SIGINT or SIGTERM)",
                    self.script.file, self.line
                ));
            }
            until = until.min(self.now() + STOP_CHECK_US);
        }
        let before = self.now();
        self.b.wait(dur(until)).map_err(|e| e.to_string())?;
        // A backend must move its clock or have something to hand over; one that does
        // neither would hold the runner in a loop for ever.
        if self.now() == before && before < until {
            self.stalls += 1;
            if self.stalls > MAX_STALLS {
                return Err(format!(
                    "{}:{}: the {} backend's clock does not move (a bug in the backend)",
                    self.script.file,
                    self.line,
                    self.b.name()
                ));
            }
        } else {
            self.stalls = 0;
        }
        Ok(())
    }

    fn wait_until(&mut self, t: i64) -> Result<(), String> {
        loop {
            self.drain();
            if self.now() >= t {
                return Ok(());
            }
            self.pause(t)?;
        }
    }

    fn tolerance(&self, script_us: i64, last: Option<i64>) -> i64 {
        let mut tol = self.t.tolerance_usecs;
        if let Some(last) = last {
            let dynamic = (self.t.tolerance_percent / 100.0 * (script_us - last) as f64) as i64;
            tol = tol.max(dynamic);
        }
        tol
    }

    /// packetdrill's verify_time().
    fn verify_time(
        &self,
        timing: Timing,
        start: i64,
        end: i64,
        actual: i64,
        last: Option<i64>,
        what: &str,
    ) -> Result<(), String> {
        let tol = self.tolerance(start, last);
        match timing {
            Timing::Any => Ok(()),
            Timing::AbsoluteRange(..) | Timing::RelativeRange(..) => {
                if actual < start - tol || actual > end + tol {
                    Err(match timing {
                        Timing::AbsoluteRange(..) => format!(
                            "timing error: expected {what} in time range {}~{} sec but happened at {} sec",
                            dump::secs(start),
                            dump::secs(end),
                            dump::secs(actual)
                        ),
                        _ => {
                            // packetdrill prints a relative range from the event's base.
                            let off = self.event_offset;
                            format!(
                                "timing error: expected {what} in relative time range +{}~+{} sec but happened at {:+.6} sec",
                                dump::secs(start - off),
                                dump::secs(end - off),
                                (actual - off) as f64 / 1e6
                            )
                        }
                    })
                } else {
                    Ok(())
                }
            }
            _ => {
                if actual < start - tol || actual > start + tol {
                    Err(format!(
                        "timing error: expected {what} at {} sec but happened at {} sec; tolerance {} sec",
                        dump::secs(start),
                        dump::secs(actual),
                        dump::secs(tol)
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// The event's time (and end) on the run's clock, as packetdrill's
    /// adjust_relative_event_times().
    fn adjust(&self, event: &Event) -> (i64, i64, i64) {
        let inbound = matches!(&event.action, Action::Packet(p) if p.dir == Dir::Inbound);
        let offset = || {
            if self.last_inbound && inbound {
                self.last_time.unwrap_or(0)
            } else {
                self.now()
            }
        };
        match event.time {
            Timing::Absolute(t) => (t, t, 0),
            Timing::AbsoluteRange(a, b) => (a, b, 0),
            Timing::Relative(t) => {
                let o = offset();
                (o + t, o + t, o)
            }
            Timing::RelativeRange(a, b) => {
                let o = offset();
                (o + a, o + b, o)
            }
            Timing::Any => {
                let o = offset();
                (o, o, o)
            }
        }
    }

    fn event(&mut self, event: &Event) -> Result<(), String> {
        let (start, end, offset) = self.adjust(event);
        self.event_offset = offset;
        self.line = event.line();
        let last = self.last_time;
        let absolute = matches!(event.time, Timing::Absolute(_) | Timing::AbsoluteRange(..));
        if let Some(l) = self.prev_absolute
            && absolute
            && start < l
        {
            return Err(format!(
                "{}:{}: time goes backward in script from {} usec to {} usec",
                self.file(),
                event.line(),
                l,
                start
            ));
        }
        let inbound = matches!(&event.action, Action::Packet(p) if p.dir == Dir::Inbound);
        let result = match &event.action {
            Action::Packet(p) if p.dir == Dir::Inbound => self.inbound(event, p, start, last),
            Action::Packet(p) => self.outbound(event, p, start, end, last),
            Action::Call(c) => self.call(event, c, start, offset, last),
            Action::Shell(s) => self
                .shell(s)
                .map_err(|m| format!("{}:{}: {m}", self.file(), event.line())),
        };
        self.last_time = Some(start);
        self.last_inbound = inbound;
        // packetdrill compares an absolute time only with an absolute time before it.
        self.prev_absolute = absolute.then_some(start);
        result
    }

    fn shell(&mut self, shell: &Shell) -> Result<(), String> {
        for cmd in shell_commands(&shell.text).map_err(|e| e.to_string())? {
            match cmd {
                ShellCommand::Defaults | ShellCommand::Restore => {}
                ShellCommand::Sysctl(k, v) => self
                    .b
                    .set_sysctl(&k, &v)
                    .map_err(|e| format!("error executing shell command: {e}"))?,
            }
        }
        Ok(())
    }

    // ----- inbound packets -----

    fn inbound(
        &mut self,
        event: &Event,
        p: &PacketSpec,
        t: i64,
        last: Option<i64>,
    ) -> Result<(), String> {
        self.wait_until(t)?;
        let now = self.now();
        let line = event.line();
        self.verify_time(event.time, t, t, now, last, "inbound packet")
            .map_err(|e| format!("{}:{line}: {e}", self.file()))?;
        let bytes = self
            .build_inbound(p)
            .map_err(|e| format!("{}:{line}: error handling packet: {e}", self.file()))?;
        self.b
            .inject(&bytes)
            .map_err(|e| format!("{}:{line}: error handling packet: {e}", self.file()))?;
        let text = self.script_dump(&p.body, true);
        self.packets.push(Captured {
            at: self.b.now(),
            inbound: true,
            bytes,
            comment: with_note(
                format!("injected (line {line}): {text}"),
                self.b.inbound_note(),
            ),
        });
        Ok(())
    }

    /// Finds or makes the socket under test for an inbound packet (packetdrill's
    /// handle_listen_for_script_packet).
    fn conn_for_inbound(&mut self, proto: Proto) -> &mut Conn {
        let listening = self
            .conn
            .as_ref()
            .is_none_or(|c| c.state == ConnState::Listening && c.proto == proto);
        if listening && proto == Proto::Tcp {
            let local_port = self
                .conn
                .as_ref()
                .filter(|c| c.local_port_known)
                .map_or(self.t.bind_port, |c| c.local.port());
            let port = self.fresh_port();
            let mut c = Conn::new(
                proto,
                SocketAddrV4::new(self.b.local_addr(), local_port),
                SocketAddrV4::new(self.b.remote_addr(), port),
            );
            c.local_port_known = true;
            c.state = ConnState::SynReceived;
            self.conn = Some(c);
        }
        if self.conn.is_none() {
            let port = self.fresh_port();
            let mut c = Conn::new(
                proto,
                SocketAddrV4::new(self.b.local_addr(), self.t.bind_port),
                SocketAddrV4::new(self.b.remote_addr(), port),
            );
            c.local_port_known = true;
            self.conn = Some(c);
        }
        self.conn.as_mut().expect("made above")
    }

    fn fresh_port(&mut self) -> u16 {
        let p = self.next_port;
        self.next_port = self.next_port.wrapping_add(1).max(FIRST_REMOTE_PORT);
        p
    }

    fn build_inbound(&mut self, p: &PacketSpec) -> Result<Vec<u8>, String> {
        match &p.body {
            PacketBody::Tcp(tcp) => {
                let fresh = self
                    .conn
                    .as_ref()
                    .is_none_or(|c| c.state == ConnState::Listening);
                let c = self.conn_for_inbound(Proto::Tcp);
                let syn = tcp.flags & flag::SYN != 0;
                let ack = tcp.flags & flag::ACK != 0;
                if fresh {
                    c.remote_isn = tcp.seq;
                } else if syn
                    && !ack
                    && matches!(c.state, ConnState::Connecting | ConnState::SynSent)
                {
                    // Simultaneous open: the script's SYN crosses the stack's.
                    c.remote_isn = tcp.seq;
                } else if c.state == ConnState::SynSent && syn && ack {
                    c.remote_isn = tcp.seq;
                    c.state = ConnState::Synchronized;
                } else if syn && !ack && c.state == ConnState::Synchronized {
                    c.new_syn = Some(tcp.seq);
                }
                if c.state == ConnState::SynReceived && ack && !syn && !fresh {
                    c.state = ConnState::Synchronized;
                }
                let seq = tcp.seq.wrapping_add(c.remote_offset(syn));
                let ack_off = c.local_offset(syn);
                let ack_no = if ack {
                    tcp.ack.wrapping_add(ack_off)
                } else {
                    tcp.ack
                };
                let mut options = tcp.options.clone().unwrap_or_default();
                for o in &mut options {
                    match o {
                        TcpOpt::Sack(blocks) => {
                            for (l, r) in blocks.iter_mut() {
                                *l = l.wrapping_add(ack_off);
                                *r = r.wrapping_add(ack_off);
                            }
                        }
                        TcpOpt::Timestamp { ecr, .. } if ack => {
                            // The echo of a TS val the stack sent: its live value.
                            match c.ts_map.get(ecr) {
                                Some(live) => *ecr = *live,
                                None => {
                                    return Err(format!(
                                        "unable to infer live TS ecr for script TS ecr {ecr};  no matching or preceding outbound TS val"
                                    ));
                                }
                            }
                        }
                        _ => {}
                    }
                }
                let (sport, dport) = tcp.ports.unwrap_or((c.remote.port(), c.local.port()));
                if 40 + wire::encode_options(&options).len() + usize::from(tcp.len) > MAX_IP_LEN {
                    return Err(format!(
                        "a packet of {} bytes of payload does not fit in IPv4",
                        tcp.len
                    ));
                }
                Ok(wire::build_tcp(&wire::TcpOut {
                    src: *c.remote.ip(),
                    dst: *c.local.ip(),
                    sport,
                    dport,
                    seq,
                    ack: ack_no,
                    flags: tcp.flags,
                    win: tcp.win.unwrap_or(0),
                    urg: tcp.urg,
                    options: &options,
                    payload_len: usize::from(tcp.len),
                }))
            }
            PacketBody::Udp { len, ports } => {
                let c = self.conn_for_inbound(Proto::Udp);
                let (sport, dport) = ports.unwrap_or((c.remote.port(), c.local.port()));
                if 28 + usize::from(*len) > MAX_IP_LEN {
                    return Err(format!("a datagram of {len} bytes does not fit in IPv4"));
                }
                Ok(wire::build_udp(
                    *c.remote.ip(),
                    *c.local.ip(),
                    sport,
                    dport,
                    usize::from(*len),
                ))
            }
            PacketBody::Icmp(icmp) => {
                let Some(c) = self.conn.as_ref() else {
                    return Err("no matching socket for script packet".into());
                };
                // RFC 792: the IP header and the first 8 bytes of the packet it answers,
                // which went from the stack to the script.
                let quoted_body = match icmp.echoed {
                    Echoed::Tcp { seq, len } => {
                        let seq = seq.wrapping_add(c.local_offset(false));
                        let mut b = wire::build_tcp(&wire::TcpOut {
                            src: *c.local.ip(),
                            dst: *c.remote.ip(),
                            sport: c.local.port(),
                            dport: c.remote.port(),
                            seq,
                            ack: 0,
                            flags: 0,
                            win: 0,
                            urg: 0,
                            options: &[],
                            payload_len: usize::from(len),
                        });
                        b.truncate(28);
                        b
                    }
                    Echoed::Udp { len } => {
                        let mut b = wire::build_udp(
                            *c.local.ip(),
                            *c.remote.ip(),
                            c.local.port(),
                            c.remote.port(),
                            usize::from(len),
                        );
                        b.truncate(28);
                        b
                    }
                };
                Ok(wire::build_icmp(
                    *c.remote.ip(),
                    *c.local.ip(),
                    icmp.icmp_type,
                    icmp.code,
                    icmp.mtu,
                    &quoted_body,
                ))
            }
        }
    }

    // ----- outbound packets -----

    /// Whether a packet the stack sent belongs to the socket under test; learns the
    /// local port of an active open from its SYN.
    fn belongs(&mut self, seen: &Seen) -> bool {
        let Some(c) = self.conn.as_mut() else {
            return false;
        };
        if seen.src != *c.local.ip() || seen.dst != *c.remote.ip() {
            return false;
        }
        match (&seen.body, c.proto) {
            (SeenBody::Tcp(t), Proto::Tcp) => {
                if c.state == ConnState::Connecting
                    && t.flags & (flag::SYN | flag::ACK) == flag::SYN
                    && t.dport == c.remote.port()
                {
                    c.local.set_port(t.sport);
                    c.local_port_known = true;
                    return true;
                }
                c.local_port_known && t.sport == c.local.port() && t.dport == c.remote.port()
            }
            (SeenBody::Udp { sport, dport, .. }, Proto::Udp) => {
                if !c.local_port_known && *dport == c.remote.port() {
                    c.local.set_port(*sport);
                    c.local_port_known = true;
                }
                *sport == c.local.port() && *dport == c.remote.port()
            }
            (SeenBody::Icmp { .. }, _) => true,
            _ => false,
        }
    }

    /// The next packet for the socket under test, waiting until `deadline`.
    fn next_packet(&mut self, deadline: i64) -> Result<Option<(Emitted, Seen)>, String> {
        loop {
            self.drain();
            while let Some(p) = self.queue.pop_front() {
                match wire::parse(&p.bytes) {
                    Some(seen) if self.belongs(&seen) => return Ok(Some((p, seen))),
                    _ => {
                        let comment = with_note(
                            format!(
                                "not for the script's socket: {}",
                                self.describe_seen(&p.bytes)
                            ),
                            &p.note,
                        );
                        self.packets.push(Captured {
                            at: p.at,
                            inbound: false,
                            bytes: p.bytes,
                            comment,
                        });
                    }
                }
            }
            if self.now() >= deadline {
                return Ok(None);
            }
            self.pause(deadline)?;
        }
    }

    fn outbound(
        &mut self,
        event: &Event,
        p: &PacketSpec,
        start: i64,
        end: i64,
        last: Option<i64>,
    ) -> Result<(), String> {
        let line = event.line();
        let file = self.file().to_owned();
        let fail = |e: String| format!("{file}:{line}: error handling packet: {e}");
        let expect = match &p.body {
            PacketBody::Tcp(t) => Expect::Tcp(t),
            PacketBody::Udp { len, .. } => Expect::Udp(*len),
            PacketBody::Icmp(i) => Expect::Icmp(i),
        };
        if self.conn.is_none() {
            return Err(fail("no matching socket for script packet".into()));
        }
        let deadline = if event.time == Timing::Any {
            self.now() + ANY_TIME_WAIT_US
        } else {
            start.max(end) + SNIFF_GRACE_US
        };
        let Some((first, seen)) = self.next_packet(deadline)? else {
            return Err(fail("Timed out waiting for packet".into()));
        };
        let script_text = self.script_dump(&p.body, false);
        let mut parts = vec![(first, seen)];
        // Join segments into the one larger segment the script expects (TSO/GSO).
        if let Expect::Tcp(t) = &expect
            && !self.t.strict_segments
        {
            let want = usize::from(t.len);
            loop {
                let have: usize = parts.iter().map(|(_, s)| tcp_len(s)).sum();
                let last_seen = &parts.last().expect("one at least").1;
                if have >= want || tcp_len(last_seen) == 0 {
                    break;
                }
                let prev_len = tcp_len(last_seen);
                let Some((next, seen)) = self.next_packet(deadline)? else {
                    break;
                };
                let fits = match (&last_seen.body, &seen.body) {
                    (SeenBody::Tcp(a), SeenBody::Tcp(b)) => {
                        b.seq == a.seq.wrapping_add(a.payload_len as u32)
                            && a.flags & !(flag::PSH | flag::FIN)
                                == b.flags & !(flag::PSH | flag::FIN)
                            && a.ack == b.ack
                            && (tcp_len(&seen) == prev_len || tcp_len(&seen) + have >= want)
                    }
                    _ => false,
                };
                if !fits {
                    // Not a piece of the same super-segment: leave it for the next event.
                    self.queue.push_front(next);
                    break;
                }
                parts.push((next, seen));
            }
        }
        let at = us(parts.last().expect("one at least").0.at);
        let first_at = us(parts[0].0.at);
        let joined = join(&parts);
        let c = self.conn.as_mut().expect("checked above");
        let result = verify(c, &expect, &joined, &self.t, start);
        let actual_text = describe_mapped(c, &joined);
        let dumps = format!(
            "\n{}\n{}",
            dump::line("script", start, &script_text),
            dump::line("actual", at, &actual_text)
        );
        let result = result.and_then(|()| {
            self.verify_time(event.time, start, end, first_at, last, "outbound packet")
        });
        let n = parts.len();
        for (i, (e, _)) in parts.into_iter().enumerate() {
            let piece = if n > 1 {
                format!(" (piece {} of {n})", i + 1)
            } else {
                String::new()
            };
            let comment = match &result {
                Ok(()) => format!("expected by the script (line {line}){piece}: {actual_text}"),
                Err(e) => {
                    format!("line {line} expected {script_text}; seen{piece}: {actual_text} ({e})")
                }
            };
            self.packets.push(Captured {
                at: e.at,
                inbound: false,
                comment: with_note(comment, &e.note),
                bytes: e.bytes,
            });
        }
        result.map_err(|e| fail(e + &dumps))
    }

    /// A packet written the script's way, for the capture's comments.
    fn describe_seen(&self, bytes: &[u8]) -> String {
        match wire::parse(bytes) {
            Some(seen) => match (&self.conn, &seen.body) {
                (Some(c), SeenBody::Tcp(_)) if seen.src == *c.local.ip() => {
                    describe_mapped(c, &seen)
                }
                _ => describe_raw(&seen),
            },
            None => format!("{} bytes, not IPv4", bytes.len()),
        }
    }

    fn script_dump(&self, body: &PacketBody, inbound: bool) -> String {
        match body {
            PacketBody::Tcp(t) => {
                let mut text = dump::tcp(&TcpView {
                    flags: t.flags,
                    seq: t.seq,
                    len: usize::from(t.len),
                    ack: t.ack,
                    win: t.win,
                    options: t.options.clone().unwrap_or_default(),
                });
                if t.options.is_none() && !inbound {
                    text.push_str(" <...>");
                }
                text
            }
            PacketBody::Udp { len, .. } => format!("udp ({len})"),
            PacketBody::Icmp(i) => format!("icmp type {} code {}", i.icmp_type, i.code),
        }
    }

    // ----- system calls -----

    fn call(
        &mut self,
        event: &Event,
        spec: &CallSpec,
        start: i64,
        offset: i64,
        last: Option<i64>,
    ) -> Result<(), String> {
        let line = event.line();
        let file = self.file().to_owned();
        let name = spec.name.clone();
        let rt = |e: String| format!("{file}:{line}: runtime error in {name} call: {e}");
        // A call waits for a blocking call in progress to return (packetdrill waits 1 s).
        if self.pending.is_some() {
            let limit = self.now() + AWAIT_IDLE_US;
            while self.pending.is_some() && self.now() < limit {
                self.check_finished().map_err(|f| f.message)?;
                if self.pending.is_some() {
                    self.pause(limit)?;
                }
            }
            self.check_finished().map_err(|f| f.message)?;
            if spec.end.is_some() && self.pending.is_some() {
                return Err(rt("blocking system call while another blocking system call is already in progress".into()));
            }
        }
        self.wait_until(start)?;
        let now = self.now();
        self.verify_time(
            Timing::Absolute(start),
            start,
            start,
            now,
            last,
            "system call start",
        )
        .map_err(|e| format!("{file}:{line}: {e}"))?;
        let call = self.resolve_call(spec).map_err(&rt)?;
        self.before_call(&call);
        let started = self.b.start_call(&call).map_err(|e| rt(e.to_string()))?;
        match (started, spec.end) {
            (Started::Done(result), Some(end)) => {
                let end = if matches!(event.time, Timing::Relative(_)) {
                    end + offset
                } else {
                    end
                };
                self.check_result(spec, &call, result).map_err(&rt)?;
                let now = self.now();
                self.verify_time(
                    Timing::Absolute(end),
                    end,
                    end,
                    now,
                    Some(start),
                    "system call return",
                )
                .map_err(|e| format!("{file}:{line}: {e}"))
            }
            (Started::Done(result), None) => self.check_result(spec, &call, result).map_err(&rt),
            (Started::Blocked(id), Some(end)) => {
                let relative = matches!(event.time, Timing::Relative(_));
                self.pending = Some(Pending {
                    id,
                    line,
                    name: spec.name.clone(),
                    start,
                    end: if relative { end + offset } else { end },
                    spec: spec.clone(),
                    call,
                });
                Ok(())
            }
            (Started::Blocked(id), None) => {
                // Written as a call that returns at once, but it waits: wait with it.
                let limit = self.now() + NONBLOCKING_CALL_LIMIT_US;
                loop {
                    self.drain();
                    if let Some(f) = self.b.take_finished() {
                        if f.id == id {
                            return self.check_result(spec, &call, f.result).map_err(&rt);
                        }
                        continue;
                    }
                    if self.now() >= limit {
                        return Err(rt(format!(
                            "the call blocked for more than {} s; a call that waits is written with the time it returns: +T...END",
                            NONBLOCKING_CALL_LIMIT_US / 1_000_000
                        )));
                    }
                    self.pause(limit)?;
                }
            }
        }
    }

    /// What the socket under test learns from a call before it is made.
    fn before_call(&mut self, call: &Call) {
        match call {
            Call::Listen { .. } => {
                if let Some(c) = self.conn.as_mut() {
                    c.state = ConnState::Listening;
                }
            }
            Call::Connect { addr, .. } => {
                if let Some(c) = self.conn.as_mut() {
                    c.remote = *addr;
                    if c.proto == Proto::Tcp {
                        c.state = ConnState::Connecting;
                        c.local_port_known = false;
                    }
                }
            }
            Call::Bind { addr, .. } => {
                if let Some(c) = self.conn.as_mut()
                    && addr.port() != 0
                {
                    c.local.set_port(addr.port());
                    c.local_port_known = true;
                }
            }
            _ => {}
        }
    }

    fn fd(&self, e: &Expr) -> Result<SocketId, String> {
        let n = self.int(e)?;
        self.fds
            .get(&n)
            .copied()
            .ok_or_else(|| format!("unable to find fd with script fd {n}"))
    }

    fn int(&self, e: &Expr) -> Result<i64, String> {
        match e {
            Expr::Int(n) => Ok(*n),
            Expr::Word(w) => symbols::symbol(w).ok_or_else(|| format!("unknown symbol '{w}'")),
            Expr::Or(a, b) => Ok(self.int(a)? | self.int(b)?),
            Expr::List(items) if items.len() == 1 => self.int(&items[0]),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }

    fn addr(&self, e: &Expr, default: SocketAddrV4) -> Result<SocketAddrV4, String> {
        match e {
            Expr::Ellipsis => Ok(default),
            Expr::SockAddr { port, addr } => {
                let ip: Ipv4Addr = addr
                    .parse()
                    .map_err(|_| format!("invalid IPv4 address \"{addr}\""))?;
                // packetdrill's defaults stand for the live addresses.
                let ip = match ip.octets() {
                    [192, 168, 0, 1] => self.b.local_addr(),
                    [192, 0, 2, 1] => self.b.remote_addr(),
                    _ => ip,
                };
                Ok(SocketAddrV4::new(ip, *port))
            }
            other => Err(format!("expected ... or a sockaddr, found {other:?}")),
        }
    }

    fn arg<'e>(&self, spec: &'e CallSpec, i: usize) -> Result<&'e Expr, String> {
        spec.args
            .get(i)
            .ok_or_else(|| "Argument list too short".to_owned())
    }

    fn check_args(&self, spec: &CallSpec, n: &[usize]) -> Result<(), String> {
        if n.contains(&spec.args.len()) {
            Ok(())
        } else {
            Err(format!(
                "Expected {} args but got {}",
                n[0],
                spec.args.len()
            ))
        }
    }

    fn resolve_call(&mut self, spec: &CallSpec) -> Result<Call, String> {
        let a = |i| self.arg(spec, i);
        Ok(match spec.name.as_str() {
            "socket" => {
                self.check_args(spec, &[3])?;
                let domain = match a(0)? {
                    Expr::Ellipsis => i64::from(libc::AF_INET),
                    e => self.int(e)?,
                };
                if domain != i64::from(libc::AF_INET) {
                    return Err("synack script runs IPv4 only (AF_INET)".into());
                }
                Call::Socket {
                    domain: domain as i32,
                    ty: self.int(a(1)?)? as i32,
                    protocol: self.int(a(2)?)? as i32,
                }
            }
            "bind" => {
                self.check_args(spec, &[3])?;
                let default = SocketAddrV4::new(self.b.local_addr(), self.t.bind_port);
                Call::Bind {
                    fd: self.fd(a(0)?)?,
                    addr: self.addr(a(1)?, default)?,
                }
            }
            "listen" => {
                self.check_args(spec, &[2])?;
                Call::Listen {
                    fd: self.fd(a(0)?)?,
                    backlog: self.int(a(1)?)? as i32,
                }
            }
            "accept" | "accept4" => Call::Accept {
                fd: self.fd(a(0)?)?,
            },
            "connect" => {
                self.check_args(spec, &[3])?;
                let default = SocketAddrV4::new(self.b.remote_addr(), self.t.connect_port);
                Call::Connect {
                    fd: self.fd(a(0)?)?,
                    addr: self.addr(a(1)?, default)?,
                }
            }
            "read" | "write" | "recv" | "send" => {
                let flags = if matches!(spec.name.as_str(), "recv" | "send") {
                    self.check_args(spec, &[4])?;
                    self.int(a(3)?)? as i32
                } else {
                    self.check_args(spec, &[3])?;
                    0
                };
                if !matches!(a(1)?, Expr::Ellipsis | Expr::Word(_)) {
                    return Err("Expected ... or NULL for buffer".into());
                }
                let fd = self.fd(a(0)?)?;
                let len =
                    usize::try_from(self.int(a(2)?)?).map_err(|_| "negative length".to_owned())?;
                if len > MAX_IO_LEN {
                    return Err(format!(
                        "length {len} is more than synack script allows ({MAX_IO_LEN} bytes)"
                    ));
                }
                if matches!(spec.name.as_str(), "read" | "recv") {
                    Call::Recv { fd, len, flags }
                } else {
                    Call::Send { fd, len, flags }
                }
            }
            "shutdown" => {
                self.check_args(spec, &[2])?;
                Call::Shutdown {
                    fd: self.fd(a(0)?)?,
                    how: self.int(a(1)?)? as i32,
                }
            }
            "close" => {
                self.check_args(spec, &[1])?;
                Call::Close {
                    fd: self.fd(a(0)?)?,
                }
            }
            "fcntl" => {
                if !(2..=3).contains(&spec.args.len()) {
                    return Err(format!(
                        "fcntl expected 2-3 args but got {}",
                        spec.args.len()
                    ));
                }
                Call::Fcntl {
                    fd: self.fd(a(0)?)?,
                    cmd: self.int(a(1)?)? as i32,
                    arg: match spec.args.get(2) {
                        Some(e) => Some(self.int(e)?),
                        None => None,
                    },
                }
            }
            "setsockopt" => {
                self.check_args(spec, &[5])?;
                let value = match a(3)? {
                    Expr::Linger { onoff, linger } => OptValue::Linger {
                        onoff: *onoff as i32,
                        linger: *linger as i32,
                    },
                    e => OptValue::Int(self.int(e)? as i32),
                };
                Call::SetSockOpt {
                    fd: self.fd(a(0)?)?,
                    level: self.int(a(1)?)? as i32,
                    name: self.int(a(2)?)? as i32,
                    value,
                }
            }
            "getsockopt" => {
                self.check_args(spec, &[5])?;
                Call::GetSockOpt {
                    fd: self.fd(a(0)?)?,
                    level: self.int(a(1)?)? as i32,
                    name: self.int(a(2)?)? as i32,
                }
            }
            other => return Err(format!("Unknown system call: '{other}'")),
        })
    }

    /// packetdrill's end_syscall(): the result, then the errno, then what the call means
    /// for the script's descriptors.
    fn check_result(&mut self, spec: &CallSpec, call: &Call, r: CallResult) -> Result<(), String> {
        let expected = self.int(&spec.result)?;
        let fd_mode = matches!(call, Call::Socket { .. } | Call::Accept { .. });
        let with_errno = || format!("with errno {} ({})", r.errno, symbols::strerror(r.errno));
        if fd_mode && expected >= 0 {
            if r.ret < 0 {
                return Err(format!(
                    "Expected non-negative result but got {} {}",
                    r.ret,
                    with_errno()
                ));
            }
        } else if r.ret != expected {
            return Err(format!(
                "Expected result {expected} but got {} {}",
                r.ret,
                with_errno()
            ));
        }
        if let Some(name) = &spec.errno {
            let want = symbols::errno(name).ok_or_else(|| format!("unknown errno '{name}'"))?;
            if want != r.errno {
                return Err(format!(
                    "Expected errno {want} ({}) but got {} ({})",
                    symbols::strerror(want),
                    r.errno,
                    symbols::strerror(r.errno)
                ));
            }
        }
        match call {
            Call::Socket { ty, .. } if r.ret >= 0 => {
                if self.fds.contains_key(&expected) {
                    return Err(format!("duplicate fd {expected} in script"));
                }
                self.fds.insert(expected, r.ret as SocketId);
                let proto = if ty & 0xF == libc::SOCK_DGRAM {
                    Proto::Udp
                } else {
                    Proto::Tcp
                };
                self.conn = Some(Conn::new(
                    proto,
                    SocketAddrV4::new(self.b.local_addr(), 0),
                    SocketAddrV4::new(self.b.remote_addr(), self.t.connect_port),
                ));
            }
            Call::Accept { .. } if r.ret >= 0 => {
                if self.fds.contains_key(&expected) {
                    return Err(format!("duplicate fd {expected} in script"));
                }
                self.fds.insert(expected, r.ret as SocketId);
            }
            Call::Close { fd } if r.ret == 0 => {
                self.fds.retain(|_, v| v != fd);
            }
            Call::GetSockOpt { .. } => {
                if let (Some(Expr::List(want)), Some(got)) = (spec.args.get(3), r.value)
                    && let [w] = want.as_slice()
                {
                    let w = self.int(w)?;
                    if w != got {
                        return Err(format!(
                            "Bad getsockopt optval: expected: {w} actual: {got}"
                        ));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Checks a blocking call that returned. `waiting`: the runner is waiting for it.
    fn check_finished(&mut self) -> Result<(), Failure> {
        self.drain();
        let Some(p) = &self.pending else {
            return Ok(());
        };
        let id = p.id;
        let Some(f) = self.b.take_finished() else {
            return Ok(());
        };
        if f.id != id {
            return Ok(());
        }
        let p = self.pending.take().expect("checked above");
        let file = self.file().to_owned();
        let fail = |message: String| Failure {
            line: p.line,
            message,
        };
        self.check_result(&p.spec, &p.call, f.result).map_err(|e| {
            fail(format!(
                "{file}:{}: runtime error in {} call: {e}",
                p.line, p.name
            ))
        })?;
        self.verify_time(
            Timing::Absolute(p.end),
            p.end,
            p.end,
            us(f.at),
            Some(p.start),
            "system call return",
        )
        .map_err(|e| fail(format!("{file}:{}: {e}", p.line)))
    }

    fn finish(&mut self) -> Result<(), Failure> {
        if let Some(shell) = &self.script.cleanup_shell
            && let Err(m) = self.shell(shell)
        {
            return Err(Failure {
                line: shell.span.line,
                message: format!("{}:{}: {m}", self.file(), shell.span.line),
            });
        }
        if self.pending.is_some() {
            let limit = self.now() + AWAIT_IDLE_US;
            loop {
                self.check_finished()?;
                let Some(p) = &self.pending else { break };
                if self.now() >= limit {
                    return Err(Failure {
                        line: p.line,
                        message: format!(
                            "{}:{}: runtime error: exiting while a blocking system call is in progress",
                            self.file(),
                            p.line
                        ),
                    });
                }
                let line = p.line;
                self.pause(limit)
                    .map_err(|message| Failure { line, message })?;
            }
        }
        Ok(())
    }
}

fn tcp_len(s: &Seen) -> usize {
    match &s.body {
        SeenBody::Tcp(t) => t.payload_len,
        _ => 0,
    }
}

/// Joins the pieces of a super-segment into one view: the first header, all the
/// payload, PSH and FIN from the last piece.
fn join(parts: &[(Emitted, Seen)]) -> Seen {
    let mut joined = parts[0].1.clone();
    if parts.len() > 1 {
        let total: usize = parts.iter().map(|(_, s)| tcp_len(s)).sum();
        let zero = parts.iter().all(|(_, s)| match &s.body {
            SeenBody::Tcp(t) => t.payload_zero,
            _ => true,
        });
        let last_flags = match &parts.last().expect("several").1.body {
            SeenBody::Tcp(t) => t.flags,
            _ => 0,
        };
        if let SeenBody::Tcp(t) = &mut joined.body {
            t.payload_len = total;
            t.payload_zero = zero;
            t.flags |= last_flags & (flag::PSH | flag::FIN);
        }
    }
    joined
}

/// The TCP fields of a packet the stack sent, in the script's numbering.
fn mapped(c: &Conn, t: &SeenTcp) -> TcpView {
    let syn = t.flags & flag::SYN != 0;
    let seq = t.seq.wrapping_sub(c.local_offset(syn));
    let ack_off = c.remote_offset(syn);
    let ack = if t.flags & flag::ACK != 0 {
        t.ack.wrapping_sub(ack_off)
    } else {
        t.ack
    };
    let options = t
        .options
        .iter()
        .map(|o| match o {
            TcpOpt::Sack(blocks) => TcpOpt::Sack(
                blocks
                    .iter()
                    .map(|(l, r)| (l.wrapping_sub(ack_off), r.wrapping_sub(ack_off)))
                    .collect(),
            ),
            TcpOpt::Timestamp { val, ecr } => TcpOpt::Timestamp {
                val: match c.ts_first {
                    Some((script, live)) => script.wrapping_add(val.wrapping_sub(live)),
                    None => *val,
                },
                ecr: *ecr,
            },
            o => o.clone(),
        })
        .collect();
    TcpView {
        flags: t.flags,
        seq,
        len: t.payload_len,
        ack,
        win: Some(t.win),
        options,
    }
}

fn describe_mapped(c: &Conn, s: &Seen) -> String {
    match &s.body {
        SeenBody::Tcp(t) => dump::tcp(&mapped(c, t)),
        _ => describe_raw(s),
    }
}

fn describe_raw(s: &Seen) -> String {
    match &s.body {
        SeenBody::Tcp(t) => format!(
            "{}:{} > {}:{} {}",
            s.src,
            t.sport,
            s.dst,
            t.dport,
            dump::tcp(&TcpView {
                flags: t.flags,
                seq: t.seq,
                len: t.payload_len,
                ack: t.ack,
                win: Some(t.win),
                options: t.options.clone(),
            })
        ),
        SeenBody::Udp {
            sport,
            dport,
            payload_len,
        } => {
            format!("{}:{sport} > {}:{dport} udp ({payload_len})", s.src, s.dst)
        }
        SeenBody::Icmp { icmp_type, code } => {
            format!("{} > {} icmp type {icmp_type} code {code}", s.src, s.dst)
        }
        SeenBody::Other(p) => format!("{} > {} protocol {p}", s.src, s.dst),
    }
}

fn check_field(name: &str, expected: u32, actual: u32) -> Result<(), String> {
    if expected == actual {
        Ok(())
    } else {
        Err(format!(
            "live packet field {name}: expected: {expected} ({expected:#x}) vs actual: {actual} ({actual:#x})"
        ))
    }
}

/// packetdrill's verify_outbound_live_packet(), field by field in its order. Learns the
/// connection's initial sequence numbers and TS mapping from the packet first.
fn verify(
    c: &mut Conn,
    expect: &Expect<'_>,
    seen: &Seen,
    t: &Tuning,
    script_time: i64,
) -> Result<(), String> {
    match (expect, &seen.body) {
        (Expect::Tcp(want), SeenBody::Tcp(got)) => {
            let syn = got.flags & flag::SYN != 0;
            let ack = got.flags & flag::ACK != 0;
            // Learn the stack's initial sequence number from its SYN or SYN-ACK.
            if want.flags & flag::SYN != 0 && syn {
                let learn = match c.state {
                    ConnState::Connecting => !ack,
                    ConnState::SynReceived => ack,
                    _ => ack && c.new_syn.is_some(),
                };
                if learn {
                    c.script_local_isn = want.seq;
                    c.live_local_isn = got.seq;
                    if let Some(isn) = c.new_syn.take() {
                        c.remote_isn = isn;
                        c.ts_map.clear();
                        c.ts_first = None;
                    }
                    c.state = if ack {
                        ConnState::SynReceived
                    } else {
                        ConnState::SynSent
                    };
                }
            } else if !syn && ack && c.state == ConnState::SynSent {
                // The ACK that completes a simultaneous open.
                c.state = ConnState::Synchronized;
            }
            if !syn {
                c.new_syn = None;
            }
            // TS val: remember script -> live, map the stack's clock from the first one.
            let want_ts = want.options.as_ref().and_then(|o| {
                o.iter().find_map(|o| match o {
                    TcpOpt::Timestamp { val, .. } => Some(*val),
                    _ => None,
                })
            });
            let got_ts = got.options.iter().find_map(|o| match o {
                TcpOpt::Timestamp { val, .. } => Some(*val),
                _ => None,
            });
            if let (Some(w), Some(g)) = (want_ts, got_ts) {
                c.ts_map.insert(w, g);
                if c.ts_first.is_none() {
                    c.ts_first = Some((w, g));
                }
            }
            let view = mapped(c, got);
            if want.len as usize != got.payload_len {
                return Err(format!(
                    "live packet payload: expected {} bytes vs actual {} bytes",
                    want.len, got.payload_len
                ));
            }
            let script_opts_len = want.options.as_ref().map(|o| wire::encode_options(o).len());
            let got_opts_len = usize::from(got.data_offset) * 4 - 20;
            check_field(
                "tcp_data_offset",
                ((20 + script_opts_len.unwrap_or(got_opts_len)) / 4) as u32,
                u32::from(got.data_offset),
            )?;
            for (name, bit) in [
                ("tcp_fin", flag::FIN),
                ("tcp_syn", flag::SYN),
                ("tcp_rst", flag::RST),
                ("tcp_psh", flag::PSH),
                ("tcp_ack", flag::ACK),
                ("tcp_urg", flag::URG),
                ("tcp_ece", flag::ECE),
                ("tcp_cwr", flag::CWR),
            ] {
                check_field(
                    name,
                    u32::from(want.flags & bit != 0),
                    u32::from(got.flags & bit != 0),
                )?;
            }
            check_field("tcp_reserved_bits", 0, u32::from(got.reserved))?;
            check_field("tcp_seq", want.seq, view.seq)?;
            check_field(
                "tcp_ack_seq",
                want.ack,
                if ack { view.ack } else { got.ack },
            )?;
            if let Some(w) = want.win {
                check_field("tcp_window", u32::from(w), u32::from(got.win))?;
            }
            check_field("tcp_urg_ptr", u32::from(want.urg), u32::from(got.urg))?;
            if let Some(opts) = &want.options {
                verify_options(opts, &view.options, got, t, script_time)?;
            }
            if !got.payload_zero {
                return Err("incorrect outbound data payload".into());
            }
            Ok(())
        }
        (Expect::Udp(len), SeenBody::Udp { payload_len, .. }) => {
            check_field("udp_payload_len", u32::from(*len), *payload_len as u32)
        }
        (Expect::Icmp(want), SeenBody::Icmp { icmp_type, code }) => {
            check_field(
                "icmp_type",
                u32::from(want.icmp_type),
                u32::from(*icmp_type),
            )?;
            check_field("icmp_code", u32::from(want.code), u32::from(*code))
        }
        (want, got) => {
            let w = match want {
                Expect::Tcp(_) => "tcp",
                Expect::Udp(_) => "udp",
                Expect::Icmp(_) => "icmp",
            };
            let g = match got {
                SeenBody::Tcp(_) => "tcp",
                SeenBody::Udp { .. } => "udp",
                SeenBody::Icmp { .. } => "icmp",
                SeenBody::Other(_) => "other",
            };
            Err(format!(
                "live packet header layer 1: expected: {w} header vs actual: {g} header"
            ))
        }
    }
}

fn verify_options(
    want: &[TcpOpt],
    got: &[TcpOpt],
    raw: &SeenTcp,
    t: &Tuning,
    script_time: i64,
) -> Result<(), String> {
    if !raw.unknown_options.is_empty() || want.len() != got.len() {
        return Err("bad outbound TCP options".into());
    }
    for (w, g) in want.iter().zip(got) {
        if std::mem::discriminant(w) != std::mem::discriminant(g) {
            return Err("bad outbound TCP options".into());
        }
        match (w, g) {
            (TcpOpt::Timestamp { val: wv, .. }, TcpOpt::Timestamp { val: gv, .. })
                if t.tcp_ts_tick_usecs > 0 =>
            {
                let tol = t
                    .tolerance_usecs
                    .max((t.tolerance_percent / 100.0 * script_time as f64) as i64);
                let off = i64::from((gv.wrapping_sub(*wv)) as i32).abs();
                if off * t.tcp_ts_tick_usecs > tol {
                    return Err(format!("bad outbound TCP timestamp value, tolerance {tol}"));
                }
            }
            // packetdrill checks TS val only with --tcp_ts_tick_usecs, and never the ecr.
            (TcpOpt::Timestamp { .. }, TcpOpt::Timestamp { .. }) => {}
            (TcpOpt::Sack(a), TcpOpt::Sack(b)) if a.len() != b.len() => {
                return Err(format!(
                    "bad length in outbound TCP option (kind=5): expected: {} actual: {}",
                    dump::option(w),
                    dump::option(g)
                ));
            }
            _ if w != g => {
                let kind = match w {
                    TcpOpt::Mss(_) => 2,
                    TcpOpt::WScale(_) => 3,
                    TcpOpt::Sack(_) => 5,
                    _ => 0,
                };
                return Err(format!(
                    "bad value in outbound TCP option (kind={kind}): expected: {} actual: {}",
                    dump::option(w),
                    dump::option(g)
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// A line of a shell block synack understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellCommand {
    /// `.../common/defaults.sh`: the sysctls the backend already applies.
    Defaults,
    /// `/tmp/sysctl_restore_${PPID}.sh`: nothing to restore, the namespace goes.
    Restore,
    /// `set_sysctls.py /proc/sys/net/ipv4/X=V`, `sysctl -q net.ipv4.X=V`.
    Sysctl(String, String),
}

/// Reads a shell block as the few commands packetdrill's suites use to set sysctls;
/// anything else is refused (synack runs no shell).
pub fn shell_commands(text: &str) -> Result<Vec<ShellCommand>, String> {
    let mut out = Vec::new();
    for cmd in text.split(['\n', ';']) {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let Some(first) = words.first() else { continue };
        if first.ends_with("defaults.sh") && words.len() == 1 {
            out.push(ShellCommand::Defaults);
        } else if first.starts_with("/tmp/sysctl_restore") {
            out.push(ShellCommand::Restore);
        } else if first.ends_with("set_sysctls.py") {
            for w in &words[1..] {
                let (path, value) = w.split_once('=').ok_or_else(|| refuse(cmd))?;
                let key = path
                    .strip_prefix("/proc/sys/")
                    .ok_or_else(|| refuse(cmd))?
                    .replace('/', ".");
                out.push(ShellCommand::Sysctl(key, value.to_owned()));
            }
        } else if *first == "sysctl" {
            for w in words[1..].iter().filter(|w| !w.starts_with('-')) {
                let (k, v) = w.split_once('=').ok_or_else(|| refuse(cmd))?;
                out.push(ShellCommand::Sysctl(
                    k.to_owned(),
                    v.trim_matches('"').to_owned(),
                ));
            }
        } else {
            return Err(refuse(cmd));
        }
    }
    Ok(out)
}

fn refuse(cmd: &str) -> String {
    format!(
        "synack script runs no shell commands: it understands defaults.sh, set_sysctls.py and sysctl lines, not `{}`",
        cmd.trim()
    )
}
