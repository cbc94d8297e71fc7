//! A user opens the capture (while the server runs, and after) and reads the journey.

mod common;

use std::time::Duration;

use common::*;

/// CPU time (user + system, in clock ticks) a process has used so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn the_capture_is_complete_while_serving_and_an_idle_server_sleeps() {
    let Some(ns) = Netns::new("idle") else { return };
    let mut server = Server::start(&ns, &[]);
    assert!(
        ns.curl(&["-o", "/dev/null", "http://10.77.0.2/bytes/100000"])
            .status
            .success()
    );
    // Without stopping the server, the file catches up on its own.
    let complete = wait_until(5.0, || {
        let pkts = read_capture(&server.capture);
        pkts.iter().filter_map(|p| p.tcp).filter(|t| t.fin).count() == 2
            && pkts.iter().any(|p| {
                p.comment
                    .as_deref()
                    .is_some_and(|c| c.contains("-> CLOSED") || c.contains("-> TIME-WAIT"))
            })
    });
    assert!(
        complete,
        "the running server's capture holds the whole connection within the sync interval"
    );

    // Idle: the loop sleeps in poll(2) until a packet or a timer, so it uses next to no CPU.
    let pid = server.pid();
    let before = cpu_ticks(pid);
    let window = std::time::Instant::now();
    while window.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let used = cpu_ticks(pid) - before;
    assert!(
        used <= 4,
        "an idle server used {used} ticks (10 ms each) of CPU in 2 s"
    );
    assert!(server.stop().success());
}

#[test]
fn journey_matches_the_capture() {
    let Some(ns) = Netns::new("journey") else {
        return;
    };
    let mut server = Server::start(&ns, &[]);
    let out = ns.curl(&["http://10.77.0.2/echo", "http://10.77.0.2/journey"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let journey: serde_json::Value =
        serde_json::from_str(&text[text.find("}\n{").unwrap() + 2..]).unwrap();
    assert!(server.stop().success());

    // /journey told this connection's handshake as the packets show it.
    let pkts = read_capture(&server.capture);
    let port = client_ports(&pkts)[0];
    let c = connection(&pkts, port);
    let syn = c.iter().find(|(_, t)| t.syn && !t.ack_flag).unwrap().1;
    let synack = c.iter().find(|(_, t)| t.syn && t.ack_flag).unwrap().1;
    let hs = &journey["handshake"];
    assert_eq!(hs["client_isn"].as_u64(), Some(u64::from(syn.seq)));
    assert_eq!(hs["server_isn"].as_u64(), Some(u64::from(synack.seq)));
    assert_eq!(hs["client_options"]["mss"].as_u64(), syn.mss.map(u64::from));
    assert_eq!(
        hs["client_options"]["window_scale"].as_u64(),
        syn.wscale.map(u64::from)
    );
    assert_eq!(hs["client_window"].as_u64(), Some(u64::from(syn.window)));
    assert_eq!(journey["remote"], format!("10.77.0.1:{port}"));
    assert_eq!(
        journey["requests"], 1,
        "the /journey request is being answered, /echo was served"
    );
    let stages: Vec<&str> = journey["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[0].as_str().unwrap())
        .collect();
    for stage in ["connect", "receive", "parse", "process", "respond", "send"] {
        assert!(stages.contains(&stage), "{stage} in {stages:?}");
    }

    // The JSON journey has every stage of the connection, close included, with the
    // teardown's numbers.
    let events = server.journey_events();
    let conn1: Vec<&serde_json::Value> = events.iter().filter(|e| e["conn"] == 1).collect();
    let kinds: Vec<&str> = conn1.iter().map(|e| e["event"].as_str().unwrap()).collect();
    for kind in [
        "syn",
        "syn_ack",
        "handshake_ack",
        "accepted",
        "received",
        "parsed",
        "processed",
        "responded",
        "sent",
        "fin",
        "fin_acked",
        "closed",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let syn_event = conn1.iter().find(|e| e["event"] == "syn").unwrap();
    assert_eq!(syn_event["isn"].as_u64(), Some(u64::from(syn.seq)));
    let accepted = conn1.iter().find(|e| e["event"] == "accepted").unwrap();
    assert_eq!(
        accepted["backlog"], 4096,
        "the default backlog, Linux's somaxconn"
    );
    let transitions: Vec<String> = conn1
        .iter()
        .filter(|e| e["event"] == "state")
        .map(|e| {
            format!(
                "{} -> {}",
                e["from"].as_str().unwrap(),
                e["to"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        transitions[..2],
        ["LISTEN -> SYN-RECEIVED", "SYN-RECEIVED -> ESTABLISHED"]
    );
    assert!(
        transitions.last().unwrap().ends_with("-> CLOSED"),
        "{transitions:?}"
    );
    let received = conn1.iter().find(|e| e["event"] == "received").unwrap();
    assert!(received["rx_capacity"].as_u64().unwrap() >= received["window"].as_u64().unwrap());
}

#[test]
fn text_journey_is_a_timeline_per_connection() {
    let Some(ns) = Netns::new("text") else { return };
    let file = ns.dir.join("timeline.txt");
    let mut server = Server::start(
        &ns,
        &[
            "--journey",
            "text",
            "--journey-file",
            file.to_str().unwrap(),
        ],
    );
    assert!(
        ns.curl(&["-o", "/dev/null", "http://10.77.0.2/"])
            .status
            .success()
    );
    assert!(server.stop().success());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("connection #1  10.77.0.1:"), "{text}");
    for needle in [
        "SYN from 10.77.0.1",
        "SYN-ACK sent, our ISN",
        "LISTEN -> SYN-RECEIVED",
        "GET / HTTP/1.1",
        "route /, ",
        "200, ",
        "queued for sending",
        "FIN from",
        "socket closed and released",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

#[test]
fn no_capture_means_no_file() {
    let Some(ns) = Netns::new("nocap") else {
        return;
    };
    let mut server = Server::start(&ns, &["--no-capture"]);
    assert!(
        ns.curl(&["-o", "/dev/null", "http://10.77.0.2/"])
            .status
            .success()
    );
    assert!(server.stop().success());
    assert!(!server.capture.exists());
    assert!(server.stderr().contains("capture off"));
}

/// SIGINT and SIGTERM wake the stack's poll(2) only if the stack's thread takes them: the
/// capture's writer thread must block them, or an idle server sleeps through Ctrl-C.
#[test]
fn only_the_stacks_thread_takes_signals() {
    let Some(ns) = Netns::new("sigmask") else {
        return;
    };
    let mut server = Server::start(&ns, &[]);
    let tasks = std::fs::read_dir(format!("/proc/{}/task", server.pid())).unwrap();
    let mut writers = 0;
    for task in tasks.map_while(Result::ok) {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap();
        let status = std::fs::read_to_string(task.path().join("status")).unwrap();
        let blocked = status
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap();
        let (int, term) = (1u64 << (libc::SIGINT - 1), 1u64 << (libc::SIGTERM - 1));
        if comm.trim() == "capture-writer" {
            writers += 1;
            assert_eq!(blocked & (int | term), int | term, "the writer blocks them");
        } else {
            assert_eq!(blocked & (int | term), 0, "{} takes them", comm.trim());
        }
    }
    assert_eq!(writers, 1);
    assert!(server.stop().success());
}
