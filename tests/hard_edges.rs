//! What real clients and attackers do to a server, with the real tools: bursts of new
//! connections (ab, wrk), spoofed SYNs and SYN floods (hping3 from an address inside the
//! namespace, which never answers), pings with fragments, and the start-up mistakes a user
//! makes. Each needs root and a namespace; the tools are what CI installs.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// Whether every tool is installed; says which is missing otherwise (and fails under CI,
/// which installs them).
fn have(tools: &[&str]) -> bool {
    for tool in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true and {tool} is not installed: .ci/run must install it");
            }
            eprintln!("skipping: needs {tool}");
            return false;
        }
    }
    true
}

fn stats(ns: &Netns) -> serde_json::Value {
    let out = ns.curl(&["--max-time", "5", "http://10.77.0.2/stats"]);
    serde_json::from_str(&stdout_of(&out)).expect("/stats is JSON")
}

/// A line of ab's report, as a number ("Failed requests:        0").
fn ab_field(report: &str, field: &str) -> u64 {
    report
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().find_map(|w| w.parse().ok()))
        .unwrap_or_else(|| panic!("no {field:?} in ab's report:\n{report}"))
}

#[test]
fn bursts_of_new_connections_are_never_refused() {
    let Some(ns) = Netns::new("bursts") else {
        return;
    };
    if !have(&["ab", "wrk"]) {
        return;
    }
    let mut server = Server::start(&ns, &["--no-capture", "--journey", "off"]);
    // Twenty at once, kept alive (this once got RST/ACK from a busy listener pool).
    let ab = ns.run(&[
        "ab",
        "-k",
        "-s",
        "10",
        "-c",
        "20",
        "-n",
        "1000",
        "http://10.77.0.2/",
    ]);
    let report = stdout_of(&ab);
    assert_eq!(ab_field(&report, "Complete requests:"), 1000, "{report}");
    assert_eq!(ab_field(&report, "Failed requests:"), 0, "{report}");
    // A hundred at once, a new connection per request (HTTP/1.0: we close first).
    let ab = ns.run(&[
        "ab",
        "-s",
        "10",
        "-c",
        "100",
        "-n",
        "3000",
        "http://10.77.0.2/",
    ]);
    let report = stdout_of(&ab);
    assert_eq!(ab_field(&report, "Failed requests:"), 0, "{report}");
    // A thousand kept-alive connections.
    let wrk = ns.run(&[
        "sh",
        "-c",
        "ulimit -n 20000; wrk -t2 -c1000 -d3 --timeout 10s http://10.77.0.2/bytes/100",
    ]);
    let report = stdout_of(&wrk);
    assert!(!report.contains("Socket errors"), "{report}");
    assert!(!report.contains("Non-2xx"), "{report}");
    let s = stats(&ns);
    assert_eq!(s["node"]["syn_dropped"], 0, "{s}");
    assert_eq!(s["node"]["resets_sent"], 0, "no SYN is ever refused: {s}");
    assert!(server.stop().success());
}

#[test]
fn spoofed_syns_never_keep_a_real_client_out() {
    let Some(ns) = Netns::new("syn-flood") else {
        return;
    };
    if !have(&["hping3"]) {
        return;
    }
    let mut server = Server::start(
        &ns,
        &["--no-capture", "--journey", "off", "--syn-backlog", "64"],
    );
    let connect = |ns: &Netns| {
        ns.in_ns(|| {
            let addr: std::net::SocketAddr = "10.77.0.2:80".parse().unwrap();
            // Within a second, or not at all.
            let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                .expect("a real client connects within a second");
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            exchange(s, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        })
    };
    // Sixteen SYNs from an address that never answers: they sit in the SYN queue, not
    // in the accept queue.
    let out = ns.run(&[
        "hping3",
        "-q",
        "-S",
        "-p",
        "80",
        "-a",
        "10.77.0.50",
        "-c",
        "16",
        "-i",
        "u1000",
        "10.77.0.2",
    ]);
    assert!(
        out.status.success() || out.status.code() == Some(1),
        "{out:?}"
    );
    assert!(connect(&ns).starts_with("HTTP/1.1 200"));
    // A flood, bounded in time: past the SYN queue, cookies; real clients still get in.
    let flood = Command::new("ip")
        .args(["netns", "exec", &ns.name, "timeout", "6"])
        .args([
            "hping3",
            "-q",
            "-S",
            "-p",
            "80",
            "-a",
            "10.77.0.50",
            "--flood",
            "10.77.0.2",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let flooding = wait_until(5.0, || {
        stats(&ns)["node"]["syn_cookies_sent"].as_u64().unwrap_or(0) > 10_000
    });
    assert!(flooding, "the flood reached the server");
    for _ in 0..5 {
        assert!(connect(&ns).starts_with("HTTP/1.1 200"));
    }
    let rss_kb: u64 = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(
        rss_kb < 200_000,
        "memory stays bounded under the flood: {rss_kb} kB"
    );
    let mut flood = flood;
    let _ = flood.wait();
    let s = stats(&ns);
    assert!(
        s["node"]["syn_cookies_validated"].as_u64().unwrap() >= 5,
        "{s}"
    );
    assert!(
        s["node"]["connections"].as_u64().unwrap() < 200,
        "half-open connections are bounded: {s}"
    );
    assert!(server.stop().success());
}

#[test]
fn pings_and_fragmented_datagrams_are_answered_and_commented() {
    let Some(ns) = Netns::new("ping") else {
        return;
    };
    if !have(&["ping"]) {
        return;
    }
    let mut server = Server::start(&ns, &[]);
    let out = ns.run(&["ping", "-c", "2", "-W", "3", "10.77.0.2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // 3000 bytes of ICMP: three fragments each way.
    let out = ns.run(&["ping", "-c", "1", "-W", "3", "-s", "3000", "10.77.0.2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(server.stop().success());
    let pkts = read_capture(&server.capture);
    let said = |what: &str| {
        pkts.iter()
            .filter(|p| p.comment.as_deref().is_some_and(|c| c.contains(what)))
            .count()
    };
    assert!(said("ping: echo request") >= 2, "requests commented");
    assert!(said("ping: echo reply") >= 2, "replies commented");
    assert_eq!(said("held until the datagram is whole"), 2);
    assert_eq!(said("completes a datagram of 3028 B from 3 fragments"), 1);
    if let Some(problems) = tshark_problems(&server.capture) {
        assert!(problems.is_empty(), "tshark: {problems:?}");
    }
}

#[test]
fn an_address_outside_the_devices_subnet_is_refused_in_one_sentence() {
    let Some(ns) = Netns::new("addr") else {
        return;
    };
    let out = ns.run(&[
        env!("CARGO_BIN_EXE_synack"),
        "serve",
        "--tun",
        "tun0",
        "--addr",
        "10.99.0.2/24",
        "--no-capture",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("kernel side is 10.77.0.1/24") && err.contains("outside that subnet"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
}
