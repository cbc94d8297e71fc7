//! The scripts a user runs: each answers -h, up.sh can run twice, demo.sh does the whole
//! journey and cleans up after itself, even when interrupted.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;

use common::*;

fn script(name: &str) -> Command {
    Command::new(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("netns-scripts")
            .join(name),
    )
}

fn ns_exists(name: &str) -> bool {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

#[test]
fn every_script_answers_dash_h() {
    for name in ["up.sh", "down.sh", "demo.sh", "bench.sh", "two-stacks.sh"] {
        let out = script(name).arg("-h").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.starts_with("usage:"),
            "{name} -h: {text}"
        );
    }
}

#[test]
fn up_is_idempotent_and_down_removes_everything() {
    let Some(ns) = Netns::new("updown") else {
        return;
    };
    for _ in 0..2 {
        let out = script("up.sh")
            .args(["-n", &ns.name, "-m", "1400"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let addr = ns.run(&["ip", "-4", "-o", "addr", "show", "tun0"]);
    let addr = String::from_utf8_lossy(&addr.stdout);
    assert_eq!(
        addr.matches("10.77.0.1/24").count(),
        1,
        "one address after two runs: {addr}"
    );
    let mtu = ns.run(&["cat", "/sys/class/net/tun0/mtu"]);
    assert_eq!(String::from_utf8_lossy(&mtu.stdout).trim(), "1400");
    let v6 = ns.run(&["sysctl", "-n", "net.ipv6.conf.tun0.disable_ipv6"]);
    assert_eq!(
        String::from_utf8_lossy(&v6.stdout).trim(),
        "1",
        "no IPv6 noise in captures"
    );
    let out = script("down.sh").args(["-n", &ns.name]).output().unwrap();
    assert!(out.status.success());
    assert!(!ns_exists(&ns.name));
}

#[test]
fn demo_runs_the_whole_journey_and_cleans_up() {
    let Some(ns) = Netns::new("demo") else { return };
    // The demo makes (and removes) its own namespace; this one only names it uniquely.
    let name = format!("{}-d", ns.name);
    let capture = ns.dir.join("demo.pcapng");
    let out = script("demo.sh")
        .args(["-n", &name, "-o", capture.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "Re-using existing connection",
        "\"type\": \"object\"",
        "1000000 bytes in",
        "packets in",
        "complete, ",
        "connection #4",
        "socket closed and reclaimed",
        "/journey says: connection #2",
        "SSL connection using TLSv1.3",
        "SSL certificate verify ok",
        "server  resolve  DNS query",
        "A synack.test -> 10.77.0.2 (NOERROR)",
    ] {
        assert!(
            text.contains(needle),
            "{needle:?} missing from the demo's output:\n{text}"
        );
    }
    if tshark_fields(&capture, "", &["frame.number"]).is_some() {
        assert!(
            text.contains("# SYN, handshake 1/3"),
            "the packet summary shows the comments:\n{text}"
        );
        assert!(
            text.contains("# DNS response"),
            "the DNS exchange is in the packet summary:\n{text}"
        );
    }
    assert!(!ns_exists(&name), "the demo removed its namespace");
    let pkts = read_capture(&capture);
    let ports = client_ports(&pkts);
    assert_eq!(
        ports.len(),
        5,
        "GET /, the kept-alive pair, POST /json, HTTPS, /bytes"
    );
    for port in ports {
        check_connection(&pkts, port);
    }
}

#[test]
fn demo_cleans_up_on_ctrl_c() {
    let Some(ns) = Netns::new("intr") else { return };
    let name = format!("{}-d", ns.name);
    // A process group of its own, as a terminal gives a foreground job, so that "Ctrl-C"
    // (SIGINT to the group) reaches the script and everything it started.
    let mut child = script("demo.sh")
        .args([
            "-n",
            &name,
            "-o",
            ns.dir.join("intr.pcapng").to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id() as i32;
    let running = wait_until(120.0, || {
        ns_exists(&name) && {
            let pids = Command::new("ip")
                .args(["netns", "pids", &name])
                .output()
                .unwrap();
            !pids.stdout.is_empty()
        }
    });
    // SAFETY: signalling the process group we created.
    unsafe { libc::kill(-pgid, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(running, "the demo got as far as starting the server");
    assert!(
        !status.success(),
        "an interrupted demo does not claim success"
    );
    assert!(
        wait_until(10.0, || !ns_exists(&name)),
        "the namespace is gone after Ctrl-C"
    );
}
