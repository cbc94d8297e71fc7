//! `synack script`: the parser on every construct and its error positions, the runner on
//! an in-process fake stack with a virtual clock (exact packetdrill-style messages), and,
//! as root, the corpus under tests/scenarios and packetdrill's and gVisor's reference
//! scripts against the kernel's TCP.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use synack::script::ast::{Action, Dir, Echoed, Expr, PacketBody, TcpOpt, Timing, flag};
use synack::script::backend::{
    Backend, BackendError, Call, CallId, CallResult, Emitted, Finished, OptValue, Started,
};
use synack::script::smoltcp::SmoltcpBackend;
use synack::script::wire::{self, SeenBody};
use synack::script::{
    EventStatus, Options, Report, ScriptReport, Stack, StackRun, Tuning, Verdict, judge, parser,
    run_script, tuning,
};

fn parse(src: &str) -> synack::script::Script {
    parser::parse("t.pkt", src).unwrap_or_else(|e| panic!("{e}"))
}

fn parse_err(src: &str) -> String {
    match parser::parse("t.pkt", src) {
        Ok(_) => panic!("parsed but should not: {src}"),
        Err(e) => e.to_string(),
    }
}

// ----- the parser -----

#[test]
fn every_kind_of_time() {
    let s = parse(
        "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n\
         +0.1 close(3) = 0\n\
         * > S 0:0(0) <...>\n\
         0.2~0.25 > . 1:1(0) ack 1\n\
         +.1~+.2 > . 1:1(0) ack 1\n\
         +0...0.200 accept(3, ..., ...) = 4\n\
         1.5 close(4) = 0\n",
    );
    let times: Vec<Timing> = s.events.iter().map(|e| e.time).collect();
    assert_eq!(
        times,
        vec![
            Timing::Absolute(0),
            Timing::Relative(100_000),
            Timing::Any,
            Timing::AbsoluteRange(200_000, 250_000),
            Timing::RelativeRange(100_000, 200_000),
            Timing::Relative(0),
            Timing::Absolute(1_500_000),
        ]
    );
    let Action::Call(c) = &s.events[5].action else {
        panic!()
    };
    assert_eq!((c.name.as_str(), c.end), ("accept", Some(200_000)));
}

#[test]
fn packets_with_every_field() {
    let s = parse(
        "0 < S 0:0(0) win 32792 <mss 1460,sackOK,TS val 100 ecr 0,nop,wscale 7,eol>\n\
         +0 > S. 0:0(0) ack 1 <...>\n\
         +0 < FP. 1:101(100) ack 1 win 257 urg 3\n\
         +0 > - 5:5(0)\n\
         +0 < . 1:1(0) ack 1 win 257 <nop,nop,sack 10:20 30:40>\n\
         +0 < 1234>8080 R 1:1(0) win 0\n\
         +0 > EW. 1:1(0) ack 1\n\
         +0 < udp (100)\n\
         +0 > udp (7)\n\
         +0 < icmp unreachable port_unreachable [udp (8)]\n\
         +0 < icmp unreachable frag_needed mtu 1200 [1:101(100)]\n",
    );
    let tcp = |i: usize| match &s.events[i].action {
        Action::Packet(p) => match &p.body {
            PacketBody::Tcp(t) => (p.dir, t.clone()),
            b => panic!("{b:?}"),
        },
        a => panic!("{a:?}"),
    };
    let (dir, syn) = tcp(0);
    assert_eq!(dir, Dir::Inbound);
    assert_eq!(syn.flags, flag::SYN);
    assert_eq!(syn.win, Some(32792));
    assert_eq!(
        syn.options.unwrap(),
        vec![
            TcpOpt::Mss(1460),
            TcpOpt::SackOk,
            TcpOpt::Timestamp { val: 100, ecr: 0 },
            TcpOpt::Nop,
            TcpOpt::WScale(7),
            TcpOpt::Eol
        ]
    );
    let (dir, synack) = tcp(1);
    assert_eq!(
        (dir, synack.flags, synack.ack),
        (Dir::Outbound, flag::SYN | flag::ACK, 1)
    );
    assert_eq!((synack.options, synack.win), (None, None));
    let fin = tcp(2).1;
    assert_eq!(
        (fin.flags, fin.seq, fin.len, fin.urg),
        (flag::FIN | flag::PSH | flag::ACK, 1, 100, 3)
    );
    assert_eq!(tcp(3).1.flags, 0);
    assert_eq!(
        tcp(4).1.options.unwrap()[2],
        TcpOpt::Sack(vec![(10, 20), (30, 40)])
    );
    assert_eq!(tcp(5).1.ports, Some((1234, 8080)));
    assert_eq!(tcp(6).1.flags, flag::ECE | flag::CWR | flag::ACK);
    let body = |i: usize| match &s.events[i].action {
        Action::Packet(p) => p.body.clone(),
        a => panic!("{a:?}"),
    };
    assert_eq!(
        body(7),
        PacketBody::Udp {
            len: 100,
            ports: None
        }
    );
    let PacketBody::Icmp(i) = body(9) else {
        panic!()
    };
    assert_eq!(
        (i.icmp_type, i.code, i.echoed),
        (3, 3, Echoed::Udp { len: 8 })
    );
    let PacketBody::Icmp(i) = body(10) else {
        panic!()
    };
    assert_eq!(
        (i.code, i.mtu, i.echoed),
        (4, Some(1200), Echoed::Tcp { seq: 1, len: 100 })
    );
}

#[test]
fn calls_with_every_kind_of_argument() {
    let s = parse(
        "0 setsockopt(3, SOL_SOCKET, SO_LINGER, {onoff=1, linger=0}, 8) = 0\n\
         +0 fcntl(3, F_SETFL, O_RDWR|O_NONBLOCK) = 0\n\
         +0 connect(3, {sa_family=AF_INET, sin_port=htons(8080), sin_addr=inet_addr(\"192.0.2.1\")}, 16) = -1 EINPROGRESS (Operation now in progress)\n\
         +0 getsockopt(3, SOL_SOCKET, SO_ERROR, [0], [4]) = 0\n\
         +0 read(3, ..., 1000) = -1 EAGAIN (Resource temporarily unavailable)\n\
         +0 write(3, \"ab\" \"cd\", 4) = 4\n",
    );
    let call = |i: usize| match &s.events[i].action {
        Action::Call(c) => c.clone(),
        a => panic!("{a:?}"),
    };
    assert_eq!(
        call(0).args[3],
        Expr::Linger {
            onoff: 1,
            linger: 0
        }
    );
    assert!(matches!(&call(1).args[2], Expr::Or(a, b)
        if **a == Expr::Word("O_RDWR".into()) && **b == Expr::Word("O_NONBLOCK".into())));
    let c = call(2);
    assert_eq!(
        c.args[1],
        Expr::SockAddr {
            port: 8080,
            addr: "192.0.2.1".into()
        }
    );
    assert_eq!(
        (c.result, c.errno.as_deref()),
        (Expr::Int(-1), Some("EINPROGRESS"))
    );
    assert_eq!(c.note.as_deref(), Some("Operation now in progress"));
    assert_eq!(call(3).args[4], Expr::List(vec![Expr::Int(4)]));
    assert_eq!(call(5).args[1], Expr::Str("abcd".into()));
}

