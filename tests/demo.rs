//! A user without root runs `synack demo`: the whole journey between two stacks in one
//! process, reproducible from a seed, with faults on the link when asked.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;

use common::*;

fn out_dir(tag: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-runs")
        .join(format!("demo-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the binary's demo; returns its stderr (the journey and the summary).
fn demo(capture: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_synack"))
        .arg("demo")
        .arg("--capture")
        .arg(capture)
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "synack demo failed:\n{err}");
    err
}

/// Segments that carry data or SYN/FIN and were seen before with the same sequence
/// number, same direction: retransmissions, found by etherparse.
fn retransmissions(pkts: &[Pkt]) -> usize {
    let mut seen = HashSet::new();
    pkts.iter()
        .filter_map(|p| p.tcp.map(|t| (p.inbound, t)))
        .filter(|(_, t)| t.len > 0 || t.syn || t.fin)
        .filter(|(inbound, t)| !seen.insert((*inbound, t.seq, t.len, t.syn, t.fin)))
        .count()
}

#[test]
fn demo_plays_the_whole_journey_without_root() {
    let dir = out_dir("plain");
    let capture = dir.join("demo.pcapng");
    let err = demo(&capture, &["--bytes", "200k"]);
    for needle in [
        "client ",
        "| server",
        "resolve  DNS query: A synack.test? to 10.77.0.2",
        "SYN sent from 10.77.0.1:",
        "LISTEN -> SYN-RECEIVED",
        "TLS handshake done",
        "request POST /json",
        "route /json",
        "ESTABLISHED -> FIN-WAIT-1",
        "FIN-WAIT-1 -> TIME-WAIT",
        "TIME-WAIT over after 60.000 s",
        "LAST-ACK -> CLOSED",
        "GET / -> 200",
        "POST /json -> 200",
        "GET /bytes/200000 -> 200, 200000 B body",
        "the download is byte-exact",
    ] {
        assert!(err.contains(needle), "{needle:?} missing:\n{err}");
    }
    // One capture, both stacks' packets, both directions, read back with etherparse.
    let pkts = read_capture(&capture);
    assert!(pkts.iter().any(|p| p.inbound) && pkts.iter().any(|p| !p.inbound));
    let ports = client_ports(&pkts);
    assert_eq!(ports.len(), 1, "one kept-alive connection");
    check_connection(&pkts, ports[0]);
    assert_eq!(
        retransmissions(&pkts),
        0,
        "a clean link retransmits nothing"
    );
    // tshark finds nothing malformed and opens the TLS with the secrets in the file.
    if let Some(problems) = tshark_problems(&capture) {
        assert!(problems.is_empty(), "{problems:?}");
        let uris = tshark_fields(&capture, "http.request", &["http.request.uri"]).unwrap();
        assert_eq!(uris, ["/", "/json", "/bytes/200000"]);
    }
}

#[test]
fn the_same_seed_gives_the_same_capture_byte_for_byte() {
    let dir = out_dir("seed");
    let (a, b, c) = (
        dir.join("a.pcapng"),
        dir.join("b.pcapng"),
        dir.join("c.pcapng"),
    );
    for (path, seed) in [(&a, "7"), (&b, "7"), (&c, "8")] {
        demo(
            path,
            &[
                "--seed",
                seed,
                "--journey",
                "off",
                "--loss",
                "3",
                "--reorder",
                "3",
            ],
        );
    }
    let (a, b, c) = (
        std::fs::read(a).unwrap(),
        std::fs::read(b).unwrap(),
        std::fs::read(c).unwrap(),
    );
    assert!(a.len() > 10_000);
    assert!(a == b, "seed 7 twice: identical bytes");
    assert!(a != c, "another seed: another capture");
}

#[test]
fn loss_makes_retransmissions_and_the_transfer_stays_exact() {
    let dir = out_dir("loss");
    let scenario = synack::demo::Scenario {
        seed: 3,
        download: 500_000,
        faults: synack::link::FaultConfig {
            loss: 5.0,
            delay_ms: 2,
            reorder: 2.0,
            seed: 3,
            ..Default::default()
        },
        capture: Some(dir.join("loss.pcapng").into()),
        ..Default::default()
    };
    let outcome = synack::demo::simulate(&scenario).unwrap();
    let report = outcome
        .report
        .as_ref()
        .expect("the fetch succeeds despite the loss");
    assert_eq!(report.exchanges.len(), 3);
    assert_eq!(report.exchanges[2].body_bytes, 500_000);
    assert_eq!(outcome.download_mismatches, 0, "byte-exact");
    assert!(outcome.faults.lost > 0 && outcome.faults.reordered > 0);

    let pkts = read_capture(&dir.join("loss.pcapng"));
    let retx = retransmissions(&pkts);
    assert!(retx > 0, "retransmissions in the capture");
    let lost = pkts
        .iter()
        .filter(|p| {
            p.comment
                .as_deref()
                .is_some_and(|c| c.contains("fault: lost"))
        })
        .count() as u64;
    assert_eq!(
        lost, outcome.faults.lost_out,
        "every packet the server sent and the link lost is in its capture, commented; those lost on their way in never reached it"
    );
    if tshark_problems(&dir.join("loss.pcapng")).is_some() {
        let flagged = tshark_fields(
            &dir.join("loss.pcapng"),
            "tcp.analysis.retransmission || tcp.analysis.fast_retransmission",
            &["frame.number"],
        )
        .unwrap();
        assert!(!flagged.is_empty(), "Wireshark's analysis sees them too");
    }
}

#[test]
fn every_fault_leaves_its_packets_in_the_capture_with_a_comment() {
    let dir = out_dir("faults");
    let scenario = synack::demo::Scenario {
        seed: 11,
        download: 300_000,
        faults: synack::link::FaultConfig {
            loss: 2.0,
            delay_ms: 1,
            jitter_ms: 2,
            duplicate: 3.0,
            corrupt: 3.0,
            rate_kbit: Some(200_000),
            seed: 11,
            ..Default::default()
        },
        plain: true,
        capture: Some(dir.join("faults.pcapng").into()),
        ..Default::default()
    };
    let outcome = synack::demo::simulate(&scenario).unwrap();
    assert!(outcome.report.is_ok(), "{:?}", outcome.report.err());
    assert_eq!(
        outcome.download_mismatches, 0,
        "corrupted packets are dropped by checksum and resent"
    );
    let f = outcome.faults;
    assert!(
        f.lost > 0 && f.duplicated > 0 && f.corrupted > 0 && f.delayed > 0,
        "{f:?}"
    );
    let pkts = read_capture(&dir.join("faults.pcapng"));
    let said = |what: &str| {
        pkts.iter()
            .filter(|p| p.comment.as_deref().is_some_and(|c| c.contains(what)))
            .count() as u64
    };
    // The capture is at the server's edge: what it sent the link lost is there, saying
    // so; what the link lost on its way in never reached it.
    assert_eq!(said("fault: lost"), f.lost_out);
    assert!(f.lost > f.lost_out, "{f:?}");
    // Corruption: said on the packet the server sent (before the link flips the bit), or
    // on the damaged packet it received; a damaged inbound packet that the link also
    // duplicated arrives damaged twice.
    let corrupted_copies = pkts
        .iter()
        .filter_map(|p| p.comment.as_deref())
        .filter(|c| c.contains("bit flipped") && c.contains("link's duplicate"))
        .count() as u64;
    assert_eq!(said("bit") - corrupted_copies, f.corrupted);
    // A duplicate: said once, on the packet the server sent, or on the second copy it
    // received.
    assert_eq!(said("(--duplicate)"), f.duplicated);
    assert!(
        said("(--delay/--jitter/--rate)") > 0,
        "jitter and rate holds are commented"
    );
}

#[test]
fn a_link_that_loses_everything_ends_in_a_dns_failure_not_a_hang() {
    let scenario = synack::demo::Scenario {
        faults: synack::link::FaultConfig {
            loss: 100.0,
            seed: 1,
            ..Default::default()
        },
        plain: true,
        ..Default::default()
    };
    let outcome = synack::demo::simulate(&scenario).expect("the simulation ends");
    let err = outcome.report.unwrap_err();
    assert_eq!(err.exit_code(), 3, "{err}");
    assert!(
        err.to_string().contains("no answer from 10.77.0.2:53"),
        "{err}"
    );
}

#[test]
fn a_capture_in_a_missing_directory_is_refused_and_only_captures_is_made() {
    let dir = out_dir("dirs");
    let missing = dir.join("no-such-dir").join("x.pcapng");
    let out = Command::new(env!("CARGO_BIN_EXE_synack"))
        .args(["demo", "--journey", "off", "--capture"])
        .arg(&missing)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("does not exist") && err.contains("no-such-dir"),
        "{err}"
    );
    assert!(
        !dir.join("no-such-dir").exists(),
        "not made behind the user's back"
    );
    // The default directory is made where the demo runs.
    let out = Command::new(env!("CARGO_BIN_EXE_synack"))
        .args(["demo", "--journey", "off"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: Vec<_> = std::fs::read_dir(dir.join("captures")).unwrap().collect();
    assert_eq!(made.len(), 1);
}
