//! The device misbehaves under a running server: it is set down, then deleted.

mod common;

use common::*;

#[test]
fn device_down_is_survived_and_device_deleted_ends_the_run_clearly() {
    let Some(ns) = Netns::new("dev") else { return };
    let mut server = Server::start(&ns, &[]);
    let get = |ns: &Netns| {
        ns.curl(&[
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://10.77.0.2/",
        ])
    };
    assert_eq!(String::from_utf8_lossy(&get(&ns).stdout), "200");
    assert!(
        ns.run(&["ip", "link", "set", "tun0", "down"])
            .status
            .success()
    );
    assert!(
        ns.run(&["ip", "link", "set", "tun0", "up"])
            .status
            .success()
    );
    assert_eq!(
        String::from_utf8_lossy(&get(&ns).stdout),
        "200",
        "served again once the device is up"
    );

    assert!(ns.run(&["ip", "link", "del", "tun0"]).status.success());
    let exited = wait_until(10.0, || server.stderr().contains("synack: stopped"));
    assert!(
        exited,
        "the server noticed the device is gone:\n{}",
        server.stderr()
    );
    let status = server.stop();
    assert!(!status.success(), "a vanished device is a failure exit");
    let err = server.stderr();
    assert!(
        err.contains("the TUN device is gone") && err.contains("recreate it"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // The capture up to that point is complete and readable.
    let pkts = read_capture(&server.capture);
    assert!(
        pkts.iter()
            .filter_map(|p| p.tcp)
            .filter(|t| t.syn && !t.ack_flag)
            .count()
            >= 2
    );
}

#[test]
fn a_missing_device_is_created_with_the_mtu_asked_for() {
    let Some(ns) = Netns::new("create") else {
        return;
    };
    let capture = ns.dir.join("created.pcapng");
    let mut child = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            env!("CARGO_BIN_EXE_synack"),
            "serve",
        ])
        .args([
            "--tun",
            "tun7",
            "--addr",
            "10.79.0.2/24",
            "--mtu",
            "1400",
            "--journey",
            "off",
        ])
        .arg("--capture")
        .arg(&capture)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // synack made tun7, gave its kernel side 10.79.0.1/24 and brought it up.
    let up = wait_until(10.0, || {
        let out = ns.run(&["ip", "-4", "-o", "addr", "show", "tun7"]);
        String::from_utf8_lossy(&out.stdout).contains("10.79.0.1/24")
    });
    let page = ns.curl(&[
        "--retry",
        "3",
        "--retry-connrefused",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "http://10.79.0.2/",
    ]);
    let mtu = ns.run(&["cat", "/sys/class/net/tun7/mtu"]);
    // SAFETY: signalling our own child (ip netns exec execs synack).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(up, "the created device has the kernel-side address");
    assert_eq!(String::from_utf8_lossy(&page.stdout), "200");
    assert_eq!(String::from_utf8_lossy(&mtu.stdout).trim(), "1400");
    assert!(status.success());
    let gone = ns.run(&["ip", "link", "show", "tun7"]);
    assert!(
        !gone.status.success(),
        "a device synack created goes away with it"
    );
    // The MSS we offered follows the MTU: 1400 - 20 (IPv4) - 20 (TCP).
    let pkts = read_capture(&capture);
    let synack = pkts
        .iter()
        .filter_map(|p| p.tcp)
        .find(|t| t.syn && t.ack_flag)
        .expect("a SYN-ACK");
    assert_eq!(synack.mss, Some(1360));
}

#[test]
fn an_http_port_that_is_the_https_port_is_refused_before_anything_opens() {
    // Checked before the device is opened: no root needed to see it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_synack"))
        .args(["serve", "--http-port", "443", "--no-capture"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--http-port 443 is also the HTTPS port") && err.contains("--no-https"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
    // With HTTPS off, the same port is fine as far as the flags go.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_synack"))
        .args([
            "serve",
            "--http-port",
            "443",
            "--no-https",
            "--tun",
            "bad/name",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("HTTPS port"), "{err}");
}
