//! A user fetches with synack as the client: from the kernel's TCP (python's
//! http.server in the namespace), from synack serve through two-stacks.sh, over HTTPS,
//! and into the failures: a name that does not resolve, a port nothing listens on, a
//! certificate that is not trusted.

mod common;

use std::process::{Command, Output};

use common::*;

/// `synack fetch` inside the namespace, on tun0 at 10.77.0.2, capturing and journaling
/// (JSON) into the test's directory.
fn fetch(ns: &Netns, tag: &str, args: &[&str]) -> (Output, std::path::PathBuf, String) {
    let capture = ns.dir.join(format!("{tag}.pcapng"));
    let journey = ns.dir.join(format!("{tag}.journey"));
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            env!("CARGO_BIN_EXE_synack"),
            "fetch",
        ])
        .args([
            "--tun",
            "tun0",
            "--addr",
            "10.77.0.2/24",
            "--max-time",
            "20",
        ])
        .arg("--capture")
        .arg(&capture)
        .arg("--journey-file")
        .arg(&journey)
        .args(args)
        .output()
        .unwrap();
    let journey = std::fs::read_to_string(&journey).unwrap_or_default();
    (out, capture, journey)
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// python3's http.server on the kernel side (10.77.0.1:8000), serving `dir`, speaking
/// HTTP/1.1 so the connection stays open and our side closes first.
struct PyServer(std::process::Child);

impl PyServer {
    fn start(ns: &Netns, dir: &std::path::Path) -> Option<PyServer> {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "python3", "-m", "http.server"])
            .args([
                "--protocol",
                "HTTP/1.1",
                "--bind",
                "10.77.0.1",
                "8000",
                "--directory",
            ])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let Ok(child) = child else {
            assert!(std::env::var("CI").is_err(), "CI must install python3");
            eprintln!("skipping: python3 is not installed");
            return None;
        };
        let server = PyServer(child);
        let up = wait_until(10.0, || {
            let out = ns.run(&["ss", "-Htln", "sport = :8000"]);
            !String::from_utf8_lossy(&out.stdout).trim().is_empty()
        });
        assert!(up, "python3 -m http.server did not start");
        Some(server)
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn fetch_from_the_kernels_tcp_walks_through_time_wait() {
    let Some(ns) = Netns::new("fetch-py") else {
        return;
    };
    let www = ns.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(www.join("blob.bin"), &body).unwrap();
    let Some(_py) = PyServer::start(&ns, &www) else {
        return;
    };
    let got = ns.dir.join("got.bin");
    let (out, capture, journey) = fetch(
        &ns,
        "py",
        &[
            "--journey",
            "text",
            "--time-wait",
            "2",
            "-o",
            got.to_str().unwrap(),
            "http://10.77.0.1:8000/blob.bin",
        ],
    );
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(0), "{err}\n{journey}");
    assert!(
        std::fs::read(&got).unwrap() == body,
        "the body is byte-exact"
    );
    // Our side closed first and waited out TIME-WAIT (--time-wait 2) before leaving.
    for needle in [
        "SYN sent from 10.77.0.2:",
        "SYN-SENT -> ESTABLISHED",
        "request GET /blob.bin",
        "response HTTP/1.1 200",
        "ESTABLISHED -> FIN-WAIT-1",
        "-> TIME-WAIT",
        "TIME-WAIT over after 2.",
    ] {
        assert!(journey.contains(needle), "{needle:?} missing:\n{journey}");
    }
    assert!(err.contains("we closed first (TIME-WAIT)"), "{err}");

    // The capture, read with etherparse: our SYN goes out, the kernel's SYN-ACK acks our
    // ISN+1, our FIN comes first and is acknowledged, and the comments say so.
    let pkts = read_capture(&capture);
    let syn = pkts
        .iter()
        .find(|p| p.tcp.is_some_and(|t| t.syn && !t.ack_flag))
        .expect("our SYN");
    assert!(!syn.inbound, "the SYN is ours");
    let isn = syn.tcp.unwrap().seq;
    let comment = syn.comment.as_deref().unwrap_or_default();
    assert!(
        comment.contains("handshake 1/3") && comment.contains("CLOSED -> SYN-SENT"),
        "{comment}"
    );
    let synack = pkts
        .iter()
        .find(|p| p.tcp.is_some_and(|t| t.syn && t.ack_flag))
        .expect("the SYN-ACK");
    assert!(synack.inbound && synack.tcp.unwrap().ack == isn.wrapping_add(1));
    let fins: Vec<&Pkt> = pkts
        .iter()
        .filter(|p| p.tcp.is_some_and(|t| t.fin))
        .collect();
    assert!(!fins[0].inbound, "our FIN is the first FIN");
    let f = fins[0].tcp.unwrap();
    let end = f.seq.wrapping_add(f.len).wrapping_add(1);
    assert!(
        pkts.iter()
            .any(|p| p.inbound && p.tcp.is_some_and(|t| t.ack_flag && t.ack == end)),
        "the kernel acknowledged our FIN"
    );
    if let Some(problems) = tshark_problems(&capture) {
        assert!(problems.is_empty(), "tshark: {problems:?}");
    }
}

