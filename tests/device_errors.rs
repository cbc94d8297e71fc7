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
