//! A user points dig at synack's DNS responder.

mod common;

use common::*;

fn dig(ns: &Netns, args: &[&str]) -> String {
    let mut all = vec!["dig", "+time=3", "+tries=1", "@10.77.0.2"];
    all.extend_from_slice(args);
    stdout_of(&ns.run(&all))
}

#[test]
fn dig_gets_answers_and_garbage_changes_nothing() {
    let Some(ns) = Netns::new("dns") else { return };
    if ns.run(&["dig", "-v"]).status.code().is_none_or(|c| c != 0) {
        assert!(
            std::env::var("CI").is_err(),
            "CI must install dig (dnsutils)"
        );
        eprintln!("skipping: dig is not installed (apt-get install dnsutils)");
        return;
    }
    let mut server = Server::start(&ns, &["--name", "synack.test", "--name", "www.synack.test"]);
    assert_eq!(dig(&ns, &["+short", "synack.test"]).trim(), "10.77.0.2");
    assert_eq!(
        dig(&ns, &["+short", "WWW.Synack.Test."]).trim(),
        "10.77.0.2"
    );
    let other = dig(&ns, &["example.org"]);
    assert!(other.contains("status: NXDOMAIN"), "{other}");
    let aaaa = dig(&ns, &["AAAA", "synack.test"]);
    assert!(
        aaaa.contains("status: NOERROR") && aaaa.contains("ANSWER: 0"),
        "{aaaa}"
    );
    assert!(aaaa.contains("flags: qr aa"), "authoritative: {aaaa}");

    // Garbage to port 53, then a real query: still answered.
    ns.in_ns(|| {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.send_to(b"\x01\x02garbage that is not DNS at all", "10.77.0.2:53")
            .unwrap();
        s.send_to(b"hi", "10.77.0.2:53").unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = s.recv_from(&mut buf).expect("a FORMERR for the first");
        assert!(n >= 12 && buf[3] & 0x0F == 1, "FORMERR");
    });
    assert_eq!(dig(&ns, &["+short", "synack.test"]).trim(), "10.77.0.2");
    assert!(server.stop().success());
    assert!(
        server.stderr().contains("(1 datagram dropped)"),
        "{}",
        server.stderr()
    );

    let events = server.journey_events();
    let resolved: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["event"] == "resolved")
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["rcode"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        resolved[..4],
        [
            ("synack.test".to_owned(), "NOERROR".to_owned()),
            ("www.synack.test".to_owned(), "NOERROR".to_owned()),
            ("example.org".to_owned(), "NXDOMAIN".to_owned()),
            ("synack.test".to_owned(), "NOERROR".to_owned()),
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e["stage"] != "resolve" || e.get("conn").is_none())
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"] == "dns_dropped")
            .count(),
        1
    );

    // Every DNS packet carries a comment; the well-formed ones decode cleanly in tshark.
    let pkts = read_capture(&server.capture);
    assert!(
        pkts.iter()
            .all(|p| p.comment.as_deref().is_some_and(|c| c.starts_with("DNS")))
    );
    let malformed = |p: &&Pkt| {
        p.comment
            .as_deref()
            .is_some_and(|c| c.contains("malformed"))
    };
    assert_eq!(
        pkts.iter().filter(malformed).count(),
        2,
        "the two garbage datagrams say so"
    );
    if let Some(lines) = tshark_fields(
        &server.capture,
        "dns && !_ws.malformed",
        &["dns.qry.name", "dns.a", "frame.comment"],
    ) {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("synack.test|10.77.0.2|DNS response")),
            "{lines:#?}"
        );
        let malformed = tshark_fields(&server.capture, "_ws.malformed", &["frame.number"]).unwrap();
        assert_eq!(
            malformed.len(),
            2,
            "only the two garbage datagrams we sent: {malformed:?}"
        );
    }
}