#[test]
fn waiting_out_time_wait_after_max_time_sleeps() {
    // --max-time bounds the exchange, not TIME-WAIT: once it has passed, the wait for the
    // TIME-WAIT timer must sleep in poll(2), not wake at once over and over.
    let Some(ns) = Netns::new("fetch-tw-cpu") else {
        return;
    };
    let www = ns.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("small.txt"), b"small").unwrap();
    let Some(_py) = PyServer::start(&ns, &www) else {
        return;
    };
    // Reaped by wait4 below, which also says what the child cost.
    #[allow(clippy::zombie_processes)]
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            env!("CARGO_BIN_EXE_synack"),
            "fetch",
        ])
        .args(["--tun", "tun0", "--addr", "10.77.0.2/24", "--no-capture"])
        .args(["--journey", "off", "--max-time", "2", "--time-wait", "4"])
        .args(["-o", "/dev/null", "http://10.77.0.1:8000/small.txt"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child, not yet waited for; status and usage outlive the call.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{status:#x}: {err}"
    );
    assert!(err.contains("we closed first (TIME-WAIT)"), "{err}");
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu = secs(usage.ru_utime) + secs(usage.ru_stime);
    // A busy loop would spend most of the 2 s after --max-time on the CPU.
    assert!(cpu < 0.5, "{cpu:.2} s of CPU for a 4 s TIME-WAIT");
}

#[test]
fn a_port_nothing_listens_on_is_refused_and_an_http_error_has_its_code() {
    let Some(ns) = Netns::new("fetch-rst") else {
        return;
    };
    let (out, capture, journey) = fetch(&ns, "refused", &["http://10.77.0.1:9/"]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("refused"), "{err}");
    assert!(journey.contains("RST from the peer"), "{journey}");
    let pkts = read_capture(&capture);
    assert!(
        pkts.iter()
            .any(|p| p.inbound && p.tcp.is_some_and(|t| t.rst)),
        "the kernel's RST is in the capture"
    );

    let www = ns.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let Some(_py) = PyServer::start(&ns, &www) else {
        return;
    };
    let (out, _, _) = fetch(
        &ns,
        "missing",
        &["--no-time-wait", "http://10.77.0.1:8000/missing"],
    );
    assert_eq!(out.status.code(), Some(6), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("404"));
}

fn two_stacks(ns_name: &str, dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("netns-scripts/two-stacks.sh"),
    )
    .args(["-n", ns_name, "-o", dir.to_str().unwrap()])
    .args(args)
    .output()
    .unwrap()
}

#[test]
fn https_between_two_stacks_through_the_kernel_and_a_name_that_does_not_resolve() {
    // The script makes its own namespace; this one gives the test a unique name and dir.
    let Some(ns) = Netns::new("two") else { return };
    let name = format!("{}-2", ns.name);
    let dir = ns.dir.join("two");
    let out = two_stacks(
        &name,
        &dir,
        &["https://synack.test/echo", "--", "--no-time-wait"],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr_of(&out)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    for needle in [
        "client  resolve  synack.test is 10.77.0.2",
        "TLS handshake done",
        "GET /echo from 10.77.0.2:443: 200 OK",
        "server  resolve  DNS query",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
    // Each side's capture carries its own secrets: tshark decrypts both.
    for side in ["fetch", "serve"] {
        let capture = dir.join(format!("{side}.pcapng"));
        let pkts = read_capture(&capture);
        assert!(pkts.len() > 8, "{side}: {} packets", pkts.len());
        if let Some(requests) = tshark_fields(&capture, "http.request", &["http.request.uri"]) {
            assert_eq!(requests, ["/echo"], "{side}: the request decrypts");
        }
    }

    let out = two_stacks(&name, &dir, &["http://nope.test/"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr_of(&out)
    );
    assert!(text.contains("cannot resolve nope.test"), "{text}");
    assert!(text.contains("NXDOMAIN"), "{text}");
}

#[test]
fn https_with_a_certificate_we_do_not_trust_fails_with_a_tls_error() {
    let Some(ns) = Netns::new("two-tls") else {
        return;
    };
    let name = format!("{}-2", ns.name);
    let dir = ns.dir.join("two");
    // A certificate of another identity: the server's does not chain to it.
    let other = synack::tls::generate(
        &["synack.test".into()],
        std::net::Ipv4Addr::new(10, 77, 0, 2),
    )
    .unwrap();
    let wrong = ns.dir.join("other.pem");
    std::fs::write(&wrong, other.cert_pem).unwrap();
    let out = two_stacks(
        &name,
        &dir,
        &["-c", wrong.to_str().unwrap(), "https://synack.test/"],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr_of(&out)
    );
    assert_eq!(out.status.code(), Some(7), "{text}");
    assert!(text.contains("synack: TLS:"), "{text}");
}

#[test]
fn a_resolver_that_is_not_there_fails_at_once_and_says_what_to_do() {
    let Some(ns) = Netns::new("fetch-nodns") else {
        return;
    };
    // Nothing listens on UDP 53 at the kernel side: it answers ICMP port unreachable.
    let (out, capture, journey) = fetch(
        &ns,
        "nodns",
        &["--resolver", "10.77.0.1", "http://nowhere.test/"],
    );
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("ICMP port unreachable") && err.contains("--resolver"),
        "{err}"
    );
    assert!(journey.contains("ICMP port unreachable"), "{journey}");
    // The first ICMP answer ends it: no retries waited out (smoltcp would retry for
    // 9.5 s). The kernel may let the first query go unanswered (its ICMP rate limit is
    // shared by the whole machine's test namespaces), so allow the first retry.
    let pkts = read_capture(&capture);
    let queries = pkts.iter().filter(|p| !p.inbound).count();
    assert!((1..=2).contains(&queries), "{pkts:?}");
    assert!(
        pkts.last().is_some_and(|p| p.inbound),
        "the ICMP answer is the last word"
    );
}
