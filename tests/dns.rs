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

/// Sends one datagram to the responder from inside the namespace; returns the reply.
fn ask(ns: &Netns, query: Vec<u8>) -> Vec<u8> {
    ns.in_ns(move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        s.send_to(&query, "10.77.0.2:53").unwrap();
        let mut buf = [0u8; 1500];
        let (n, _) = s.recv_from(&mut buf).expect("a reply");
        buf[..n].to_vec()
    })
}

#[test]
fn dig_with_and_without_edns_and_names_that_do_not_parse() {
    let Some(ns) = Netns::new("edns") else { return };
    if ns.run(&["dig", "-v"]).status.code().is_none_or(|c| c != 0) {
        assert!(
            std::env::var("CI").is_err(),
            "CI must install dig (dnsutils)"
        );
        eprintln!("skipping: dig is not installed (apt-get install dnsutils)");
        return;
    }
    let mut server = Server::start(&ns, &["--name", "synack.test"]);
    // dig sends EDNS0 by default: the answer carries our OPT record (RFC 6891 §6.1.1).
    let edns0 = dig(&ns, &["+dnssec", "synack.test"]);
    assert!(
        edns0.contains("status: NOERROR")
            && edns0.contains("; EDNS: version: 0, flags: do; udp: 1232")
            && edns0.contains("ADDITIONAL: 1"),
        "{edns0}"
    );
    assert!(!edns0.contains("malformed"), "{edns0}");
    // EDNS version 1: BADVERS, with an OPT record saying version 0 (RFC 6891 §6.1.3).
    let edns1 = dig(&ns, &["+edns=1", "+noednsnegotiation", "synack.test"]);
    assert!(
        edns1.contains("status: BADVERS")
            && edns1.contains("; EDNS: version: 0, flags:; udp: 1232"),
        "{edns1}"
    );
    // With negotiation, dig retries at version 0 and gets its answer.
    let negotiated = dig(&ns, &["+edns=1", "synack.test"]);
    assert!(
        negotiated.contains("BADVERS, retrying with EDNS version 0")
            && negotiated.contains("10.77.0.2"),
        "{negotiated}"
    );
    let plain = dig(&ns, &["+noedns", "synack.test"]);
    assert!(
        plain.contains("status: NOERROR")
            && plain.contains("ADDITIONAL: 0")
            && !plain.contains("OPT PSEUDOSECTION"),
        "{plain}"
    );

    // Names that do not parse get FORMERR with the query's id.
    let header = |id: u16| -> Vec<u8> {
        [id, 0x0100, 1, 0, 0, 0]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect()
    };
    let crafted: [(u16, &[u8]); 3] = [
        // A pointer into the header.
        (0xbad1, b"\xc0\x00\x00\x01\x00\x01"),
        // A forward pointer to a real name after the question.
        (0xbad2, b"\xc0\x12\x00\x01\x00\x01\x06synack\x04test\x00"),
        // A label, then a pointer back to it: a loop.
        (0xbad3, b"\x01a\xc0\x0c\x00\x01\x00\x01"),
    ];
    for (id, rest) in crafted {
        let mut q = header(id);
        q.extend_from_slice(rest);
        let reply = ask(&ns, q);
        assert_eq!(reply.len(), 12, "a bare header: {reply:?}");
        assert_eq!(u16::from_be_bytes([reply[0], reply[1]]), id);
        assert!(
            reply[2] & 0x80 != 0 && reply[3] & 0x0F == 1,
            "FORMERR: {reply:?}"
        );
    }
    assert_eq!(dig(&ns, &["+short", "synack.test"]).trim(), "10.77.0.2");
    assert!(server.stop().success());

    let rcodes: Vec<String> = server
        .journey_events()
        .iter()
        .filter(|e| e["event"] == "resolved")
        .map(|e| e["rcode"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        rcodes,
        [
            "NOERROR", "BADVERS", "BADVERS", "NOERROR", "NOERROR", "FORMERR", "FORMERR", "FORMERR",
            "NOERROR"
        ]
    );
    // Wireshark finds fault with none of our replies (it may with the crafted queries).
    if let Some(malformed) = tshark_fields(
        &server.capture,
        "_ws.malformed || _ws.expert.severity >= \"warning\"",
        &["dns.id", "dns.flags.response"],
    ) {
        assert!(
            malformed
                .iter()
                .all(|l| l.ends_with("|False") || l.ends_with("|0")),
            "replies Wireshark finds fault with: {malformed:?}"
        );
        let badvers =
            tshark_fields(&server.capture, "dns.resp.ext_rcode == 1", &["dns.id"]).unwrap();
        assert_eq!(badvers.len(), 2, "{badvers:?}");
    }
}