#[test]
fn comments_options_shell_blocks_and_directives() {
    let s = parse(
        "// a comment\n\
         --tolerance_usecs=10000\n\
         --strict_segments\n\
         /* a block\n comment */\n\
         `../common/defaults.sh\n ../common/set_sysctls.py /proc/sys/net/ipv4/tcp_syn_retries=1`\n\
         // synack-expect-fail smoltcp anywhere: no listen backlog\n\
         0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3 // trailing\n\
         // synack-expect-fail linux: Linux sends two segments here\n\
         +0 close(3) = 0\n\
         `/tmp/sysctl_restore_${PPID}.sh`\n",
    );
    assert_eq!(s.options.len(), 2);
    assert_eq!(
        (s.options[0].name.as_str(), s.options[0].value.as_deref()),
        ("tolerance_usecs", Some("10000"))
    );
    assert_eq!(s.options[1].value, None);
    assert!(
        s.init_shell
            .as_ref()
            .unwrap()
            .text
            .contains("set_sysctls.py")
    );
    assert!(s.cleanup_shell.is_some());
    assert_eq!(s.events.len(), 2);
    assert_eq!(s.expected_failures.len(), 2);
    assert_eq!(
        (
            s.expected_failures[0].stack.as_str(),
            s.expected_failures[0].line
        ),
        ("smoltcp", None)
    );
    assert_eq!(
        (
            s.expected_failures[1].stack.as_str(),
            s.expected_failures[1].line
        ),
        ("linux", Some(11))
    );
    let t = tuning(&s, None).unwrap();
    assert_eq!((t.tolerance_usecs, t.strict_segments), (10_000, true));
    assert_eq!(tuning(&s, Some(7)).unwrap().tolerance_usecs, 7);
}

#[test]
fn errors_name_line_and_column() {
    for (src, want) in [
        (
            "0 < S 0:0(0)\n",
            "t.pkt:1:3: an inbound TCP packet needs its window",
        ),
        (
            "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 < S 0:0(0) win 1 <...>\n",
            "t.pkt:2:21: <...> for TCP options can only be used with outbound packets",
        ),
        ("0 > SX 0:0(0)\n", "t.pkt:1:5: unknown TCP flag 'X' in 'SX'"),
        (
            "0 > S 0:5(0)\n",
            "t.pkt:1:7: inconsistent TCP sequence numbers and payload size",
        ),
        (
            "* close(3) = 0\n",
            "t.pkt:1:1: event time <star> can only be used with outbound packets",
        ),
        (
            "0 close(3) = 0\n0.1~0.2 < . 1:1(0) win 1\n",
            "t.pkt:2:1: event time range can only be used with outbound packets",
        ),
        (
            "0 close(3) = 0\n+0.2~+0.1 > . 1:1(0)\n",
            "t.pkt:2:7: time range is backwards",
        ),
        (
            "0 close(3) = 0\n  +0 %{ print(1) }%\n",
            "t.pkt:2:6: Python blocks",
        ),
        (
            "0 close(3) = 0\n/* open\n",
            "t.pkt:2:1: this /* comment is never closed",
        ),
        ("0 close(3 = 0\n", "t.pkt:1:11: expected ',', found '='"),
        (
            "0 > S 0:0(0) <mss 1460, md5 ab>\n",
            "t.pkt:1:25: TCP option 'md5' is not supported",
        ),
        (
            "0 > S 0:0(0) <mss 70000>\n",
            "t.pkt:1:19: mss value 70000 is out of range",
        ),
        ("// nothing\n", "t.pkt:2:1: the script has no events"),
        (
            "\n  0.5 close(3) = 0\n",
            "t.pkt:2:3: first event should be at time 0",
        ),
        (
            "0 close(3) = 0\n--tolerance_usecs=1\n",
            "t.pkt:2:1: --tolerance_usecs must come before the first event",
        ),
        (
            "// synack-expect-fail bsd: x\n0 close(3) = 0\n",
            "t.pkt:1:1: the directive names stack 'bsd'",
        ),
        ("0 > (tos 0x1) S 0:0(0)\n", "t.pkt:1:5: IP header fields"),
    ] {
        let got = parse_err(src);
        assert!(
            got.starts_with(want),
            "for {src:?}\n got: {got}\nwant: {want}"
        );
    }
}

#[test]
fn unsupported_options_and_shell_lines_are_refused_with_their_line() {
    let s = parse("--mss=1000\n0 close(3) = 0\n");
    let e = tuning(&s, None).unwrap_err().to_string();
    assert!(
        e.starts_with("t.pkt:1:1: option --mss is not supported"),
        "{e}"
    );
    let s = parse("0 close(3) = 0\n+0 `rm -rf /tmp/x`\n");
    let e = tuning(&s, None).unwrap_err().to_string();
    assert!(
        e.starts_with("t.pkt:2:4: synack script runs no shell commands")
            && e.contains("`rm -rf /tmp/x`"),
        "{e}"
    );
}

// ----- a fake stack on a virtual clock, for the runner -----

const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const ISS: u32 = 1000;

/// A tiny passive-open TCP that answers like a real stack would, on a virtual clock: a
/// SYN gets a SYN-ACK (retransmitted after 1 s until acknowledged), data gets an ACK at
/// once, writes go out whole, close sends a FIN. Enough to exercise the runner.
#[derive(Default)]
struct Fake {
    now: Duration,
    out: VecDeque<Emitted>,
    finished: VecDeque<Finished>,
    /// SYN-ACK retransmission time, while the handshake is not complete.
    synack_timer: Option<Duration>,
    listening: bool,
    nonblocking: bool,
    peer: Option<SocketAddrV4>,
    established: bool,
    accepted: bool,
    rcv_nxt: u32,
    snd_nxt: u32,
    rx: usize,
    peer_fin: bool,
    blocked: Vec<(CallId, Call)>,
    next_id: CallId,
}

impl Fake {
    fn emit(&mut self, flags: u8, len: usize) {
        let peer = self.peer.expect("a connection");
        let seq = if flags & flag::SYN != 0 {
            ISS
        } else {
            self.snd_nxt
        };
        let bytes = wire::build_tcp(&wire::TcpOut {
            src: LOCAL,
            dst: *peer.ip(),
            sport: 8080,
            dport: peer.port(),
            seq,
            ack: self.rcv_nxt,
            flags,
            win: 65535,
            urg: 0,
            options: if flags & flag::SYN != 0 {
                &[TcpOpt::Mss(1460)]
            } else {
                &[]
            },
            payload_len: len,
        });
        self.out.push_back(Emitted {
            at: self.now,
            bytes,
            note: String::new(),
        });
    }

    /// What a call does now: `None` if it must wait.
    fn attempt(&mut self, call: &Call) -> Option<CallResult> {
        Some(match call {
            Call::Socket { .. } => CallResult::ok(3),
            Call::Bind { .. } | Call::SetSockOpt { .. } | Call::Shutdown { .. } => {
                CallResult::ok(0)
            }
            Call::Listen { .. } => {
                self.listening = true;
                CallResult::ok(0)
            }
            Call::Fcntl { arg, .. } => {
                self.nonblocking = arg.is_some_and(|a| a & i64::from(libc::O_NONBLOCK) != 0);
                CallResult::ok(0)
            }
            Call::Accept { .. } => {
                if self.established && !self.accepted {
                    self.accepted = true;
                    CallResult::ok(4)
                } else if self.nonblocking {
                    CallResult::err(libc::EAGAIN)
                } else {
                    return None;
                }
            }
            Call::Recv { len, .. } => {
                if self.rx > 0 {
                    let n = self.rx.min(*len);
                    self.rx -= n;
                    CallResult::ok(n as i64)
                } else if self.peer_fin {
                    CallResult::ok(0)
                } else if self.nonblocking {
                    CallResult::err(libc::EAGAIN)
                } else {
                    return None;
                }
            }
            Call::Send { len, .. } => {
                self.emit(flag::PSH | flag::ACK, *len);
                self.snd_nxt = self.snd_nxt.wrapping_add(*len as u32);
                CallResult::ok(*len as i64)
            }
            Call::Close { .. } => {
                if self.established {
                    self.emit(flag::FIN | flag::ACK, 0);
                    self.snd_nxt = self.snd_nxt.wrapping_add(1);
                }
                CallResult::ok(0)
            }
            Call::GetSockOpt { .. } => CallResult {
                ret: 0,
                errno: 0,
                value: Some(0),
            },
            Call::Connect { .. } => CallResult::err(libc::EOPNOTSUPP),
        })
    }

