//! A browser asks for `/journey`: headless Chromium from Debian, inside the test's
//! namespace, as a user's browser would, gets the HTML page with this very connection's
//! ladder drawn in SVG; curl, asking for anything, keeps getting JSON.

mod common;

use std::process::Command;

use common::*;

#[test]
fn a_browser_gets_the_journey_as_a_page_and_curl_gets_json() {
    let Some(ns) = Netns::new("browser") else {
        return;
    };
    let found = Command::new("sh")
        .args(["-c", "command -v chromium"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true and chromium is not installed: .ci/run must install it");
        }
        eprintln!("skipping: needs chromium");
        return;
    }
    let mut server = Server::start(&ns, &["--no-capture", "--journey", "off"]);
    let profile = ns.dir.join("chromium-profile");
    std::fs::create_dir_all(&profile).unwrap();
    let out = ns.run(&[
        "timeout",
        "60",
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        &format!("--user-data-dir={}", profile.display()),
        "--dump-dom",
        "http://10.77.0.2/journey",
    ]);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dom.contains("<title>synack: the journey of connection #"),
        "{dom}"
    );
    // The ladder of this connection, drawn in SVG: its handshake and this request.
    let svg = &dom[dom.find("<svg").expect("an inline SVG")..];
    assert!(svg.contains("SYN-ACK"), "{svg}");
    assert!(dom.contains("GET /journey"), "{dom}");
    assert!(
        dom.contains("LISTEN -&gt; SYN-RECEIVED"),
        "the timeline, escaped: {dom}"
    );
    assert!(dom.contains("synack ladder"), "the capture commands");
    // curl, as everything that does not prefer HTML, gets the JSON record.
    let json = stdout_of(&ns.curl(&["http://10.77.0.2/journey"]));
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert!(v["handshake"]["client_isn"].is_u64(), "{v}");
    assert!(server.stop().success());
}
