//! `--internals on`: every segment the sender sends says why it left now and what the
//! sender knew, in the capture's comment and in the journey, from smoltcp's own trace
//! lines and the wire. Checked on real captures of the simulation (no root), read back
//! with the independent parser.

mod common;

use std::path::PathBuf;

use common::*;
use synack::journey::{Event, What};

fn out_dir(tag: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-runs")
        .join(format!("internals-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The server's segments, as the journey has them.
fn segments(events: &[Event]) -> Vec<&What> {
    events
        .iter()
        .map(|e| &e.what)
        .filter(|w| matches!(w, What::Segment { .. }))
        .collect()
}

fn comments(pkts: &[Pkt]) -> Vec<String> {
    pkts.iter()
        .filter(|p| !p.inbound)
        .filter_map(|p| p.comment.clone())
        .collect()
}

#[test]
fn retransmissions_say_why_with_the_rto_and_the_duplicate_acks() {
    let dir = out_dir("loss");
    let capture = dir.join("loss.pcapng");
    let scenario = synack::demo::Scenario {
        seed: 3,
        download: 200_000,
        plain: true,
        internals: true,
        faults: synack::link::FaultConfig {
            loss: 5.0,
            delay_ms: 1,
            seed: 3,
            ..Default::default()
        },
        capture: Some(capture.clone().into()),
        ..Default::default()
    };
    let outcome = synack::demo::simulate(&scenario).unwrap();
    assert!(outcome.report.is_ok());
    let said = comments(&read_capture(&capture));
    let rto = said
        .iter()
        .find(|c| c.contains("why: retransmission after RTO 1000 ms"))
        .expect("an RTO retransmission names its RTO");
    assert!(rto.contains("backed off to 2000 ms"), "{rto}");
    let fast = said
        .iter()
        .find(|c| c.contains("why: fast retransmission after"))
        .expect("a fast retransmission");
    assert!(fast.contains("3 duplicate ACKs"), "{fast}");
    // Every segment of data the server sent says why, and what was in flight.
    let data: Vec<_> = read_capture(&capture)
        .into_iter()
        .filter(|p| !p.inbound && p.tcp.is_some_and(|t| t.src.port() == 80 && t.len > 0))
        .collect();
    assert!(data.len() > 100);
    assert!(data.iter().all(|p| {
        p.comment
            .as_deref()
            .is_some_and(|c| c.contains("why: ") && c.contains("in flight "))
    }));
    assert!(
        said.iter()
            .any(|c| c.contains("rtt sample") && c.contains("rto 1000 ms"))
    );
    // The journey has the same facts.
    let server: Vec<Event> = outcome.server.events().cloned().collect();
    let segs = segments(&server);
    assert!(segs.iter().any(|w| matches!(w,
        What::Segment { why, .. } if why.starts_with("retransmission after RTO 1000 ms"))));
    assert!(segs.iter().any(|w| matches!(w,
        What::Segment { why, .. } if why.starts_with("fast retransmission after 3 duplicate ACKs"))));
    assert!(
        segs.iter()
            .any(|w| matches!(w, What::Segment { rtt: Some(r), .. } if r.rto_ms == 1000))
    );
}

#[test]
fn a_nagle_hold_says_how_long_it_waited_and_why() {
    let dir = out_dir("nagle");
    let capture = dir.join("nagle.pcapng");
    let scenario = synack::demo::Scenario {
        download: 2000,
        plain: true,
        internals: true,
        knobs: synack::node::TcpKnobs {
            nagle: true,
            ..Default::default()
        },
        capture: Some(capture.clone().into()),
        ..Default::default()
    };
    let outcome = synack::demo::simulate(&scenario).unwrap();
    assert!(outcome.report.is_ok());
    let said = comments(&read_capture(&capture));
    let held = said
        .iter()
        .find(|c| c.contains("Nagle"))
        .expect("the short segment says it waited");
    // It waited for the client's delayed ACK (10 ms) and the round trip (2 ms).
    assert!(held.contains("waited 12.0 ms"), "{held}");
    let server: Vec<Event> = outcome.server.events().cloned().collect();
    assert!(segments(&server).iter().any(|w| matches!(
        w,
        What::Segment {
            held_by: Some("nagle"),
            waited_us: Some(12_000),
            ..
        }
    )));
    // And with Nagle off (the default), nothing waits.
    let off = synack::demo::Scenario {
        download: 2000,
        plain: true,
        internals: true,
        capture: Some(dir.join("off.pcapng").into()),
        ..Default::default()
    };
    synack::demo::simulate(&off).unwrap();
    let said = comments(&read_capture(&dir.join("off.pcapng")));
    assert!(!said.iter().any(|c| c.contains("Nagle")), "{said:?}");
}

#[test]
fn without_internals_segments_carry_no_sender_state() {
    let dir = out_dir("plain");
    let capture = dir.join("plain.pcapng");
    let scenario = synack::demo::Scenario {
        download: 50_000,
        plain: true,
        capture: Some(capture.clone().into()),
        ..Default::default()
    };
    let outcome = synack::demo::simulate(&scenario).unwrap();
    assert!(
        !comments(&read_capture(&capture))
            .iter()
            .any(|c| c.contains("why: "))
    );
    let server: Vec<Event> = outcome.server.events().cloned().collect();
    assert!(segments(&server).is_empty());
}
