//! What the integration tests share: a network namespace of their own (made with the
//! project's up.sh, removed with down.sh even when the test fails), the real synack binary
//! serving in it, real clients (curl, and the kernel's TCP from a thread that entered the
//! namespace), and a capture reader built on pcap-file and etherparse, not on synack.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const STACK: &str = "10.77.0.2";
pub const KERNEL: &str = "10.77.0.1";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Why this machine cannot run namespace tests, if it cannot.
fn missing_privilege() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces and /dev/net/tun)".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("needs /dev/net/tun (modprobe tun)".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("needs the ip command (iproute2)".into());
    }
    None
}

/// Waits until `f` is true or `secs` pass; returns whether it became true.
pub fn wait_until(secs: f64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A network namespace with tun0 at 10.77.0.1/24, unique to one test.
pub struct Netns {
    pub name: String,
    pub dir: PathBuf,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Netns {
    /// `None` (with the reason printed) when the machine cannot do it and this is not CI;
    /// under `CI=true` a missing privilege fails the test loudly instead.
    pub fn new(tag: &str) -> Option<Netns> {
        if let Some(why) = missing_privilege() {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true and this test {why}: CI must run it as root");
            }
            // Straight to the stderr handle: libtest captures eprintln! of passing tests,
            // and a skip that says nothing looks like a pass.
            let _ = writeln!(std::io::stderr(), "skipping {tag}: {why}");
            return None;
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("synt-{}-{n}-{tag}", std::process::id());
        let name: String = name.chars().take(40).collect();
        let dir = repo().join("target/test-runs").join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ns = Netns { name, dir };
        let out = Command::new(repo().join("netns-scripts/up.sh"))
            .args(["-n", &ns.name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "up.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(ns)
    }

    /// Runs a command inside the namespace.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap()
    }

    pub fn curl(&self, args: &[&str]) -> Output {
        let mut all = vec!["curl", "-sS", "--max-time", "60"];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// Runs `f` on a thread that has entered the namespace, so std's sockets there are the
    /// kernel's TCP on the other side of tun0.
    pub fn in_ns<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        self.spawn_in_ns(f).join().unwrap()
    }

    /// As [`in_ns`](Self::in_ns), without waiting for the thread.
    pub fn spawn_in_ns<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> std::thread::JoinHandle<R> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let fd = File::open(&path).unwrap();
            // SAFETY: setns on a valid namespace fd; it changes only this thread.
            let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("netns-scripts/down.sh"))
            .args(["-n", &self.name])
            .output();
    }
}

/// The real synack binary serving inside a namespace.
pub struct Server {
    child: Option<Child>,
    pub capture: PathBuf,
    pub journey: PathBuf,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `synack serve` with a capture and JSON journey in the test's directory, and
    /// waits until it says it is serving.
    pub fn start(ns: &Netns, extra: &[&str]) -> Server {
        let capture = ns.dir.join("capture.pcapng");
        let journey = ns.dir.join("journey.jsonl");
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &ns.name,
            env!("CARGO_BIN_EXE_synack"),
            "serve",
        ]);
        cmd.args(["--tun", "tun0", "--addr", "10.77.0.2/24"]);
        if !extra.contains(&"--no-capture") {
            cmd.arg("--capture").arg(&capture);
        }
        if !extra.contains(&"--journey") {
            cmd.args(["--journey", "json", "--journey-file"])
                .arg(&journey);
        }
        cmd.args(extra);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let mut server = Server {
            child: Some(child),
            capture,
            journey,
            stderr,
        };
        let ready = wait_until(20.0, || {
            server.stderr().contains("synack: serving") || server.exited()
        });
        assert!(
            ready && !server.exited(),
            "server did not start:\n{}",
            server.stderr()
        );
        server
    }

    /// synack's pid (`ip netns exec` execs it, so it is the child's).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().unwrap().is_some())
    }

    /// SIGTERM, then waits for a clean exit (at most 20 s); returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server already stopped");
        // `ip netns exec` execs synack, so the child's pid is synack's.
        if child.try_wait().unwrap().is_none() {
            // SAFETY: sending a signal to our own child, which has not been reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                // Let the stderr reader catch the last lines.
                wait_until(2.0, || self.stderr().contains("synack: stopped"));
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "server did not stop within 20 s of SIGTERM:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The JSON journey events written so far.
    pub fn journey_events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.journey)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad journey line {l:?}: {e}"))
            })
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A command's stdout, after checking it succeeded (its stderr is the failure message).
pub fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A TCP connection from the kernel's stack in the namespace to synack, on its own thread.
pub fn kernel_tcp<R: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce(TcpStream) -> R + Send + 'static,
) -> R {
    ns.in_ns(move || {
        let addr: SocketAddrV4 = format!("{STACK}:80").parse().unwrap();
        let s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(10)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        f(s)
    })
}