    fn retry_blocked(&mut self) {
        let blocked = std::mem::take(&mut self.blocked);
        for (id, call) in blocked {
            match self.attempt(&call) {
                Some(result) => self.finished.push_back(Finished {
                    id,
                    at: self.now,
                    result,
                }),
                None => self.blocked.push((id, call)),
            }
        }
    }
}

impl Backend for Fake {
    fn name(&self) -> &str {
        "fake"
    }
    fn local_addr(&self) -> Ipv4Addr {
        LOCAL
    }
    fn remote_addr(&self) -> Ipv4Addr {
        REMOTE
    }
    fn epoch(&self) -> Duration {
        Duration::from_secs(1_700_000_000)
    }
    fn now(&self) -> Duration {
        self.now
    }
    fn wait(&mut self, deadline: Duration) -> Result<(), BackendError> {
        if !self.out.is_empty() || !self.finished.is_empty() {
            return Ok(());
        }
        match self.synack_timer {
            Some(t) if t <= deadline => {
                self.now = self.now.max(t);
                self.emit(flag::SYN | flag::ACK, 0);
                self.synack_timer = Some(t + Duration::from_secs(1));
            }
            _ => self.now = self.now.max(deadline),
        }
        Ok(())
    }
    fn inject(&mut self, packet: &[u8]) -> Result<(), BackendError> {
        let seen = wire::parse(packet).ok_or_else(|| BackendError::Failed("not IPv4".into()))?;
        assert!(
            wire::ip_checksum_ok(packet),
            "the runner builds good IP checksums"
        );
        let SeenBody::Tcp(t) = seen.body else {
            return Ok(());
        };
        if t.flags & flag::SYN != 0 && self.listening && self.peer.is_none() {
            self.peer = Some(SocketAddrV4::new(seen.src, t.sport));
            self.rcv_nxt = t.seq.wrapping_add(1);
            self.snd_nxt = ISS + 1;
            self.emit(flag::SYN | flag::ACK, 0);
            self.synack_timer = Some(self.now + Duration::from_secs(1));
            return Ok(());
        }
        if t.flags & flag::ACK != 0 && !self.established && t.ack == ISS + 1 {
            self.established = true;
            self.synack_timer = None;
        }
        if self.established && t.seq == self.rcv_nxt {
            let fin = u32::from(t.flags & flag::FIN != 0);
            if t.payload_len > 0 || fin == 1 {
                self.rcv_nxt = self.rcv_nxt.wrapping_add(t.payload_len as u32 + fin);
                self.rx += t.payload_len;
                self.peer_fin |= fin == 1;
                self.emit(flag::ACK, 0);
            }
        }
        self.retry_blocked();
        Ok(())
    }
    fn take_emitted(&mut self) -> Option<Emitted> {
        self.out.pop_front()
    }
    fn start_call(&mut self, call: &Call) -> Result<Started, BackendError> {
        if let Call::SetSockOpt {
            value: OptValue::Linger { .. },
            ..
        } = call
        {
            return Err(BackendError::Unsupported("SO_LINGER".into()));
        }
        Ok(match self.attempt(call) {
            Some(r) => Started::Done(r),
            None => {
                self.next_id += 1;
                self.blocked.push((self.next_id, call.clone()));
                Started::Blocked(self.next_id)
            }
        })
    }
    fn take_finished(&mut self) -> Option<Finished> {
        self.finished.pop_front()
    }
}

const SERVER: &str = "\
0     socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0    bind(3, ..., ...) = 0
+0    listen(3, 1) = 0
+.1   < S 0:0(0) win 32792 <mss 1000,nop,wscale 7>
+0    > S. 0:0(0) ack 1 <mss 1460>
+.1   < . 1:1(0) ack 1 win 257
+0    accept(3, ..., ...) = 4
";

fn run_fake(src: &str) -> synack::script::RunResult {
    let script = parse(src);
    let t = tuning(&script, None).unwrap();
    run_script(&script, &t, &mut Fake::default())
}

fn failure(src: &str) -> String {
    let r = run_fake(src);
    r.failure
        .unwrap_or_else(|| panic!("passed but should not:\n{src}"))
        .message
}

#[test]
fn a_script_that_matches_passes_and_its_capture_says_which_line_did_what() {
    let src = format!(
        "{SERVER}+0    write(4, ..., 10) = 10\n\
         +0    > P. 1:11(10) ack 1\n\
         +.1   < P. 1:101(100) ack 11 win 257\n\
         +0    > . 11:11(0) ack 101 win 65535\n\
         +0    read(4, ..., 1000) = 100\n\
         +.1   close(4) = 0\n\
         +0    > F. 11:11(0) ack 101\n"
    );
    let r = run_fake(&src);
    assert_eq!(r.failure, None);
    assert!(r.events.iter().all(|(_, s)| *s == EventStatus::Passed));
    let dir = tempdir("capture");
    let path = dir.join("fake.pcapng");
    synack::script::write_capture(&path, Duration::from_secs(1_700_000_000), &r).unwrap();
    let frames = synack::analyze::read(&path).unwrap();
    let comments: Vec<String> = frames
        .iter()
        .map(|f| f.comment.clone().unwrap_or_default())
        .collect();
    assert_eq!(frames.len(), 7, "{comments:#?}");
    assert_eq!(
        comments[0],
        "injected (line 4): S 0:0(0) win 32792 <mss 1000,nop,wscale 7>"
    );
    assert_eq!(
        comments[1],
        "expected by the script (line 5): S. 0:0(0) ack 1 win 65535 <mss 1460>"
    );
    assert_eq!(frames[0].inbound, Some(true));
    assert_eq!(frames[1].inbound, Some(false));
    assert!(comments[3].starts_with("expected by the script (line 9): P. 1:11(10) ack 1"));
    // Virtual time: the SYN at exactly 0.1 s after the epoch.
    assert_eq!(
        frames[0].time,
        Duration::from_secs(1_700_000_000) + Duration::from_millis(100)
    );
}

#[test]
fn a_wrong_expectation_fails_the_way_packetdrill_says_it() {
    let src = SERVER.replace(
        "> S. 0:0(0) ack 1 <mss 1460>",
        "> S. 0:0(0) ack 2 <mss 1460>",
    );
    let r = run_fake(&src);
    let f = r.failure.clone().unwrap();
    assert_eq!(f.line, 5);
    assert_eq!(
        f.message,
        "t.pkt:5: error handling packet: live packet field tcp_ack_seq: expected: 2 (0x2) vs actual: 1 (0x1)\n\
         script packet:  0.100000 S. 0:0(0) ack 2 <mss 1460>\n\
         actual packet:  0.100000 S. 0:0(0) ack 1 win 65535 <mss 1460>"
    );
    let statuses: Vec<&EventStatus> = r.events.iter().map(|(_, s)| s).collect();
    assert_eq!(statuses[3], &EventStatus::Passed);
    assert!(matches!(statuses[4], EventStatus::Failed(_)));
    assert_eq!(statuses[5], &EventStatus::NotReached);
}

#[test]
fn each_field_is_checked() {
    for (from, to, want) in [
        (
            "> S. 0:0(0) ack 1 <mss 1460>",
            "> S. 0:0(0) ack 1 <mss 1400>",
            "bad value in outbound TCP option (kind=2): expected: mss 1400 actual: mss 1460",
        ),
        (
            "> S. 0:0(0) ack 1 <mss 1460>",
            "> S. 0:0(0) ack 1 <mss 1460,nop>",
            "live packet field tcp_data_offset: expected: 7 (0x7) vs actual: 6 (0x6)",
        ),
        (
            "> S. 0:0(0) ack 1 <mss 1460>",
            "> S. 0:0(0) ack 1 <nop,nop,nop,nop>",
            "bad outbound TCP options",
        ),
        (
            "> S. 0:0(0) ack 1 <mss 1460>",
            "> S. 0:0(0) ack 1 win 100 <mss 1460>",
            "live packet field tcp_window: expected: 100 (0x64) vs actual: 65535 (0xffff)",
        ),
        (
            "> S. 0:0(0) ack 1 <mss 1460>",
            "> S 0:0(0) ack 1 <mss 1460>",
            "live packet field tcp_ack: expected: 0 (0x0) vs actual: 1 (0x1)",
        ),
        (
            "> S. 0:0(0) ack 1 <mss 1460>",
            "> S. 0:5(5) ack 1 <mss 1460>",
            "live packet payload: expected 5 bytes vs actual 0 bytes",
        ),
    ] {
        let m = failure(&SERVER.replace(from, to));
        assert!(
            m.starts_with(&format!("t.pkt:5: error handling packet: {want}\n")),
            "{m}"
        );
    }
}

