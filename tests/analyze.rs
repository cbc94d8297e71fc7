//! A user reads captures with `synack ladder` and `synack stats`: the committed samples
//! (made again byte for byte by the command beside each, and their text output kept as
//! snapshots), a tcpdump capture of tun0, and files that are not captures at all.
//! Also the knobs, each seen in a capture.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn synack(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_synack"))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    assert!(
        out.status.success(),
        "synack failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn scratch(tag: &str) -> PathBuf {
    let dir = repo()
        .join("target/test-runs")
        .join(format!("analyze-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// (file name, demo arguments) of each committed sample.
fn samples() -> Vec<(String, Vec<String>)> {
    let list = std::fs::read_to_string(repo().join("captures/samples/commands.txt")).unwrap();
    list.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, args) = l.split_once(':').unwrap();
            let args = args.split_whitespace().map(str::to_owned).collect();
            (name.trim().to_owned(), args)
        })
        .collect()
}

/// Compares with the snapshot in tests/snapshots/, or writes it with UPDATE_SNAPSHOTS=1.
fn snapshot(name: &str, actual: &str) {
    let path = repo().join("tests/snapshots").join(name);
    if std::env::var("UPDATE_SNAPSHOTS").is_ok() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_SNAPSHOTS=1 writes it)", path.display()));
    if expected != actual {
        let diff = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| format!("line {}:\n- {a}\n+ {b}", i + 1))
            .unwrap_or_else(|| "lengths differ".into());
        panic!("{name} changed (UPDATE_SNAPSHOTS=1 accepts it)\n{diff}");
    }
}

#[test]
fn the_samples_are_what_their_commands_make_and_read_cleanly() {
    let dir = scratch("samples");
    let list = samples();
    assert_eq!(list.len(), 4);
    for (name, args) in &list {
        let committed = repo().join("captures/samples").join(name);
        let remade = dir.join(name);
        let mut all: Vec<&str> = vec!["demo", "--journey", "off", "--capture"];
        all.push(remade.to_str().unwrap());
        all.extend(args.iter().map(String::as_str));
        text(&synack(&all));
        assert!(
            std::fs::read(&committed).unwrap() == std::fs::read(&remade).unwrap(),
            "{name} is no longer what `synack demo {}` makes: remake it (captures/samples/commands.txt)",
            args.join(" ")
        );
        // Read back by the independent parser, and by tshark where it is installed.
        let pkts = read_capture(&committed);
        assert!(pkts.len() > 10, "{name}");
        if let Some(problems) = tshark_problems(&committed) {
            assert!(problems.is_empty(), "{name}: {problems:?}");
        }
    }
}

#[test]
fn ladder_and_stats_of_the_samples_match_their_snapshots() {
    for (name, _) in samples() {
        let path = repo().join("captures/samples").join(&name);
        let p = path.to_str().unwrap();
        let stem = name.trim_end_matches(".pcapng");
        snapshot(
            &format!("{stem}.ladder.txt"),
            &text(&synack(&["ladder", "--color", "never", p])),
        );
        snapshot(&format!("{stem}.stats.txt"), &text(&synack(&["stats", p])));
    }
}