/// Sends `request` and reads until the server closes (or the read timeout).
pub fn exchange(mut s: TcpStream, request: &[u8]) -> String {
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// One packet of a capture, read with pcap-file and etherparse.
#[derive(Debug, Clone)]
pub struct Pkt {
    pub index: usize,
    pub ts_ns: u128,
    pub inbound: bool,
    pub comment: Option<String>,
    pub data: Vec<u8>,
    pub tcp: Option<Tcp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcp {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub seq: u32,
    pub ack: u32,
    pub syn: bool,
    pub ack_flag: bool,
    pub fin: bool,
    pub rst: bool,
    pub len: u32,
    pub window: u16,
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
}

impl Tcp {
    /// The client's port: the one that is not a server port (HTTP 80, HTTPS 443).
    pub fn client_port(&self) -> u16 {
        if matches!(self.src.port(), 80 | 443) {
            self.dst.port()
        } else {
            self.src.port()
        }
    }
}

fn parse_tcp(data: &[u8]) -> Option<Tcp> {
    use etherparse::{NetSlice, SlicedPacket, TcpOptionElement, TransportSlice};
    let p = SlicedPacket::from_ip(data).ok()?;
    let Some(NetSlice::Ipv4(ip)) = p.net else {
        return None;
    };
    let Some(TransportSlice::Tcp(t)) = p.transport else {
        return None;
    };
    let h = ip.header();
    let (mut mss, mut wscale) = (None, None);
    for o in t.options_iterator().flatten() {
        match o {
            TcpOptionElement::MaximumSegmentSize(m) => mss = Some(m),
            TcpOptionElement::WindowScale(w) => wscale = Some(w),
            _ => {}
        }
    }
    Some(Tcp {
        src: SocketAddrV4::new(h.source_addr(), t.source_port()),
        dst: SocketAddrV4::new(h.destination_addr(), t.destination_port()),
        seq: t.sequence_number(),
        ack: t.acknowledgment_number(),
        syn: t.syn(),
        ack_flag: t.ack(),
        fin: t.fin(),
        rst: t.rst(),
        len: t.payload().len() as u32,
        window: t.window_size(),
        mss,
        wscale,
    })
}

/// Reads every packet of a pcapng file; panics (failing the test) on any broken block.
pub fn read_capture(path: &Path) -> Vec<Pkt> {
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
    use pcap_file::pcapng::{Block, PcapNgReader};
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = PcapNgReader::new(file).expect("pcapng section header");
    let mut out = Vec::new();
    let mut saw_tsresol = false;
    while let Some(block) = reader.next_block() {
        match block.expect("a well-formed pcapng block") {
            Block::InterfaceDescription(idb) => {
                assert_eq!(idb.linktype, pcap_file::DataLink::RAW, "Raw IP link type");
                saw_tsresol = idb.options.iter().any(|o| {
                    matches!(o, pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption::IfTsResol(9))
                });
            }
            Block::EnhancedPacket(epb) => {
                let mut comment = None;
                let mut flags = None;
                for o in &epb.options {
                    match o {
                        EnhancedPacketOption::Comment(c) => comment = Some(c.to_string()),
                        EnhancedPacketOption::Flags(f) => flags = Some(*f),
                        _ => {}
                    }
                }
                let flags = flags.expect("every packet carries epb_flags");
                assert!(
                    flags & 3 == 1 || flags & 3 == 2,
                    "direction is inbound or outbound"
                );
                let data = epb.data.to_vec();
                out.push(Pkt {
                    index: out.len() + 1,
                    ts_ns: epb.timestamp.as_nanos(),
                    inbound: flags & 3 == 1,
                    comment,
                    tcp: parse_tcp(&data),
                    data,
                });
            }
            _ => {}
        }
    }
    assert!(
        saw_tsresol,
        "the interface block declares nanosecond timestamps (if_tsresol 9)"
    );
    out
}

/// The TCP packets of one connection (by client port), in capture order.
pub fn connection(pkts: &[Pkt], client_port: u16) -> Vec<(Pkt, Tcp)> {
    pkts.iter()
        .filter_map(|p| {
            p.tcp
                .filter(|t| t.client_port() == client_port)
                .map(|t| (p.clone(), t))
        })
        .collect()
}

/// Client ports of all connections in the capture, in order of their first SYN.
pub fn client_ports(pkts: &[Pkt]) -> Vec<u16> {
    let mut ports = Vec::new();
    for t in pkts.iter().filter_map(|p| p.tcp) {
        if t.syn && !t.ack_flag && !ports.contains(&t.src.port()) {
            ports.push(t.src.port());
        }
    }
    ports
}

/// Checks one complete connection's handshake and teardown numbers in the capture, as
/// read by etherparse: the SYN-ACK acknowledges the client's ISN+1, the third segment our
/// ISN+1, each FIN is acknowledged, and the handshake and teardown segments carry comments.
pub fn check_connection(pkts: &[Pkt], client_port: u16) {
    let c = connection(pkts, client_port);
    let (syn_p, syn) = c
        .iter()
        .find(|(_, t)| t.syn && !t.ack_flag)
        .cloned()
        .expect("a SYN");
    let (synack_p, synack) = c
        .iter()
        .find(|(_, t)| t.syn && t.ack_flag)
        .cloned()
        .expect("a SYN-ACK");
    assert!(
        syn_p.inbound && !synack_p.inbound,
        "SYN comes in, SYN-ACK goes out"
    );
    assert_eq!(
        synack.ack,
        syn.seq.wrapping_add(1),
        "SYN-ACK acknowledges ISN+1"
    );
    let (ack3_p, ack3) = c
        .iter()
        .find(|(p, t)| p.inbound && !t.syn && t.ack_flag && t.ack == synack.seq.wrapping_add(1))
        .cloned()
        .expect("the third handshake segment acknowledges our ISN+1");
    let says = |p: &Pkt, needle: &str| {
        let comment = p.comment.as_deref().unwrap_or("");
        assert!(
            comment.contains(needle),
            "packet {}: {needle:?} not in its comment {comment:?}",
            p.index
        );
    };
    says(&syn_p, "SYN, handshake 1/3, ISN");
    says(&synack_p, "SYN-ACK, handshake 2/3");
    if ack3.len == 0 {
        says(&ack3_p, "handshake 3/3");
        says(&ack3_p, "SYN-RECEIVED -> ESTABLISHED");
    }
    let fins: Vec<&(Pkt, Tcp)> = c.iter().filter(|(_, t)| t.fin).collect();
    assert!(!fins.is_empty(), "the connection was closed with FINs");
    for (fp, f) in &fins {
        says(fp, "FIN");
        let end = f.seq.wrapping_add(f.len).wrapping_add(1);
        let acked = c
            .iter()
            .any(|(p, t)| p.inbound != fp.inbound && t.ack_flag && t.ack == end);
        // A peer that has already closed its socket answers a FIN with a RST (RFC 9293
        // §3.10.7.1): curl does, after an HTTPS exchange, when close_notify and our FIN
        // reach a socket it has given up.
        let reset = c
            .iter()
            .any(|(p, t)| p.inbound != fp.inbound && t.rst && p.index > fp.index);
        assert!(
            acked || reset,
            "the FIN in packet {} is acknowledged (ACK {end}) or answered by a RST",
            fp.index
        );
    }
    assert!(
        c.iter().any(|(p, _)| p.inbound) && c.iter().any(|(p, _)| !p.inbound),
        "both directions"
    );
}

/// Runs tshark on a capture and returns its output lines, or `None` if tshark is not
/// installed. A capture tshark cannot read fails the test.
fn tshark(path: &Path, args: &[&str]) -> Option<Vec<String>> {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(path)
        .args(args)
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "tshark could not read {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect(),
    )
}

/// Problems tshark finds in a capture, or `None` if tshark is not installed.
pub fn tshark_problems(path: &Path) -> Option<Vec<String>> {
    // Out-of-order reassembly: Wireshark 4.0's in-order reassembler reports "New fragment
    // overlaps old data (retransmission?)" for a retransmission of bytes it has already
    // put into a finished PDU (a fast retransmission of a segment our capture saw leave);
    // the setting Wireshark's own docs suggest for lossy captures does not.
    let checks = [
        "tcp.check_checksum:TRUE",
        "ip.check_checksum:TRUE",
        "udp.check_checksum:TRUE",
        "tcp.reassemble_out_of_order:TRUE",
    ];
    let mut args: Vec<&str> = checks.iter().flat_map(|c| ["-o", c]).collect();
    args.extend([
        "-Y",
        "_ws.malformed || ip.checksum.status == 0 || tcp.checksum.status == 0 || udp.checksum.status == 0",
    ]);
    tshark(path, &args)
}

/// `tshark -T fields` output, or `None` without tshark.
pub fn tshark_fields(path: &Path, filter: &str, fields: &[&str]) -> Option<Vec<String>> {
    let mut args = Vec::new();
    if !filter.is_empty() {
        args.extend(["-Y", filter]);
    }
    args.extend(["-T", "fields", "-E", "separator=|"]);
    args.extend(fields.iter().flat_map(|f| ["-e", f]));
    tshark(path, &args)
}

/// The `/bytes/N` body: byte i is PATTERN[i % 64] (kept here independently of synack).
pub fn expected_byte(i: u64) -> u8 {
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.\n"[(i % 64) as usize]
}