#[test]
fn timing_is_checked_with_packetdrills_tolerance() {
    // The fake retransmits its SYN-ACK 1 s after the first; the script says 0.5 s.
    let src = "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n\
               +0 bind(3, ..., ...) = 0\n\
               +0 listen(3, 1) = 0\n\
               +0 < S 0:0(0) win 1000\n\
               +0 > S. 0:0(0) ack 1 <...>\n\
               +.5 > S. 0:0(0) ack 1 <...>\n";
    let m = failure(src);
    assert_eq!(
        m.lines().next().unwrap(),
        "t.pkt:6: error handling packet: timing error: expected outbound packet at 0.500000 sec but happened at 1.000000 sec; tolerance 0.062500 sec"
    );
    // Within 12.5 % of the gap it passes; a window says where it may fall.
    assert_eq!(run_fake(&src.replace("+.5 >", "+.9 >")).failure, None);
    assert_eq!(run_fake(&src.replace("+.5 >", "+.5~+1.5 >")).failure, None);
    let m = failure(&src.replace("+.5 >", "+.2~+.4 >"));
    assert!(m.contains("expected outbound packet in relative time range +0.200000~+0.400000 sec but happened at +1.000000 sec"), "{m}");
    // `*` takes it whenever it comes.
    assert_eq!(run_fake(&src.replace("+.5 >", "* >")).failure, None);
}

#[test]
fn a_packet_that_never_comes_times_out() {
    let m = failure(&format!("{SERVER}+.1 > P. 1:11(10) ack 1\n"));
    assert_eq!(
        m,
        "t.pkt:8: error handling packet: Timed out waiting for packet"
    );
}

#[test]
fn call_results_and_errnos_are_checked() {
    let base = "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n\
                +0 bind(3, ..., ...) = 0\n\
                +0 listen(3, 1) = 0\n\
                +0 fcntl(3, F_SETFL, O_RDWR|O_NONBLOCK) = 0\n";
    assert_eq!(
        run_fake(&format!(
            "{base}+0 accept(3, ..., ...) = -1 EAGAIN (Resource temporarily unavailable)\n"
        ))
        .failure,
        None
    );
    assert_eq!(
        failure(&format!("{base}+0 accept(3, ..., ...) = 4\n")),
        "t.pkt:5: runtime error in accept call: Expected non-negative result but got -1 with errno 11 (Resource temporarily unavailable)"
    );
    assert_eq!(
        failure(&format!(
            "{base}+0 accept(3, ..., ...) = -1 ECONNRESET (Connection reset)\n"
        )),
        "t.pkt:5: runtime error in accept call: Expected errno 104 (Connection reset by peer) but got 11 (Resource temporarily unavailable)"
    );
    assert_eq!(
        failure(&format!("{base}+0 listen(3, 1) = 1\n")),
        "t.pkt:5: runtime error in listen call: Expected result 1 but got 0 with errno 0 (Success)"
    );
    assert_eq!(
        failure(&format!("{base}+0 close(7) = 0\n")),
        "t.pkt:5: runtime error in close call: unable to find fd with script fd 7"
    );
    assert_eq!(
        failure(&format!("{base}+0 frobnicate(3) = 0\n")),
        "t.pkt:5: runtime error in frobnicate call: Unknown system call: 'frobnicate'"
    );
    assert_eq!(
        failure(&format!(
            "{base}+0 setsockopt(3, SOL_SOCKET, SO_LINGER, {{onoff=1, linger=0}}, 8) = 0\n"
        )),
        "t.pkt:5: runtime error in setsockopt call: SO_LINGER"
    );
    assert_eq!(
        failure(&format!(
            "{base}+0 getsockopt(3, SOL_SOCKET, SO_ERROR, [5], [4]) = 0\n"
        )),
        "t.pkt:5: runtime error in getsockopt call: Bad getsockopt optval: expected: 5 actual: 0"
    );
}

#[test]
fn blocking_calls_return_when_expected() {
    // accept blocks from 0 until the handshake completes at 0.2.
    let src = "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n\
               +0 bind(3, ..., ...) = 0\n\
               +0 listen(3, 1) = 0\n\
               +0...0.200 accept(3, ..., ...) = 4\n\
               +.1 < S 0:0(0) win 1000\n\
               +0 > S. 0:0(0) ack 1 <...>\n\
               +.1 < . 1:1(0) ack 1 win 1000\n\
               +.1 write(4, ..., 5) = 5\n\
               +0 > P. 1:6(5) ack 1\n";
    assert_eq!(run_fake(src).failure, None);
    let m = failure(&src.replace("+0...0.200", "+0...0.500"));
    assert_eq!(
        m,
        "t.pkt:4: timing error: expected system call return at 0.500000 sec but happened at 0.200000 sec; tolerance 0.062500 sec"
    );
    // A call written as one that returns at once, but waits: the runner waits with it,
    // up to a bound, and says how to write it.
    let m = failure(&src.replace("+0...0.200 accept", "+0 accept"));
    assert!(
        m.starts_with("t.pkt:4: runtime error in accept call: the call blocked for more than 10 s"),
        "{m}"
    );
    // Still blocked at the end of the script: packetdrill's complaint.
    let m = failure(&format!("{SERVER}+0...1 read(4, ..., 10) = 10\n"));
    assert_eq!(
        m,
        "t.pkt:8: runtime error: exiting while a blocking system call is in progress"
    );
}

#[test]
fn sequence_numbers_are_relative_after_the_syn() {
    // The fake's ISN is 1000 and the script's SYN says 5000: both map.
    let src = "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n\
               +0 bind(3, ..., ...) = 0\n\
               +0 listen(3, 1) = 0\n\
               +0 < S 5000:5000(0) win 1000\n\
               +0 > S. 0:0(0) ack 5001 <...>\n\
               +0 < . 1:1(0) ack 1 win 1000\n\
               +0 accept(3, ..., ...) = 4\n\
               +0 < P. 1:11(10) ack 1 win 1000\n\
               +0 > . 1:1(0) ack 11\n";
    assert_eq!(run_fake(src).failure, None);
}