#[test]
fn the_analysis_finds_what_the_samples_show() {
    let lossy = repo().join("captures/samples/lossy-transfer.pcapng");
    let ladder = text(&synack(&[
        "ladder",
        "--color",
        "never",
        lossy.to_str().unwrap(),
    ]));
    for tag in [
        "[retransmission]",
        "[duplicate ACK #3]",
        "[fast retransmission]",
        "[sender enters TIME-WAIT]",
    ] {
        assert!(ladder.contains(tag), "{tag} missing");
    }
    let json = text(&synack(&["stats", "--json", lossy.to_str().unwrap()]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let c = &v[0];
    assert_eq!(c["conn"], 2, "conversation 1 is the DNS lookup");
    // Three responses: the page (about 2 kB), the JSON (about 500 B) and 200 000 bytes,
    // each byte counted once however often it was sent.
    let bytes = c["bytes"][1].as_u64().unwrap();
    assert!((202_000..205_000).contains(&bytes), "{bytes}");
    assert!(c["retransmissions"][1].as_u64().unwrap() > 0);
    assert!(c["rtt_samples"].as_u64().unwrap() > 10);
    // The same count tshark's analysis makes, within what the two heuristics differ on.
    if let Some(retx) = tshark_fields(&lossy, "tcp.analysis.retransmission", &["frame.number"]) {
        let ours =
            c["retransmissions"][0].as_u64().unwrap() + c["retransmissions"][1].as_u64().unwrap();
        let theirs = retx.len() as u64;
        assert!(
            ours.abs_diff(theirs) <= theirs / 4 + 2,
            "synack {ours}, tshark {theirs}"
        );
    }
    // The client's own capture: our FIN first, then TIME-WAIT on the last ACK.
    let tw = repo().join("captures/samples/time-wait-client.pcapng");
    let ladder = text(&synack(&[
        "ladder",
        "--color",
        "never",
        "--conn",
        "2",
        tw.to_str().unwrap(),
    ]));
    assert!(
        ladder.contains("our side: ESTABLISHED -> FIN-WAIT-1"),
        "{ladder}"
    );
    assert!(ladder.contains("-> TIME-WAIT"), "{ladder}");
    assert!(
        !ladder.contains("#1 DNS"),
        "--conn 2 shows only the connection"
    );
    // Pictures.
    let dir = scratch("svg");
    let (svg, plot) = (dir.join("l.svg"), dir.join("p.svg"));
    text(&synack(&[
        "ladder",
        "--svg",
        svg.to_str().unwrap(),
        tw.to_str().unwrap(),
    ]));
    text(&synack(&[
        "stats",
        "--plot",
        plot.to_str().unwrap(),
        lossy.to_str().unwrap(),
    ]));
    for f in [&svg, &plot] {
        let s = std::fs::read_to_string(f).unwrap();
        assert!(
            s.starts_with("<svg") && s.trim_end().ends_with("</svg>"),
            "{}",
            f.display()
        );
    }
    assert!(
        std::fs::read_to_string(&plot).unwrap().contains("#d00"),
        "retransmissions in red"
    );
}

#[test]
fn not_a_capture_gets_one_clear_sentence() {
    let dir = scratch("bad");
    let garbage = dir.join("garbage.pcapng");
    std::fs::write(&garbage, b"this is not a capture at all").unwrap();
    let good = std::fs::read(repo().join("captures/samples/http-journey.pcapng")).unwrap();
    let cut = dir.join("cut.pcapng");
    std::fs::write(&cut, &good[..good.len() / 2 + 3]).unwrap();
    for (file, says) in [
        (&garbage, "is not a pcap or pcapng capture"),
        (&cut, "damaged or cut short"),
        (&dir.join("missing.pcapng"), "cannot open"),
    ] {
        for cmd in ["ladder", "stats"] {
            let out = synack(&[cmd, file.to_str().unwrap()]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{cmd} {}: {err}",
                file.display()
            );
            assert!(
                err.contains(says) && !err.contains("panicked"),
                "{cmd}: {err}"
            );
        }
    }
    let out = synack(&[
        "ladder",
        "--conn",
        "9",
        repo()
            .join("captures/samples/http-journey.pcapng")
            .to_str()
            .unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("has conversations 1..=2"));
}

/// The SYN-ACK (the server's SYN) of a demo capture, as etherparse reads it.
fn synack_of(capture: &Path) -> Tcp {
    read_capture(capture)
        .iter()
        .filter_map(|p| p.tcp)
        .find(|t| t.syn && t.ack_flag)
        .expect("a SYN-ACK")
}

fn demo_capture(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut all = vec![
        "demo",
        "--http",
        "--journey",
        "off",
        "--bytes",
        "50k",
        "--capture",
    ];
    all.push(path.to_str().unwrap());
    all.extend_from_slice(args);
    text(&synack(&all));
    path
}

#[test]
fn each_knob_shows_in_the_capture() {
    let dir = scratch("knobs");
    // --rx-buf: the window and window scale the SYN-ACK offers (RFC 7323 §2.2).
    let small = synack_of(&demo_capture(&dir, "rx16k.pcapng", &["--rx-buf", "16k"]));
    let big = synack_of(&demo_capture(&dir, "rx1m.pcapng", &["--rx-buf", "1m"]));
    assert_eq!((small.window, small.wscale), (16384, Some(0)));
    assert_eq!(
        big.wscale,
        Some(5),
        "1 MiB needs a shift of 5 to fit 16 bits"
    );
    assert!(u32::from(big.window) << 5 >= 1 << 20);
    // --mtu: the MSS option follows (MTU - 40).
    let mss = synack_of(&demo_capture(&dir, "mtu1000.pcapng", &["--mtu", "1000"])).mss;
    assert_eq!(mss, Some(960));
    // --seed: the same ISNs; another seed, others.
    let isn = |seed: &str| {
        synack_of(&demo_capture(
            &dir,
            &format!("seed{seed}.pcapng"),
            &["--seed", seed],
        ))
        .seq
    };
    assert_eq!(isn("5"), isn("5"));
    assert_ne!(isn("5"), isn("6"));
    // --nagle: the same small writes make more segments without it (RFC 896).
    let segments = |nagle: &str| {
        let cap = demo_capture(
            &dir,
            &format!("nagle-{nagle}.pcapng"),
            &["--write-size", "10", "--write-every", "1", "--nagle", nagle],
        );
        let json = text(&synack(&["stats", "--json", cap.to_str().unwrap()]));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v[0]["segments"][0].as_u64().unwrap()
    };
    let (on, off) = (segments("on"), segments("off"));
    assert!(off > on + 4, "Nagle off {off} segments, on {on}");
    // --loss: retransmissions that stats counts, and the transfer is still exact.
    let lossy = dir.join("loss.pcapng");
    let out = synack(&[
        "demo",
        "--http",
        "--journey",
        "off",
        "--bytes",
        "100k",
        "--loss",
        "4",
        "--seed",
        "9",
        "--capture",
        lossy.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("byte-exact"));
    let json = text(&synack(&["stats", "--json", lossy.to_str().unwrap()]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let retx =
        v[0]["retransmissions"][0].as_u64().unwrap() + v[0]["retransmissions"][1].as_u64().unwrap();
    assert!(retx > 0, "stats counts the retransmissions");
}

#[test]
fn ladder_reads_what_tcpdump_captured_on_tun0() {
    let Some(ns) = Netns::new("tcpdump") else {
        return;
    };
    if ns.run(&["tcpdump", "--version"]).status.code() != Some(0) {
        assert!(std::env::var("CI").is_err(), "CI must install tcpdump");
        eprintln!("skipping: tcpdump is not installed");
        return;
    }
    let mut server = Server::start(&ns, &["--no-capture"]);
    let pcap = ns.dir.join("tcpdump.pcap");
    let mut dump = Command::new("ip")
        .args([
            "netns", "exec", &ns.name, "tcpdump", "-i", "tun0", "-U", "-w",
        ])
        .arg(&pcap)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(10.0, || std::fs::metadata(&pcap)
        .is_ok_and(|m| m.len() >= 24)));
    let out = ns.curl(&["-o", "/dev/null", "http://10.77.0.2/bytes/20000"]);
    assert!(out.status.success());
    assert!(wait_until(10.0, || {
        let frames = synack::analyze::read(&pcap).map(|f| f.len()).unwrap_or(0);
        frames >= 10
    }));
    unsafe { libc::kill(dump.id() as i32, libc::SIGINT) };
    let _ = dump.wait();
    assert!(server.stop().success());
    let ladder = text(&synack(&[
        "ladder",
        "--color",
        "never",
        pcap.to_str().unwrap(),
    ]));
    assert!(ladder.contains("SYN seq=0 len=0"), "{ladder}");
    assert!(ladder.contains("SYN,ACK seq=0 ack=1"), "{ladder}");
    assert!(ladder.contains("FIN"), "{ladder}");
    let json = text(&synack(&["stats", "--json", pcap.to_str().unwrap()]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v[0]["bytes"][1].as_u64().unwrap() >= 20_000, "{json}");
    assert!(v[0]["handshake_ms"].as_f64().is_some(), "{json}");
}
