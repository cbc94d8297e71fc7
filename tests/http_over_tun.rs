//! A user runs `synack serve` in a namespace and points curl (and the kernel's TCP) at it.

mod common;

use std::io::{Read, Write};

use common::*;

#[test]
fn get_keep_alive_and_json() {
    let Some(ns) = Netns::new("get") else { return };
    let mut server = Server::start(&ns, &[]);

    let page = stdout_of(&ns.curl(&["http://10.77.0.2/"]));
    assert!(page.contains("<title>synack"), "{page}");

    // Three requests in one curl run reuse one connection.
    let out = ns.curl(&[
        "-v",
        "http://10.77.0.2/echo",
        "http://10.77.0.2/echo?x=1",
        "http://10.77.0.2/journey",
    ]);
    let body = stdout_of(&out);
    let verbose = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        verbose.matches("Re-using existing connection").count(),
        2,
        "{verbose}"
    );
    assert!(body.contains("\"target\": \"/echo?x=1\""), "{body}");

    let good = stdout_of(&ns.curl(&[
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"a":[1,2],"b":"xyz"}"#,
        "http://10.77.0.2/json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&good).unwrap();
    assert_eq!(v["type"], "object");
    assert_eq!(v["keys"], serde_json::json!(["a", "b"]));

    let bad = ns.curl(&[
        "-w",
        "\n%{http_code}",
        "-d",
        "{\"a\": [1,",
        "http://10.77.0.2/json",
    ]);
    let bad = stdout_of(&bad);
    assert!(bad.ends_with("\n400"), "{bad}");
    let v: serde_json::Value = serde_json::from_str(bad.trim_end_matches("400").trim()).unwrap();
    assert_eq!(
        (v["line"].as_u64(), v["column"].as_u64()),
        (Some(1), Some(9)),
        "{v}"
    );

    // With Expect: 100-continue curl waits for the interim response before the body; a
    // chunked body and HTTP/1.0 are decoded too.
    let big: String = format!("[{}1]", "1,".repeat(1500));
    let out = ns.curl(&[
        "-v",
        "-H",
        "Expect: 100-continue",
        "-d",
        &big,
        "http://10.77.0.2/json",
    ]);
    let verbose = String::from_utf8_lossy(&out.stderr);
    assert!(
        verbose.contains("Expect: 100-continue") && verbose.contains("< HTTP/1.1 100 Continue"),
        "{verbose}"
    );
    let v: serde_json::Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(v["elements"], 1501);
    let chunked = ns.curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "-d",
        r#"{"chunked":true}"#,
        "http://10.77.0.2/json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout_of(&chunked)).unwrap();
    assert_eq!(v["keys"], serde_json::json!(["chunked"]));
    let old = ns.curl(&["-v", "--http1.0", "http://10.77.0.2/echo"]);
    assert!(stdout_of(&old).contains("\"version\": \"HTTP/1.0\""));
    let verbose = String::from_utf8_lossy(&old.stderr);
    assert!(
        verbose.contains("< HTTP/1.0 200 OK") && verbose.contains("Closing connection"),
        "{verbose}"
    );

    let head = stdout_of(&ns.curl(&["-I", "http://10.77.0.2/bytes/12345"]));
    assert!(head.contains("Content-Length: 12345"), "{head}");
    let status = stdout_of(&ns.curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "PUT",
        "http://10.77.0.2/echo",
    ]));
    assert_eq!(status, "405");
    let allow = stdout_of(&ns.curl(&["-i", "-X", "DELETE", "http://10.77.0.2/"]));
    assert!(allow.contains("Allow: GET, HEAD"), "{allow}");
    assert_eq!(
        stdout_of(&ns.curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://10.77.0.2/nope"
        ])),
        "404"
    );

    assert!(server.stop().success());
    let pkts = read_capture(&server.capture);
    let ports = client_ports(&pkts);
    assert_eq!(
        ports.len(),
        11,
        "one handshake per curl run, three requests on the kept-alive one"
    );
    for port in &ports {
        check_connection(&pkts, *port);
    }
    // The kept-alive connection: one SYN, three requests.
    let keep = connection(&pkts, ports[1]);
    assert_eq!(
        keep.iter().filter(|(_, t)| t.syn).count(),
        2,
        "SYN and SYN-ACK, once"
    );
    let requests = keep.iter().filter(|(p, t)| p.inbound && t.len > 0).count();
    assert_eq!(requests, 3);
    if let Some(problems) = tshark_problems(&server.capture) {
        assert!(
            problems.is_empty(),
            "tshark found malformed packets or bad checksums: {problems:#?}"
        );
        let comments = tshark_fields(
            &server.capture,
            "frame.comment",
            &["frame.number", "frame.comment"],
        )
        .unwrap();
        assert!(
            comments.iter().any(|l| l.contains("SYN, handshake 1/3")),
            "{comments:#?}"
        );
        assert!(
            comments
                .iter()
                .any(|l| l.contains("LAST-ACK -> CLOSED") || l.contains("-> TIME-WAIT")),
            "{comments:#?}"
        );
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let Some(ns) = Netns::new("pipe") else { return };
    let _server = Server::start(&ns, &[]);
    let answer = kernel_tcp(&ns, |s| {
        exchange(
            s,
            b"GET /echo?n=1 HTTP/1.1\r\nHost: a\r\n\r\nGET /bytes/5 HTTP/1.1\r\nHost: a\r\n\r\nPOST /json HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n[]GET /echo?n=4 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
    });
    let statuses: Vec<&str> = answer
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &answer[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "200", "200", "200"], "{answer}");
    let n1 = answer.find("/echo?n=1").unwrap();
    let five = answer.find("\r\n\r\n01234").unwrap();
    let arr = answer.find("\"array\"").unwrap();
    let n4 = answer.find("/echo?n=4").unwrap();
    assert!(n1 < five && five < arr && arr < n4, "in order: {answer}");
    assert!(answer.contains("Connection: close"), "the last one closes");
}