#[test]
fn the_same_script_gives_the_same_packets_on_a_virtual_clock() {
    let a = run_fake(SERVER);
    let b = run_fake(SERVER);
    let view = |r: &synack::script::RunResult| {
        r.packets
            .iter()
            .map(|p| (p.at, p.inbound, p.bytes.clone(), p.comment.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(view(&a), view(&b));
    assert_eq!(a.packets.len(), 3);
}

#[test]
fn directives_judge_a_run() {
    let marked = format!(
        "{SERVER}// synack-expect-fail fake: the fake sends no data\n+0 > P. 1:11(10) ack 1\n"
    );
    let script = parse(&marked.replace("fake:", "linux:"));
    let r = run_script(&script, &Tuning::default(), &mut Fake::default());
    assert!(matches!(
        judge(&script, "linux", &r),
        Verdict::ExpectedFailure { .. }
    ));
    assert!(matches!(judge(&script, "smoltcp", &r), Verdict::Failed(_)));
    // Marked, but it passes: the mark is out of date, and that is a failure.
    let script = parse(&format!(
        "// synack-expect-fail linux anywhere: no reason\n{SERVER}"
    ));
    let r = run_script(&script, &Tuning::default(), &mut Fake::default());
    assert!(matches!(
        judge(&script, "linux", &r),
        Verdict::UnexpectedPass { .. }
    ));
    assert!(!judge(&script, "linux", &r).ok());
}

#[test]
fn compare_reports_a_stack_that_is_not_there() {
    // A stack that cannot run here (Linux without root) is said so, with why, and its
    // column is n/a; the other stack's run is still shown line by line.
    let script = parse(SMOL_SERVER);
    let mut backend = SmoltcpBackend::new().unwrap();
    let result = run_script(&script, &Tuning::default(), &mut backend);
    let report = Report {
        scripts: vec![ScriptReport {
            file: PathBuf::from("one.pkt"),
            source: SMOL_SERVER.to_owned(),
            error: None,
            runs: vec![
                StackRun {
                    stack: Stack::Linux,
                    verdict: Verdict::Unavailable("--against linux needs root".into()),
                    result: None,
                    capture: None,
                },
                StackRun {
                    stack: Stack::Smoltcp,
                    verdict: judge(&script, "smoltcp", &result),
                    result: Some(result),
                    capture: None,
                },
            ],
        }],
        compare: true,
    };
    let text = synack::script::render(&report);
    assert!(
        text.contains("skipped  one.pkt [linux]: --against linux needs root"),
        "{text}"
    );
    assert!(text.contains("ok       one.pkt [smoltcp]"), "{text}");
    assert!(text.contains("  line  script"), "{text}");
    let syn = text.lines().find(|l| l.contains("< S 0:0(0)")).unwrap();
    assert!(
        syn.starts_with("      4  +0") && syn.ends_with("n/a      ok"),
        "{text}"
    );
}

#[test]
fn a_script_with_a_mistake_is_reported_with_its_position() {
    let dir = tempdir("mistake");
    let file = dir.join("bad.pkt");
    std::fs::write(
        &file,
        "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 < S 0:0(0)\n",
    )
    .unwrap();
    let report = synack::script::run(&Options::new(vec![file.clone()], Stack::Linux));
    assert!(!report.ok());
    let text = synack::script::render(&report);
    assert!(
        text.starts_with(&format!(
            "{}:2:4: an inbound TCP packet needs its window",
            file.display()
        )),
        "{text}"
    );
}

fn tempdir(tag: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("script-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ----- against Linux (root) -----

/// Whether this machine can run the kernel backend; prints why not and returns false,
/// except under CI=true, where it must.
fn linux_available(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let why = if unsafe { libc::geteuid() } != 0 {
        Some("needs root")
    } else if !Path::new("/dev/net/tun").exists() {
        Some("needs /dev/net/tun")
    } else {
        None
    };
    match why {
        None => true,
        Some(why) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true and {test} {why}: CI must run it as root");
            }
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "skipping {test}: {why}");
            false
        }
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn pkt_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "pkt") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The Linux tests run one at a time: real-time scripts in parallel would disturb each
/// other's timing on a small machine.
static LINUX: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How many times a script runs against Linux before its failure counts.
const ATTEMPTS: usize = 3;

/// Runs scripts against Linux; a script that fails runs again (up to [`ATTEMPTS`]), since
/// a loaded machine can make a real-time run miss its timing: the kernel processes
/// packets written to a TUN in softirq context, which a busy machine can delay by a few
/// milliseconds. A real divergence fails every time.
fn run_linux(
    files: &[PathBuf],
    tolerance_usecs: Option<i64>,
    tag: &str,
) -> Vec<synack::script::ScriptReport> {
    let _one_at_a_time = LINUX.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::new();
    for f in files {
        let mut o = Options::new(vec![f.clone()], Stack::Linux);
        o.tolerance_usecs = tolerance_usecs;
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("script-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        o.capture_dir = Some(dir);
        let mut report = synack::script::run(&o);
        for attempt in 2..=ATTEMPTS {
            if report.ok() {
                break;
            }
            eprintln!(
                "attempt {attempt} after:\n{}",
                synack::script::render(&report)
            );
            report = synack::script::run(&o);
        }
        out.extend(report.scripts);
    }
    out
}

#[test]
fn the_corpus_passes_against_linux() {
    if !linux_available("the_corpus_passes_against_linux") {
        return;
    }
    let files = pkt_files(&repo().join("tests/scenarios"));
    assert!(files.len() >= 25, "the corpus is there: {files:?}");
    let reports = run_linux(&files, None, "corpus");
    let report = synack::script::Report {
        scripts: reports,
        compare: false,
    };
    let text = synack::script::render(&report);
    println!("{text}");
    assert!(report.ok(), "{text}");
    let ours = format!("synack-script-{}-", std::process::id());
    let left: Vec<String> = namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&ours))
        .collect();
    assert!(
        left.is_empty() || left.len() == 1,
        "namespaces left behind: {left:?}"
    );
}

/// Reference scripts that use only the language synack runs but that this kernel
/// (6.x) answers differently from the kernel they were written on.
const KERNEL_DIFFERENCES: &[(&str, &str)] = &[
    (
        "limited-transmit-no-sack.pkt",
        "the first duplicate ACK releases two segments at once, where RFC 3042 and the script allow one",
    ),
    (
        "shutdown-rdwr-write-queue-close.pkt",
        "the FIN after a full initial window (ten segments) waits about 25 ms, for the tail loss probe; \
         the script, from a kernel that let a lone FIN exceed the congestion window, expects it at once",
    ),
    (
        "shutdown-rdwr-send-queue-ack-close.pkt",
        "the ACK of line 29 comes 1 ms after the first flight left, which is this kernel's edge \
         for deferring a TSO send (tcp_tso_should_defer: only if the last send was under 1 ms \
         ago); it defers the 2000 bytes, the loss probe sends them ~10 ms later, and line 33's \
         probe becomes an RTO at 200 ms. With the ACK at +.0015 the script passes every time",
    ),
    (
        "invalid_ack.pkt",
        "an ACK of unsent data now draws an ACK (RFC 5961 §5.2), which the script does not expect",
    ),
];

/// The tolerance the reference scripts run with: the kernel's own packetdrill selftests
/// (tools/testing/selftests/net/packetdrill/ksft_runner.sh) use 14 ms on slow machines.
/// This one ticks at CONFIG_HZ=250: a timer fires up to 4 ms after packetdrill's 1000 Hz
/// reference kernels would, and gVisor's scripts, written for a runner between two
/// containers, allow 10 ms for an ACK Linux sends at once.
const REFERENCE_TOLERANCE_USECS: i64 = 14_000;

#[test]
fn reference_scripts_run_against_linux() {
    let root = repo().join("../shared/reference/packetdrill");
    if !root.is_dir() {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipping reference_scripts_run_against_linux: no {}",
            root.display()
        );
        return;
    }
    if !linux_available("reference_scripts_run_against_linux") {
        return;
    }
    let files = pkt_files(&root);
    let (selftests, rest): (Vec<_>, Vec<_>) = files
        .into_iter()
        .partition(|p| p.components().any(|c| c.as_os_str() == "tests"));
    assert_eq!(selftests.len(), 3, "{selftests:?}");
    // packetdrill's self-tests must fail, with the message in their `// Failure:` line.
    for f in &selftests {
        let text = std::fs::read_to_string(f).unwrap();
        let want = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("// Failure: "))
            .unwrap()
            .replace('\\', "");
        let reports = run_linux(std::slice::from_ref(f), None, "selftests");
        let run = &reports[0].runs[0];
        match &run.verdict {
            Verdict::Failed(m) => assert!(
                m.contains(&want),
                "{}: wanted {want:?} in\n{m}",
                f.display()
            ),
            v => panic!("{}: must fail with {want:?}, got {v:?}", f.display()),
        }
    }
    // The rest must pass, but for the documented kernel differences.
    let mut failed = Vec::new();
    for f in &rest {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let reports = run_linux(
            std::slice::from_ref(f),
            Some(REFERENCE_TOLERANCE_USECS),
            "reference",
        );
        let verdict = &reports[0].runs[0].verdict;
        match KERNEL_DIFFERENCES.iter().find(|(n, _)| *n == name) {
            Some((_, why)) => println!("{name}: known kernel difference ({why}): {verdict:?}"),
            None if verdict.ok() => println!("{name}: ok"),
            None => failed.push(format!("{name}: {verdict:?}")),
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn the_namespace_goes_even_when_the_run_panics() {
    if !linux_available("the_namespace_goes_even_when_the_run_panics") {
        return;
    }
    let _one_at_a_time = LINUX.lock().unwrap_or_else(|e| e.into_inner());
    let panicked = std::thread::spawn(|| {
        let b = synack::script::linux::LinuxBackend::new().unwrap();
        let name = b.namespace().to_owned();
        assert!(
            namespaces().contains(&name),
            "{name} exists while the backend does"
        );
        std::panic::panic_any(name)
    })
    .join()
    .unwrap_err();
    let name = panicked.downcast::<String>().unwrap();
    assert!(!namespaces().contains(&name), "{name} outlived a panic");
}

fn namespaces() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn tso_super_segments_are_cut_like_a_nic_would() {
    let whole = wire::build_tcp(&wire::TcpOut {
        src: LOCAL,
        dst: REMOTE,
        sport: 8080,
        dport: 40000,
        seq: 7,
        ack: 9,
        flags: flag::FIN | flag::PSH | flag::ACK | flag::CWR,
        win: 100,
        urg: 0,
        options: &[
            TcpOpt::Nop,
            TcpOpt::Nop,
            TcpOpt::Timestamp { val: 1, ecr: 2 },
        ],
        payload_len: 2500,
    });
    let pieces = wire::split_tso(&whole, 1000);
    let seen: Vec<_> = pieces
        .iter()
        .map(|p| match wire::parse(p).unwrap().body {
            SeenBody::Tcp(t) => (t.seq, t.payload_len, t.flags),
            b => panic!("{b:?}"),
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (7, 1000, flag::ACK | flag::CWR),
            (1007, 1000, flag::ACK),
            (2007, 500, flag::FIN | flag::PSH | flag::ACK),
        ]
    );
    for p in &pieces {
        assert!(wire::ip_checksum_ok(p));
        let mut again = p.clone();
        wire::complete_checksum(&mut again);
        assert_eq!(&again, p, "each piece carries its own TCP checksum");
    }
    // Small enough already: untouched.
    assert_eq!(wire::split_tso(&whole, 3000), vec![whole.clone()]);
}

#[test]
fn shell_lines_that_set_sysctls_are_understood() {
    use synack::script::runner::{ShellCommand, shell_commands};
    assert_eq!(
        shell_commands(
            "../common/defaults.sh\n ../common/set_sysctls.py /proc/sys/net/ipv4/tcp_syn_retries=1 \
             /proc/sys/net/ipv4/tcp_sack=0\nsysctl -q net.ipv4.tcp_ecn=3; /tmp/sysctl_restore_${PPID}.sh"
        )
        .unwrap(),
        vec![
            ShellCommand::Defaults,
            ShellCommand::Sysctl("net.ipv4.tcp_syn_retries".into(), "1".into()),
            ShellCommand::Sysctl("net.ipv4.tcp_sack".into(), "0".into()),
            ShellCommand::Sysctl("net.ipv4.tcp_ecn".into(), "3".into()),
            ShellCommand::Restore,
        ]
    );
    assert!(shell_commands("echo hi").unwrap_err().contains("`echo hi`"));
}

#[test]
fn the_command_says_what_went_wrong_and_exits_non_zero() {
    let dir = tempdir("command");
    let bad = dir.join("bad.pkt");
    std::fs::write(
        &bad,
        "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 > Q 0:0(0)\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_synack"))
        .args(["script", "--capture"])
        .arg(&dir)
        .arg(&bad)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "{}:2:6: unknown TCP flag 'Q' in 'Q'",
            bad.display()
        )),
        "{text}"
    );
    // A script that holds exits 0; a capture directory that is not there is one sentence.
    let good = dir.join("good.pkt");
    std::fs::write(&good, "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_synack"))
        .args(["script", "--against", "smoltcp", "--capture"])
        .arg(&dir)
        .arg(&good)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("ok       ") && text.contains("[smoltcp]"),
        "{text}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_synack"))
        .args(["script", "--against", "smoltcp", "--capture"])
        .arg(dir.join("not-there"))
        .arg(&good)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("not-there does not exist: create it first"),
        "{err}"
    );
}

