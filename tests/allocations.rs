//! "No heap allocation per packet", checked: the binary counts its allocations and shows
//! them at GET /stats.

mod common;

use common::*;

fn stats(ns: &Netns) -> serde_json::Value {
    let out = ns.curl(&["http://10.77.0.2/stats"]);
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_download_allocates_per_connection_not_per_packet() {
    let Some(ns) = Netns::new("alloc") else {
        return;
    };
    let mut server = Server::start(&ns, &[]);
    let before = stats(&ns);
    let got = ns.curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        "http://10.77.0.2/bytes/10000000",
    ]);
    assert_eq!(String::from_utf8_lossy(&got.stdout), "10000000");
    let after = stats(&ns);
    assert!(server.stop().success());

    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    let packets = n(&after, "packets_out") + n(&after, "packets_in")
        - n(&before, "packets_out")
        - n(&before, "packets_in");
    let allocations = n(&after, "heap_allocations") - n(&before, "heap_allocations");
    assert!(
        packets > 6_800,
        "10 MB is at least 6 850 segments out ({packets} packets)"
    );
    // Two connections (the download and this /stats request) with capture and journal on
    // take about 100; one per packet would be thousands.
    assert!(
        allocations < 500,
        "{allocations} heap allocations for {packets} packets: something allocates per packet"
    );
    assert_eq!(n(&after, "connections") - n(&before, "connections"), 2);
}
