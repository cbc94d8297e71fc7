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
use synack::script::wire::{self, SeenBody};
use synack::script::{
    EventStatus, Options, Stack, Tuning, Verdict, judge, parser, run_script, tuning,
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
    let dir = tempdir("compare");
    let file = dir.join("one.pkt");
    std::fs::write(&file, SERVER).unwrap();
    let mut o = Options::new(vec![file], Stack::Smoltcp);
    o.compare = true;
    o.capture_dir = Some(dir.clone());
    let report = {
        let _one_at_a_time = LINUX.lock().unwrap_or_else(|e| e.into_inner());
        synack::script::run(&o)
    };
    let text = synack::script::render(&report);
    assert!(
        text.contains("skipped")
            && text.contains("[smoltcp]: the smoltcp backend is not built yet"),
        "{text}"
    );
    assert!(text.contains("  line  script"), "{text}");
    assert!(text.contains("n/a"), "{text}");
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
    // A stack that cannot run here is said so, and a run with no stack is no success.
    let good = dir.join("good.pkt");
    std::fs::write(&good, "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_synack"))
        .args(["script", "--against", "smoltcp", "--capture"])
        .arg(&dir)
        .arg(&good)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("[smoltcp]: the smoltcp backend is not built yet"),
        "{text}"
    );
}