// ----- against smoltcp (no root) -----

/// Runs scripts against synack's own stack, captures in a fresh directory.
fn run_smoltcp(files: &[PathBuf], tag: &str) -> Report {
    let mut o = Options::new(files.to_vec(), Stack::Smoltcp);
    o.capture_dir = Some(tempdir(tag));
    synack::script::run(&o)
}

fn corpus() -> Vec<PathBuf> {
    let files = pkt_files(&repo().join("tests/scenarios"));
    assert!(files.len() >= 35, "the corpus is there: {files:?}");
    files
}

#[test]
fn the_corpus_passes_against_smoltcp() {
    let report = run_smoltcp(&corpus(), "smoltcp-corpus");
    let text = synack::script::render(&report);
    println!("{text}");
    assert!(report.ok(), "{text}");
    for s in &report.scripts {
        for r in &s.runs {
            // Every script ran to its end: held, or differed only where it says so.
            assert!(
                matches!(r.verdict, Verdict::Passed | Verdict::Differs(_)),
                "{}: {:?}",
                s.file.display(),
                r.verdict
            );
            let result = r.result.as_ref().unwrap();
            assert!(
                result
                    .events
                    .iter()
                    .all(|(_, e)| !matches!(e, EventStatus::NotReached | EventStatus::Failed(_))),
                "{}: {:?}",
                s.file.display(),
                result.events
            );
        }
    }
    // Every difference has its RFC section (or, for a socket option, its manual page).
    for d in report
        .scripts
        .iter()
        .flat_map(|s| &s.runs)
        .filter_map(|r| match &r.verdict {
            Verdict::Differs(d) => Some(d),
            _ => None,
        })
        .flatten()
    {
        assert!(
            d.reason.contains("RFC ") || d.reason.contains("(7)"),
            "line {}: {}",
            d.line,
            d.reason
        );
    }
}

#[test]
fn the_readme_shows_every_difference_the_corpus_marks() {
    let report = run_smoltcp(&corpus(), "smoltcp-table");
    let table = synack::script::differences_table(&report);
    assert!(table.lines().count() > 10, "{table}");
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.contains(&table),
        "README.md must show the table `synack script --compare tests/scenarios/*.pkt` prints:\n{table}"
    );
}

