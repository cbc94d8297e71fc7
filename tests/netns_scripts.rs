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
    for name in [
        "up.sh",
        "down.sh",
        "demo.sh",
        "bench.sh",
        "two-stacks.sh",
        "impair.sh",
        "experiment.sh",
    ] {
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
        "socket closed and released",
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

#[test]
fn impair_drops_packets_with_nftables_and_says_what_it_cannot_do() {
    let Some(ns) = Netns::new("impair") else {
        return;
    };
    let impair = |args: &[&str]| {
        script("impair.sh")
            .args(["-n", &ns.name])
            .args(args)
            .output()
            .unwrap()
    };
    // Delay needs netem; where the kernel has none the script says so and exits 3.
    let out = impair(&["--delay", "20"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if text.contains("using netem") {
        eprintln!("this kernel has netem; the fallback is not exercised");
    } else {
        assert_eq!(out.status.code(), Some(3), "{text}");
        assert!(text.contains("cannot do --delay here"), "{text}");
    }
    assert_eq!(impair(&["--loss", "101"]).status.code(), Some(1));

    // 5 %: smoltcp recovers from it in seconds; past ~10 % its RTO backs off for good
    // (README, known limits).
    let out = impair(&["--loss", "5", "--rate", "20000"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("tbf") || text.contains("netem"), "{text}");
    // A transfer through it: synack retransmits what the kernel's side dropped, and the
    // body still arrives whole.
    let mut server = Server::start(&ns, &[]);
    let out = ns.curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        "http://10.77.0.2/bytes/300000",
    ]);
    assert_eq!(stdout_of(&out), "300000");
    let shown = String::from_utf8_lossy(&impair(&["show"]).stdout).into_owned();
    assert!(server.stop().success());
    if shown.contains("nft:") {
        let dropped: u64 = shown
            .lines()
            .filter_map(|l| {
                l.split("packets ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        assert!(dropped > 0, "nftables dropped packets:\n{shown}");
    }
    let stats = std::process::Command::new(env!("CARGO_BIN_EXE_synack"))
        .args(["stats", "--json"])
        .arg(&server.capture)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    let retx: u64 = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["retransmissions"][1].as_u64().unwrap())
        .sum();
    assert!(retx > 0, "synack retransmitted what was dropped");
    let cleared = String::from_utf8_lossy(&impair(&["clear"]).stdout).into_owned();
    assert!(cleared.contains("none"), "{cleared}");
}

#[test]
fn experiment_prints_a_table_and_keeps_each_cells_capture() {
    let Some(ns) = Netns::new("exp") else { return };
    let name = format!("{}-x", ns.name);
    let dir = ns.dir.join("exp");
    let out = script("experiment.sh")
        .args(["-q", "-n", &name, "-o", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("FAILED"), "{text}");
    // A window of 4 KiB over a 10 ms round trip is slower than one of 1 MiB.
    let rate = |buf: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(buf))
            .unwrap_or_else(|| panic!("{text}"));
        line.split_whitespace().nth(3).unwrap().parse().unwrap()
    };
    assert!(rate("1m") > 2.0 * rate("4k"), "{text}");
    // Nagle off sends the small writes as more segments.
    let upload = |nagle: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(nagle))
            .unwrap_or_else(|| panic!("{text}"));
        line.split_whitespace().nth(3).unwrap().parse().unwrap()
    };
    assert!(upload("off") > upload("on"), "{text}");
    for cell in ["rx4k-d5-l0", "rx1m-d5-l0", "nagle-on", "nagle-off"] {
        assert!(
            !read_capture(&dir.join(format!("{cell}.pcapng"))).is_empty(),
            "{cell}"
        );
    }
    assert!(!ns_exists(&name), "the experiment removed its namespace");
}
