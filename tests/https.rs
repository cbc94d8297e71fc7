//! A user points curl and openssl at synack's HTTPS server and reads the capture.

mod common;

use std::io::Write;

use common::*;

#[test]
fn curl_and_openssl_over_tls_and_the_capture_decrypts_itself() {
    let Some(ns) = Netns::new("https") else {
        return;
    };
    let keylog = ns.dir.join("keys.log");
    let mut server = Server::start(&ns, &["--keylog", keylog.to_str().unwrap()]);
    let cert = ns.dir.join("synack-cert.pem");
    assert!(
        server.stderr().contains("written to"),
        "{}",
        server.stderr()
    );
    let ca = cert.to_str().unwrap();

    // Verified, by address and by name (resolved by synack's own DNS), keep-alive.
    let body = stdout_of(&ns.curl(&["--cacert", ca, "https://10.77.0.2/echo"]));
    assert!(body.contains("\"path\": \"/echo\""), "{body}");
    let resolv = format!("/etc/netns/{}/resolv.conf", ns.name);
    std::fs::create_dir_all(format!("/etc/netns/{}", ns.name)).unwrap();
    std::fs::write(&resolv, "nameserver 10.77.0.2\n").unwrap();
    let out = ns.curl(&[
        "-v",
        "--cacert",
        ca,
        "https://synack.test/",
        "https://synack.test/journey",
    ]);
    let verbose = String::from_utf8_lossy(&out.stderr);
    stdout_of(&out);
    assert!(
        verbose.contains("SSL connection using TLSv1.3"),
        "{verbose}"
    );
    assert!(
        verbose.contains("ALPN: server accepted http/1.1"),
        "{verbose}"
    );
    assert!(
        verbose.contains("Re-using existing connection"),
        "keep-alive over TLS: {verbose}"
    );
    let journey: serde_json::Value = {
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(&text[text.find("\n{").unwrap()..]).unwrap()
    };
    let events = journey["events"].as_array().unwrap();
    let tls = events
        .iter()
        .find(|e| e["event"] == "tls_established")
        .expect("a decrypt-stage event");
    assert_eq!(
        (tls["sni"].as_str(), tls["alpn"].as_str()),
        (Some("synack.test"), Some("http/1.1"))
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "encrypted" && e["stage"] == "encrypt")
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "decrypted" && e["stage"] == "decrypt")
    );

    // TLS 1.2 forced, and openssl's own handshake.
    let out = ns.curl(&[
        "-v",
        "--tls-max",
        "1.2",
        "--cacert",
        ca,
        "https://10.77.0.2/",
    ]);
    stdout_of(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("SSL connection using TLSv1.2"));
    let mut openssl = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "openssl",
            "s_client",
            "-connect",
            "10.77.0.2:443",
        ])
        .args([
            "-servername",
            "synack.test",
            "-CAfile",
            ca,
            "-verify_return_error",
            "-quiet",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    openssl
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET /bytes/5 HTTP/1.1\r\nHost: synack.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let out = openssl.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("HTTP/1.1 200 OK") && text.ends_with("\r\n\r\n01234"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Plain HTTP and garbage on 443 end those connections; a download running beside them
    // is not disturbed.
    let download = ns.dir.join("parallel");
    let mut parallel = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "curl",
            "-sS",
            "--limit-rate",
            "20M",
            "--cacert",
            ca,
        ])
        .args([
            "-o",
            download.to_str().unwrap(),
            "https://10.77.0.2/bytes/20000000",
        ])
        .spawn()
        .unwrap();
    let plain = ns.curl(&["--max-time", "5", "http://10.77.0.2:443/"]);
    assert!(
        !plain.status.success(),
        "plain HTTP to the TLS port is refused"
    );
    let answer = ns.in_ns(|| {
        let mut s = std::net::TcpStream::connect("10.77.0.2:443").unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s.write_all(&[0x42; 300]).unwrap();
        let mut back = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut back);
        back
    });
    assert!(
        answer.is_empty() || answer[0] == 0x15,
        "an alert or nothing, then close: {answer:?}"
    );
    assert!(parallel.wait().unwrap().success());
    let body = std::fs::read(&download).unwrap();
    assert_eq!(body.len(), 20_000_000);
    assert!(
        body.iter()
            .enumerate()
            .all(|(i, &b)| b == expected_byte(i as u64)),
        "byte-exact over TLS"
    );
    assert!(stdout_of(&ns.curl(&["--cacert", ca, "https://10.77.0.2/bytes/3"])).ends_with("012"));
    assert!(server.stop().success());

    // The capture carries the secrets: tshark shows the HTTP inside TLS with no key file.
    if let Some(lines) = tshark_fields(
        &server.capture,
        "http.request",
        &["tcp.dstport", "http.request.uri"],
    ) {
        assert!(
            lines.iter().any(|l| l == "443|/journey"),
            "decrypted requests: {lines:#?}"
        );
        assert!(lines.iter().any(|l| l == "443|/echo"), "{lines:#?}");
    }
    let keys = std::fs::read_to_string(&keylog).unwrap();
    assert!(
        keys.lines()
            .any(|l| l.starts_with("CLIENT_TRAFFIC_SECRET_0 ")),
        "--keylog has TLS 1.3 secrets"
    );
    assert!(
        keys.lines().any(|l| l.starts_with("CLIENT_RANDOM ")),
        "and the TLS 1.2 one"
    );
}

#[test]
fn a_bad_certificate_is_one_clear_error() {
    let Some(ns) = Netns::new("badcert") else {
        return;
    };
    std::fs::write(ns.dir.join("junk.pem"), "not a certificate").unwrap();
    let out = ns.run(&[
        env!("CARGO_BIN_EXE_synack"),
        "serve",
        "--no-capture",
        "--cert",
        ns.dir.join("junk.pem").to_str().unwrap(),
        "--key",
        ns.dir.join("missing.key").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("certificate file") && err.contains("--cert"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