/// The capture files a run wrote, by name, with their bytes.
fn captures_in(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcapng"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_same_script_gives_the_same_capture_byte_for_byte() {
    let files: Vec<PathBuf> = [
        "rto-backoff",
        "zero-window",
        "udp-port-unreachable",
        "keepalive",
    ]
    .iter()
    .map(|n| repo().join(format!("tests/scenarios/{n}.pkt")))
    .collect();
    // Twice in this process, and once in another.
    let a = tempdir("same-a");
    let b = tempdir("same-b");
    let c = tempdir("same-c");
    for dir in [&a, &b] {
        let mut o = Options::new(files.clone(), Stack::Smoltcp);
        o.capture_dir = Some(dir.clone());
        assert!(synack::script::run(&o).ok());
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_synack"))
        .args(["script", "--against", "smoltcp", "--capture"])
        .arg(&c)
        .args(&files)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (ca, cb, cc) = (captures_in(&a), captures_in(&b), captures_in(&c));
    assert_eq!(ca.len(), files.len());
    for (name, _) in &ca {
        let frames = synack::analyze::read(&a.join(name)).unwrap();
        assert!(frames.len() >= 5, "{name}: {} frames", frames.len());
    }
    assert!(ca == cb, "two runs in one process differ");
    assert!(ca == cc, "a run in another process differs");
    // A virtual clock: the first packet at the fixed epoch, 2026-01-01.
    let frames = synack::analyze::read(&a.join("rto-backoff-smoltcp.pcapng")).unwrap();
    assert_eq!(frames[0].time, Duration::from_secs(1_767_225_600));
}

#[test]
fn a_wrong_expectation_against_smoltcp_fails_the_way_packetdrill_says_it() {
    let dir = tempdir("smoltcp-wrong");
    let file = dir.join("wrong.pkt");
    let src = std::fs::read_to_string(repo().join("tests/scenarios/handshake-passive.pkt"))
        .unwrap()
        .replace("+0    > P. 1:2(1) ack 1\n", "+0    > P. 1:2(1) ack 2\n");
    std::fs::write(&file, &src).unwrap();
    let line = src.lines().position(|l| l.contains("ack 2")).unwrap() + 1;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_synack"))
        .args(["script", "--against", "smoltcp", "--capture"])
        .arg(&dir)
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let want = format!(
        "FAILED   {f} [smoltcp]\n\
         {f}:{line}: error handling packet: live packet field tcp_ack_seq: expected: 2 (0x2) vs actual: 1 (0x1)\n\
         script packet:  0.200000 P. 1:2(1) ack 2\n\
         actual packet:  0.200000 P. 1:2(1) ack 1 win 32768\n\
         \x20        capture: {d}/wrong-smoltcp.pcapng\n",
        f = file.display(),
        d = dir.display()
    );
    assert!(text.starts_with(&want), "{text}\nwanted:\n{want}");
    // The capture is kept, and says what the line expected and what came.
    let frames = synack::analyze::read(&dir.join("wrong-smoltcp.pcapng")).unwrap();
    let comment = frames
        .iter()
        .filter_map(|f| f.comment.clone())
        .find(|c| c.starts_with(&format!("line {line} expected")))
        .unwrap();
    assert!(
        comment.contains("P. 1:2(1) ack 2; seen: P. 1:2(1) ack 1"),
        "{comment}"
    );
}

fn run_smol(src: &str) -> (synack::script::Script, synack::script::RunResult) {
    let script = parse(src);
    let t = tuning(&script, None).unwrap();
    let r = run_script(&script, &t, &mut SmoltcpBackend::new().unwrap());
    (script, r)
}

/// A passive open against smoltcp, the connection accepted as fd 4 at 0.1 s.
const SMOL_SERVER: &str = "\
0     socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0    bind(3, ..., ...) = 0
+0    listen(3, 1) = 0
+0    < S 0:0(0) win 32792 <mss 1000,nop,wscale 7>
+0    > S. 0:0(0) ack 1 <...>
+.1   < . 1:1(0) ack 1 win 257
+0    accept(3, ..., ...) = 4
";

#[test]
fn marked_differences_are_replaced_or_must_fail_and_the_rest_still_runs() {
    // Replaced: smoltcp runs its own line instead, then the rest.
    let src = format!(
        "{SMOL_SERVER}+.1   < P. 1:11(10) ack 1 win 257\n\
         // synack-expect-fail smoltcp: a 10 ms delayed ACK\n\
         // synack-smoltcp: +.01 > . 1:1(0) ack 11\n\
         +0    > . 1:1(0) ack 11\n\
         +0    read(4, ..., 100) = 10\n"
    );
    let (script, r) = run_smol(&src);
    assert_eq!(script.expected_failures[0].lines, vec![11]);
    assert_eq!(script.expected_failures[0].replaced_by, vec![10]);
    let v = judge(&script, "smoltcp", &r);
    let Verdict::Differs(d) = &v else {
        panic!("{v:?}")
    };
    assert_eq!((d.len(), d[0].line, d[0].message.as_deref()), (1, 11, None));
    let status = |line: u32| r.events.iter().find(|(l, _)| *l == line).unwrap().1.clone();
    assert_eq!(status(10), EventStatus::Passed);
    assert!(matches!(status(11), EventStatus::Differed(_)));
    assert_eq!(status(12), EventStatus::Passed);
    // On another stack the smoltcp line is not run, and the marked one is.
    assert!(
        script
            .events
            .iter()
            .any(|e| e.stack.as_deref() == Some("smoltcp") && e.line() == 10)
    );

    // Not replaced: the marked event runs and fails, the difference is kept with what was
    // seen, and the script goes on (here the read that follows still passes).
    let src = format!(
        "{SMOL_SERVER}+.1   < P. 1:11(10) ack 1 win 257\n\
         // synack-expect-fail smoltcp: a 10 ms delayed ACK\n\
         +0    > . 1:1(0) ack 11\n\
         +0    read(4, ..., 100) = 10\n\
         +0    write(4, ..., 5) = 5\n\
         +0    > P. 1:6(5) ack 11\n"
    );
    let (script, r) = run_smol(&src);
    let v = judge(&script, "smoltcp", &r);
    let Verdict::Differs(d) = &v else {
        panic!("{v:?}")
    };
    assert_eq!(d[0].line, 10);
    assert!(
        d[0].message.as_deref().unwrap().contains(
            "timing error: expected outbound packet at 0.200000 sec but happened at 0.210000 sec"
        ),
        "{d:?}"
    );
    assert!(
        r.events
            .iter()
            .skip(9)
            .all(|(l, e)| *l == 10 || *e == EventStatus::Passed)
    );

    // A later divergence that is not marked still fails the run.
    let (script, r) = run_smol(&src.replace("> P. 1:6(5) ack 11", "> P. 1:6(5) ack 12"));
    let v = judge(&script, "smoltcp", &r);
    assert!(
        matches!(&v, Verdict::Failed(m) if m.contains(":13: error handling packet")),
        "{v:?}"
    );

    // A mark on an event that holds is out of date: that fails too.
    let (script, r) = run_smol(&format!(
        "{SMOL_SERVER}// synack-expect-fail smoltcp: it does not\n+0    write(4, ..., 5) = 5\n"
    ));
    let v = judge(&script, "smoltcp", &r);
    assert!(
        matches!(&v, Verdict::UnexpectedPass { reason } if reason == "line 9: it does not"),
        "{v:?}"
    );
    assert!(!v.ok());

    // `next N` marks N events; one smoltcp line can stand for several.
    let (script, r) = run_smol(&format!(
        "{SMOL_SERVER}+0    write(4, ..., 10) = 10\n\
         // synack-expect-fail smoltcp next 2: one segment, not two\n\
         // synack-smoltcp: +0 > P. 1:11(10) ack 1\n\
         +0    > . 1:6(5) ack 1\n\
         +0    > P. 6:11(5) ack 1\n"
    ));
    assert_eq!(script.expected_failures[0].lines, vec![11, 12]);
    let v = judge(&script, "smoltcp", &r);
    assert!(matches!(&v, Verdict::Differs(d) if d.len() == 2), "{v:?}");
}

#[test]
fn directives_and_stack_lines_that_do_not_fit_are_refused_with_their_position() {
    assert_eq!(
        parse_err(
            "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n// synack-smoltcp: +0 close(3) = 0\n"
        ),
        "t.pkt:2:20: a 'synack-smoltcp:' event says what smoltcp does instead of marked events: put it under a '// synack-expect-fail smoltcp: reason' line, before the events it marks"
    );
    assert_eq!(
        parse_err(
            "// synack-expect-fail smoltcp anywhere: x\n// synack-smoltcp: +0 close(3) = 0\n0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n"
        ),
        "t.pkt:2:20: a 'synack-smoltcp:' event cannot replace part of an 'anywhere' directive: mark the events it stands for with '// synack-expect-fail smoltcp: reason' or '... next N: reason'"
    );
    assert!(
        parse_err("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n// synack-expect-fail smoltcp next 0: x\n+0 close(3) = 0\n")
            .starts_with("t.pkt:2:1: 'next 0': the number of events marked must be 1 or more")
    );
    assert_eq!(
        parse_err(
            "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n// synack-expect-fail smoltcp next 3: x\n+0 close(3) = 0\n"
        ),
        "t.pkt:2:1: this directive marks 3 events but only 1 follow it"
    );
    // A stack line is parsed as any event, with positions in the file.
    assert_eq!(
        parse_err(
            "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n// synack-expect-fail smoltcp: x\n// synack-smoltcp: +0 > Q 0:0(0)\n+0 close(3) = 0\n"
        ),
        "t.pkt:3:25: unknown TCP flag 'Q' in 'Q'"
    );
}

#[test]
fn smoltcp_calls_block_in_virtual_time_and_what_has_no_mapping_is_named() {
    // accept() blocks until the handshake completes, read() until data comes, and a
    // close with SO_LINGER until our FIN is acknowledged: each returns at the virtual
    // instant it could.
    let src = "\
0     socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0    bind(3, ..., ...) = 0
+0    listen(3, 1) = 0
+0...0.3 accept(3, ..., ...) = 4
+.1   < S 0:0(0) win 32792 <mss 1000,nop,wscale 7>
+0    > S. 0:0(0) ack 1 <...>
+.2   < . 1:1(0) ack 1 win 257
+0...0.2 read(4, ..., 100) = 10
+.2   < P. 1:11(10) ack 1 win 257
+.01  > . 1:1(0) ack 11
+0    setsockopt(4, SOL_SOCKET, SO_LINGER, {onoff=1, linger=5}, 8) = 0
+0...0.1 close(4) = 0
+0    > F. 1:1(0) ack 11
+.1   < . 11:11(0) ack 2 win 257
";
    let (script, r) = run_smol(src);
    assert_eq!(
        judge(&script, "smoltcp", &r),
        Verdict::Passed,
        "{:?}",
        r.failure
    );
    // A non-blocking connect answers EINPROGRESS, and SO_ERROR says how it ended.
    let src = "\
0     socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0    fcntl(3, F_SETFL, O_RDWR|O_NONBLOCK) = 0
+0    connect(3, ..., ...) = -1 EINPROGRESS (Operation now in progress)
+0    > S 0:0(0) <...>
+0    connect(3, ..., ...) = -1 EALREADY (Operation already in progress)
+.1   < R. 0:0(0) ack 1 win 0
+0    getsockopt(3, SOL_SOCKET, SO_ERROR, [111], [4]) = 0
";
    let (script, r) = run_smol(src);
    assert_eq!(
        judge(&script, "smoltcp", &r),
        Verdict::Passed,
        "{:?}",
        r.failure
    );
    // What the node has no counterpart for is an error that names it.
    let (_, r) = run_smol(
        "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 setsockopt(3, SOL_TCP, TCP_MAXSEG, [500], 4) = 0\n",
    );
    let m = r.failure.unwrap().message;
    assert!(
        m.starts_with("t.pkt:2: runtime error in setsockopt call: setsockopt TCP_MAXSEG: synack's node has no counterpart for it"),
        "{m}"
    );
    let (_, r) = run_smol(&format!("{SMOL_SERVER}+0 recv(4, ..., 10, MSG_PEEK) = 0\n"));
    let m = r.failure.unwrap().message;
    assert!(
        m.contains("recv flags MSG_PEEK: the smoltcp backend knows MSG_DONTWAIT"),
        "{m}"
    );
}

// ----- `synack demo --scenario` (no root) -----

#[test]
fn each_named_scenario_runs_without_root_and_says_what_to_look_at() {
    use synack::script::scenarios;
    let dir = tempdir("named");
    for named in scenarios::NAMED {
        // The built-in script is the corpus's file.
        let on_disk =
            std::fs::read_to_string(repo().join("tests/scenarios").join(named.file)).unwrap();
        assert_eq!(named.source, on_disk, "{}", named.name);
        let capture = dir.join(format!("{}.pcapng", named.name));
        // Run from a directory with no tests/scenarios in it: the script is built in.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_synack"))
            .current_dir(&dir)
            .args(["demo", "--scenario", named.name, "--capture"])
            .arg(&capture)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{}: {err}", named.name);
        assert!(err.contains(&format!(
            "synack demo --scenario {}: {}",
            named.name, named.about
        )));
        assert!(err.contains("synack's stack held to the script"), "{err}");
        assert!(
            err.contains("the journey, as synack's stack saw it:"),
            "{err}"
        );
        assert!(err.contains("synack demo: what to look at:"), "{err}");
        assert!(
            err.contains(&format!("synack ladder {}", capture.display())),
            "{err}"
        );
        // Every pointer names real frames, and the capture has them.
        let frames = synack::analyze::read(&capture).unwrap();
        let played = scenarios::play(named, None, false).unwrap();
        assert_eq!(frames.len(), played.result.packets.len());
        for look in &played.look {
            assert!(!look.contains('?'), "{}: {look}", named.name);
            assert!(
                err.contains(look.as_str()),
                "{}: {look} not in\n{err}",
                named.name
            );
            for n in look
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|w| w.parse::<usize>().ok())
                .filter(|_| look.contains("frame"))
                .take(1)
            {
                assert!(n >= 1 && n <= frames.len(), "{}: frame {n}", named.name);
            }
        }
    }
    // TIME-WAIT's end is in its journey: the stack ran on past the script.
    let played = scenarios::play(scenarios::find("time-wait").unwrap(), None, false).unwrap();
    let journey: String = played
        .journey
        .conns
        .iter()
        .map(synack::journey::render::timeline_string)
        .collect();
    assert!(journey.contains("TIME-WAIT over"), "{journey}");
}