#[test]
fn bytes_are_exact_over_ten_megabytes() {
    let Some(ns) = Netns::new("bytes") else {
        return;
    };
    let mut server = Server::start(&ns, &[]);
    let file = ns.dir.join("body");
    let out = ns.curl(&[
        "-o",
        file.to_str().unwrap(),
        "-w",
        "%{size_download}",
        "http://10.77.0.2/bytes/10000000",
    ]);
    assert_eq!(stdout_of(&out), "10000000");
    let body = std::fs::read(&file).unwrap();
    assert_eq!(body.len(), 10_000_000);
    let first_bad = body
        .iter()
        .enumerate()
        .position(|(i, &b)| b != expected_byte(i as u64));
    assert_eq!(first_bad, None, "every byte matches the pattern");
    assert!(server.stop().success());
    let pkts = read_capture(&server.capture);
    let port = client_ports(&pkts)[0];
    check_connection(&pkts, port);
    let payload: u64 = connection(&pkts, port)
        .iter()
        .filter(|(p, _)| !p.inbound)
        .map(|(_, t)| u64::from(t.len))
        .sum();
    assert!(
        payload >= 10_000_000,
        "every data segment is in the capture ({payload} bytes)"
    );
}

#[test]
fn malformed_request_gets_400_and_the_next_client_is_served() {
    let Some(ns) = Netns::new("bad") else { return };
    let mut server = Server::start(&ns, &["--idle-timeout", "2"]);
    let answer = kernel_tcp(&ns, |s| exchange(s, b"THIS IS NOT HTTP\r\n\r\n"));
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request"), "{answer}");
    assert!(answer.contains("Connection: close"));
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: 10.77.0.2\r\nX: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let answer = kernel_tcp(&ns, move |s| exchange(s, big_head.as_bytes()));
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let answer = kernel_tcp(&ns, |s| {
        exchange(
            s,
            b"POST /json HTTP/1.1\r\nHost: 10.77.0.2\r\nContent-Length: 5000000\r\n\r\n",
        )
    });
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let answer = kernel_tcp(&ns, |s| exchange(s, b"GET / HTTP/2.0\r\n\r\n"));
    assert!(answer.starts_with("HTTP/1.1 505"), "{answer}");
    // An idle connection is told 408 and closed.
    let answer = kernel_tcp(&ns, |mut s| {
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(
        stdout_of(&ns.curl(&["-o", "/dev/null", "-w", "%{http_code}", "http://10.77.0.2/"])),
        "200"
    );
    assert!(server.stop().success());
    let rejected: Vec<u64> = server
        .journey_events()
        .iter()
        .filter(|e| e["event"] == "rejected")
        .filter_map(|e| e["status"].as_u64())
        .collect();
    assert_eq!(rejected, [400, 431, 413, 505, 408]);
}

#[test]
fn paths_cannot_escape_the_root() {
    let Some(ns) = Netns::new("root") else { return };
    let root = ns.dir.join("www");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/page.html"), "<p>inside</p>").unwrap();
    std::fs::write(ns.dir.join("secret.txt"), "outside").unwrap();
    std::os::unix::fs::symlink(ns.dir.join("secret.txt"), root.join("link.txt")).unwrap();
    let _server = Server::start(&ns, &["--root", root.to_str().unwrap()]);
    let ok = ns.curl(&["-i", "http://10.77.0.2/sub/page.html"]);
    let ok = stdout_of(&ok);
    assert!(
        ok.contains("200 OK") && ok.contains("text/html") && ok.contains("inside"),
        "{ok}"
    );
    for path in [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/sub/%2E%2E/%2e%2e/secret.txt",
        "/link.txt",
        "/..%2fsecret.txt",
    ] {
        let url = format!("http://10.77.0.2{path}");
        let out = ns.curl(&["--path-as-is", "-w", "\n%{http_code}", &url]);
        let body = stdout_of(&out);
        assert!(body.ends_with("404"), "{path}: {body}");
        assert!(!body.contains("outside"), "{path} leaked the file");
    }
}

#[test]
fn sigterm_mid_transfer_leaves_a_complete_capture() {
    let Some(ns) = Netns::new("term") else { return };
    let mut server = Server::start(&ns, &[]);
    // Read part of a huge response from the kernel's TCP, then stop the server.
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = ns.spawn_in_ns(move || {
        let mut s = std::net::TcpStream::connect("10.77.0.2:80").unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        s.write_all(b"GET /bytes/100000000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = vec![0u8; 65536];
        let mut total = 0usize;
        let mut told = false;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
            if total > 2_000_000 && !told {
                tx.send(()).unwrap();
                told = true;
            }
        }
        total
    });
    rx.recv_timeout(std::time::Duration::from_secs(30))
        .expect("2 MB arrived");
    assert!(server.stop().success(), "{}", server.stderr());
    let got = reader.join().unwrap();
    assert!(got > 2_000_000);
    assert!(server.stderr().contains("complete"), "{}", server.stderr());
    let pkts = read_capture(&server.capture);
    let port = client_ports(&pkts)[0];
    let c = connection(&pkts, port);
    let last_out = c.iter().rev().find(|(p, _)| !p.inbound).unwrap();
    assert!(
        last_out.1.rst,
        "our last segment is the RST that tells the client we stopped"
    );
    assert!(
        last_out
            .0
            .comment
            .as_deref()
            .unwrap_or("")
            .contains("ESTABLISHED -> CLOSED"),
        "{:?}",
        last_out.0.comment
    );
    let sent: u64 = c
        .iter()
        .filter(|(p, _)| !p.inbound)
        .map(|(_, t)| u64::from(t.len))
        .sum();
    assert!(
        sent >= got as u64,
        "the capture holds every byte the client got ({sent} >= {got})"
    );
    if let Some(problems) = tshark_problems(&server.capture) {
        assert!(problems.is_empty(), "{problems:#?}");
    }
}

#[test]
fn a_full_accept_queue_drops_syns_until_there_is_room() {
    let Some(ns) = Netns::new("queue") else {
        return;
    };
    let mut server = Server::start(&ns, &["--max-conns", "1", "--backlog", "1"]);
    // A is taken into the table; B completes its handshake and waits in the queue; C's
    // SYN finds no free listener and is dropped, so the kernel retransmits it.
    let run = move || {
        let a = std::net::TcpStream::connect("10.77.0.2:80").unwrap();
        let b = std::net::TcpStream::connect("10.77.0.2:80").unwrap();
        (a, b)
    };
    let (mut a, mut b) = ns.in_ns(run);
    // connect() returns once the kernel has sent its ACK: wait until synack has taken
    // both, A into the table and B into the accept queue, before C tries.
    let established = |server: &Server| {
        server
            .journey_events()
            .iter()
            .filter(|e| e["event"] == "state" && e["to"] == "ESTABLISHED")
            .count()
    };
    assert!(
        wait_until(10.0, || established(&server) >= 2),
        "A and B established"
    );
    let c = ns.spawn_in_ns(move || {
        let started = std::time::Instant::now();
        let mut c = std::net::TcpStream::connect("10.77.0.2:80").unwrap();
        let waited = started.elapsed();
        c.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        c.write_all(b"GET /bytes/3 HTTP/1.1\r\nHost: 10.77.0.2\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        (waited, out)
    });
    assert!(
        wait_until(10.0, || server
            .journey_events()
            .iter()
            .any(|e| e["event"] == "syn_dropped")),
        "C's SYN was dropped"
    );
    // Free the table: A is served and closes first (so our side needs no TIME-WAIT and
    // its socket is reclaimed at once), B is taken, C's retransmitted SYN finds a listener.
    a.write_all(b"GET /bytes/1 HTTP/1.1\r\nHost: 10.77.0.2\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.ends_with(b"\r\n\r\n0") {
        let n = a.read(&mut buf).unwrap();
        assert!(n > 0, "A's response");
        got.extend_from_slice(&buf[..n]);
    }
    drop(a);
    b.write_all(b"GET /bytes/2 HTTP/1.1\r\nHost: 10.77.0.2\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    b.read_to_string(&mut out).unwrap();
    assert!(
        out.ends_with("\r\n\r\n01"),
        "B was served once taken: {out}"
    );
    let (waited, out) = c.join().unwrap();
    assert!(out.ends_with("\r\n\r\n012"), "C was served: {out}");
    assert!(
        waited >= std::time::Duration::from_millis(900),
        "C's connect waited for a SYN retransmission ({waited:?})"
    );
    assert!(server.stop().success());
    let pkts = read_capture(&server.capture);
    let dropped = pkts
        .iter()
        .filter(|p| {
            p.comment
                .as_deref()
                .unwrap_or("")
                .contains("dropped: accept queue full")
        })
        .count();
    assert!(
        dropped >= 1,
        "the dropped SYN is in the capture with its comment"
    );
    let syns_from_c = pkts
        .iter()
        .filter_map(|p| p.tcp)
        .filter(|t| t.syn && !t.ack_flag && t.src.port() == client_ports(&pkts)[2])
        .count();
    assert!(syns_from_c >= 2, "C's SYN was retransmitted");
}