// ----- both stacks (root) -----

#[test]
fn compare_runs_both_stacks_side_by_side_and_keeps_both_captures() {
    if !linux_available("compare_runs_both_stacks_side_by_side_and_keeps_both_captures") {
        return;
    }
    let _one_at_a_time = LINUX.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempdir("compare-both");
    let files: Vec<PathBuf> = ["rto-backoff", "handshake-passive"]
        .iter()
        .map(|n| repo().join(format!("tests/scenarios/{n}.pkt")))
        .collect();
    let mut text = String::new();
    for attempt in 1..=ATTEMPTS {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_synack"))
            .args(["script", "--compare", "--capture"])
            .arg(&dir)
            .args(&files)
            .output()
            .unwrap();
        text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.code() == Some(0) {
            break;
        }
        eprintln!("attempt {attempt}:\n{text}");
    }
    assert!(text.ends_with("4 passed, 0 failed\n"), "{text}");
    for f in &files {
        let stem = f.file_stem().unwrap().to_string_lossy();
        assert!(
            text.contains(&format!("ok       {} [linux]", f.display())),
            "{text}"
        );
        assert!(
            text.contains(&format!("differs  {} [smoltcp] as marked", f.display())),
            "{text}"
        );
        for stack in ["linux", "smoltcp"] {
            let frames =
                synack::analyze::read(&dir.join(format!("{stem}-{stack}.pcapng"))).unwrap();
            assert!(
                frames.iter().any(|f| f
                    .comment
                    .as_deref()
                    .is_some_and(|c| c.starts_with("expected by the script (line "))),
                "{stem}-{stack}"
            );
        }
    }
    // Line by line: smoltcp's own lines, the marked ones, and the rest alike.
    let row = |needle: &str| {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no row with {needle:?} in\n{text}"))
            .to_owned()
    };
    assert!(row("[smoltcp] +1 > P. 1:101(100) ack 1").starts_with("<>"));
    let marked = row("+.2~+.5   > P. 1:101(100) ack 1");
    assert!(
        marked.starts_with("<>") && marked.ends_with("ok       differs"),
        "{marked}"
    );
    let same = row("+.1   < . 1:1(0) ack 101 win 257");
    assert!(
        same.starts_with("  ") && same.ends_with("ok       ok"),
        "{same}"
    );
    assert!(
        text.contains("| stack | what differs | where (scenario, lines) |"),
        "{text}"
    );
    assert!(text.contains("`rto-backoff` 24, 27, 28, 29"), "{text}");
}
