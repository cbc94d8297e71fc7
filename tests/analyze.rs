//! A user reads captures with `synack ladder` and `synack stats`: the committed samples
//! (made again byte for byte by the command beside each, and their text output kept as
//! snapshots), tcpdump captures of tun0 (with a snap length, in pcap and pcapng), captures
//! with hostile comments, and files that are not captures at all. Every SVG picture is
//! parsed as XML by a third parser (roxmltree). Also the knobs, each seen in a capture.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn synack(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_synack"))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    assert!(
        out.status.success(),
        "synack failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn scratch(tag: &str) -> PathBuf {
    let dir = repo()
        .join("target/test-runs")
        .join(format!("analyze-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// (file name, demo arguments) of each committed sample.
fn samples() -> Vec<(String, Vec<String>)> {
    let list = std::fs::read_to_string(repo().join("captures/samples/commands.txt")).unwrap();
    list.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, args) = l.split_once(':').unwrap();
            let args = args.split_whitespace().map(str::to_owned).collect();
            (name.trim().to_owned(), args)
        })
        .collect()
}

/// Compares with the snapshot in tests/snapshots/, or writes it with UPDATE_SNAPSHOTS=1.
fn snapshot(name: &str, actual: &str) {
    let path = repo().join("tests/snapshots").join(name);
    if std::env::var("UPDATE_SNAPSHOTS").is_ok() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_SNAPSHOTS=1 writes it)", path.display()));
    if expected != actual {
        let diff = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| format!("line {}:\n- {a}\n+ {b}", i + 1))
            .unwrap_or_else(|| "lengths differ".into());
        panic!("{name} changed (UPDATE_SNAPSHOTS=1 accepts it)\n{diff}");
    }
}

#[test]
fn the_samples_are_what_their_commands_make_and_read_cleanly() {
    let dir = scratch("samples");
    let list = samples();
    assert_eq!(list.len(), 4);
    for (name, args) in &list {
        let committed = repo().join("captures/samples").join(name);
        let remade = dir.join(name);
        let mut all: Vec<&str> = vec!["demo", "--journey", "off", "--capture"];
        all.push(remade.to_str().unwrap());
        all.extend(args.iter().map(String::as_str));
        text(&synack(&all));
        assert!(
            std::fs::read(&committed).unwrap() == std::fs::read(&remade).unwrap(),
            "{name} is no longer what `synack demo {}` makes: remake it (captures/samples/commands.txt)",
            args.join(" ")
        );
        // Read back by the independent parser, and by tshark where it is installed.
        let pkts = read_capture(&committed);
        assert!(pkts.len() > 10, "{name}");
        if let Some(problems) = tshark_problems(&committed) {
            assert!(problems.is_empty(), "{name}: {problems:?}");
        }
    }
}

#[test]
fn ladder_and_stats_of_the_samples_match_their_snapshots() {
    for (name, _) in samples() {
        let path = repo().join("captures/samples").join(&name);
        let p = path.to_str().unwrap();
        let stem = name.trim_end_matches(".pcapng");
        snapshot(
            &format!("{stem}.ladder.txt"),
            &text(&synack(&["ladder", "--color", "never", p])),
        );
        snapshot(&format!("{stem}.stats.txt"), &text(&synack(&["stats", p])));
    }
}

#[test]
fn the_analysis_finds_what_the_samples_show() {
    let lossy = repo().join("captures/samples/lossy-transfer.pcapng");
    let ladder = text(&synack(&[
        "ladder",
        "--color",
        "never",
        lossy.to_str().unwrap(),
    ]));
    for tag in [
        "[retransmission]",
        "[duplicate ACK #3]",
        "[fast retransmission]",
        "[sender enters TIME-WAIT]",
    ] {
        assert!(ladder.contains(tag), "{tag} missing");
    }
    let json = text(&synack(&["stats", "--json", lossy.to_str().unwrap()]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let c = &v[0];
    assert_eq!(c["conn"], 2, "conversation 1 is the DNS lookup");
    // Three responses: the page (about 2 kB), the JSON (about 500 B) and 200 000 bytes,
    // each byte counted once however often it was sent.
    let bytes = c["bytes"][1].as_u64().unwrap();
    assert!((202_000..205_000).contains(&bytes), "{bytes}");
    assert!(c["retransmissions"][1].as_u64().unwrap() > 0);
    assert!(c["rtt_samples"].as_u64().unwrap() > 10);
    // The same count tshark's analysis makes.
    if let Some(retx) = tshark_fields(&lossy, "tcp.analysis.retransmission", &["frame.number"]) {
        let ours =
            c["retransmissions"][0].as_u64().unwrap() + c["retransmissions"][1].as_u64().unwrap();
        assert_eq!(ours, retx.len() as u64, "synack and tshark");
    }
    // The client's own capture: our FIN first, then TIME-WAIT on the last ACK.
    let tw = repo().join("captures/samples/time-wait-client.pcapng");
    let ladder = text(&synack(&[
        "ladder",
        "--color",
        "never",
        "--conn",
        "2",
        tw.to_str().unwrap(),
    ]));
    assert!(
        ladder.contains("our side: ESTABLISHED -> FIN-WAIT-1"),
        "{ladder}"
    );
    assert!(ladder.contains("-> TIME-WAIT"), "{ladder}");
    assert!(
        !ladder.contains("#1 DNS"),
        "--conn 2 shows only the connection"
    );
    // Pictures.
    let dir = scratch("svg");
    let (svg, plot) = (dir.join("l.svg"), dir.join("p.svg"));
    text(&synack(&[
        "ladder",
        "--svg",
        svg.to_str().unwrap(),
        tw.to_str().unwrap(),
    ]));
    text(&synack(&[
        "stats",
        "--plot",
        plot.to_str().unwrap(),
        lossy.to_str().unwrap(),
    ]));
    svg_text(&svg);
    let plot = svg_text(&plot);
    assert!(plot.contains("#d00"), "retransmissions in red");
    for title in PLOT_AXES {
        assert!(plot.contains(title), "the plot's axis title {title:?}");
    }
}

/// The axis titles every plot has.
const PLOT_AXES: [&str; 4] = [
    "time since the capture's first packet (s)",
    "sequence number (bytes)",
    ">bytes<",
    "milliseconds (log scale)",
];

/// An SVG file that parses as XML, with an `svg` root; its text (all of it, markup too).
fn svg_text(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text)
        .unwrap_or_else(|e| panic!("{} is not well-formed XML: {e}", path.display()));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    text
}

/// The text a person sees in an SVG: every text node, joined.
fn svg_words(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    doc.descendants()
        .filter_map(|n| n.text())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn not_a_capture_gets_one_clear_sentence() {
    let dir = scratch("bad");
    let garbage = dir.join("garbage.pcapng");
    std::fs::write(&garbage, b"this is not a capture at all").unwrap();
    let good = std::fs::read(repo().join("captures/samples/http-journey.pcapng")).unwrap();
    let cut = dir.join("cut.pcapng");
    std::fs::write(&cut, &good[..good.len() / 2 + 3]).unwrap();
    for (file, says) in [
        (&garbage, "is not a pcap or pcapng capture"),
        (&cut, "damaged or cut short"),
        (&dir.join("missing.pcapng"), "cannot open"),
    ] {
        for cmd in ["ladder", "stats"] {
            let out = synack(&[cmd, file.to_str().unwrap()]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{cmd} {}: {err}",
                file.display()
            );
            assert!(
                err.contains(says) && !err.contains("panicked"),
                "{cmd}: {err}"
            );
        }
    }
    let out = synack(&[
        "ladder",
        "--conn",
        "9",
        repo()
            .join("captures/samples/http-journey.pcapng")
            .to_str()
            .unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("has conversations 1..=2"));
}

/// The SYN-ACK (the server's SYN) of a demo capture, as etherparse reads it.
fn synack_of(capture: &Path) -> Tcp {
    read_capture(capture)
        .iter()
        .filter_map(|p| p.tcp)
        .find(|t| t.syn && t.ack_flag)
        .expect("a SYN-ACK")
}

fn demo_capture(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut all = vec![
        "demo",
        "--http",
        "--journey",
        "off",
        "--bytes",
        "50k",
        "--capture",
    ];
    all.push(path.to_str().unwrap());
    all.extend_from_slice(args);
    text(&synack(&all));
    path
}

#[test]
fn each_knob_shows_in_the_capture() {
    let dir = scratch("knobs");
    // --rx-buf: the window and window scale the SYN-ACK offers (RFC 7323 §2.2).
    let small = synack_of(&demo_capture(&dir, "rx16k.pcapng", &["--rx-buf", "16k"]));
    let big = synack_of(&demo_capture(&dir, "rx1m.pcapng", &["--rx-buf", "1m"]));
    assert_eq!((small.window, small.wscale), (16384, Some(0)));
    assert_eq!(
        big.wscale,
        Some(5),
        "1 MiB needs a shift of 5 to fit 16 bits"
    );
    assert!(u32::from(big.window) << 5 >= 1 << 20);
    // --mtu: the MSS option follows (MTU - 40).
    let mss = synack_of(&demo_capture(&dir, "mtu1000.pcapng", &["--mtu", "1000"])).mss;
    assert_eq!(mss, Some(960));
    // --seed: the same ISNs; another seed, others.
    let isn = |seed: &str| {
        synack_of(&demo_capture(
            &dir,
            &format!("seed{seed}.pcapng"),
            &["--seed", seed],
        ))
        .seq
    };
    assert_eq!(isn("5"), isn("5"));
    assert_ne!(isn("5"), isn("6"));
    // --nagle: the same small writes make more segments without it (RFC 896).
    let segments = |nagle: &str| {
        let cap = demo_capture(
            &dir,
            &format!("nagle-{nagle}.pcapng"),
            &["--write-size", "10", "--write-every", "1", "--nagle", nagle],
        );
        let json = text(&synack(&["stats", "--json", cap.to_str().unwrap()]));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v[0]["segments"][0].as_u64().unwrap()
    };
    let (on, off) = (segments("on"), segments("off"));
    assert!(off > on + 4, "Nagle off {off} segments, on {on}");
    // --loss: retransmissions that stats counts, and the transfer is still exact.
    let lossy = dir.join("loss.pcapng");
    let out = synack(&[
        "demo",
        "--http",
        "--journey",
        "off",
        "--bytes",
        "100k",
        "--loss",
        "4",
        "--seed",
        "9",
        "--capture",
        lossy.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("byte-exact"));
    let json = text(&synack(&["stats", "--json", lossy.to_str().unwrap()]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let retx =
        v[0]["retransmissions"][0].as_u64().unwrap() + v[0]["retransmissions"][1].as_u64().unwrap();
    assert!(retx > 0, "stats counts the retransmissions");
}

#[test]
fn ladder_reads_what_tcpdump_captured_on_tun0() {
    let Some(ns) = Netns::new("tcpdump") else {
        return;
    };
    if ns.run(&["tcpdump", "--version"]).status.code() != Some(0) {
        assert!(std::env::var("CI").is_err(), "CI must install tcpdump");
        eprintln!("skipping: tcpdump is not installed");
        return;
    }
    let mut server = Server::start(&ns, &["--no-capture"]);
    let pcap = ns.dir.join("tcpdump.pcap");
    let mut dump = Command::new("ip")
        .args([
            "netns", "exec", &ns.name, "tcpdump", "-i", "tun0", "-U", "-w",
        ])
        .arg(&pcap)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(10.0, || std::fs::metadata(&pcap)
        .is_ok_and(|m| m.len() >= 24)));
    let out = ns.curl(&["-o", "/dev/null", "http://10.77.0.2/bytes/20000"]);
    assert!(out.status.success());
    assert!(wait_until(10.0, || {
        let frames = synack::analyze::read(&pcap).map(|f| f.len()).unwrap_or(0);
        frames >= 10
    }));
    unsafe { libc::kill(dump.id() as i32, libc::SIGINT) };
    let _ = dump.wait();
    assert!(server.stop().success());
    let ladder = text(&synack(&[
        "ladder",
        "--color",
        "never",
        pcap.to_str().unwrap(),
    ]));
    assert!(ladder.contains("SYN seq=0 len=0"), "{ladder}");
    assert!(ladder.contains("SYN,ACK seq=0 ack=1"), "{ladder}");
    assert!(ladder.contains("FIN"), "{ladder}");
    let json = text(&synack(&["stats", "--json", pcap.to_str().unwrap()]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v[0]["bytes"][1].as_u64().unwrap() >= 20_000, "{json}");
    assert!(v[0]["handshake_ms"].as_f64().is_some(), "{json}");
}

/// The same transfer captured by tcpdump with a snap length (`-s 96`), as pcap and as
/// pcapng (tests/fixtures/README.md): every data segment is cut short, and read anyway.
#[test]
fn captures_cut_by_a_snap_length_read_in_pcap_and_pcapng() {
    let dir = repo().join("tests/fixtures");
    let mut seen = Vec::new();
    for name in ["tcpdump-s96-loss3.pcap", "tcpdump-s96-loss3.pcapng"] {
        let path = dir.join(name);
        let p = path.to_str().unwrap();
        let json = text(&synack(&["stats", "--json", p]));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let c = &v[0];
        // `curl /bytes/300000`: the body and the response head, each byte counted once,
        // from the IP headers' lengths (the capture holds 52 bytes of each segment).
        let bytes = c["bytes"][1].as_u64().unwrap();
        assert!((300_100..300_400).contains(&bytes), "{name}: {bytes}");
        assert!(c["cut"][1].as_u64().unwrap() > 200, "{name}: {json}");
        assert!(c["handshake_ms"].as_f64().is_some(), "{name}");
        let ours = c["retransmissions"][1].as_u64().unwrap();
        assert!(ours > 0, "{name}");
        if let Some(theirs) = tshark_fields(&path, "tcp.analysis.retransmission", &["frame.number"])
        {
            assert_eq!(ours, theirs.len() as u64, "{name}: synack and tshark");
        }
        let ladder = text(&synack(&["ladder", "--color", "never", p]));
        assert!(ladder.contains("GET /bytes/300000"), "{name}");
        assert!(
            ladder.contains("len=1460"),
            "{name}: the length on the wire"
        );
        seen.push(json);
    }
    assert_eq!(seen[0], seen[1], "pcap and pcapng read the same");
}

/// The kernel uploading to synack, which drops some of what it gets (after the capture
/// point): no comment says what was lost, so `ladder` guesses, and each guess is a
/// segment the kernel sent again from exactly there.
#[test]
fn segments_a_capture_does_not_say_were_lost_are_probably_lost() {
    let path = repo().join("tests/fixtures/tcpdump-s96-upload-loss5.pcap");
    let ladder = text(&synack(&[
        "ladder",
        "--color",
        "never",
        path.to_str().unwrap(),
    ]));
    let rows: Vec<&str> = ladder.lines().collect();
    let seq = |row: &str| {
        row.split_whitespace()
            .find(|w| w.starts_with("seq="))
            .map(str::to_owned)
    };
    let guessed: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].contains("[probably lost]"))
        .collect();
    assert!(!guessed.is_empty(), "{ladder}");
    for i in guessed {
        assert!(rows[i].contains("X        |"), "{}", rows[i]);
        // (An earlier copy within a round trip may be taken as reordered, as Wireshark
        // takes it.)
        assert!(
            rows[i + 1..]
                .iter()
                .any(|r| seq(r) == seq(rows[i]) && r.contains("retransmission]")),
            "{} was never retransmitted",
            rows[i]
        );
    }
    let json = text(&synack(&["stats", "--json", path.to_str().unwrap()]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v[0]["lost"][0].as_u64().unwrap() > 0, "{json}");
    if let Some(theirs) = tshark_fields(&path, "tcp.analysis.retransmission", &["frame.number"]) {
        let ours = v[0]["retransmissions"][0].as_u64().unwrap();
        assert_eq!(ours, theirs.len() as u64, "synack and tshark");
    }
    // synack's own capture says what it lost: no guesses there.
    let lossy = repo().join("captures/samples/lossy-transfer.pcapng");
    let ladder = text(&synack(&[
        "ladder",
        "--color",
        "never",
        lossy.to_str().unwrap(),
    ]));
    assert!(!ladder.contains("probably lost"));
}

/// A Linux cooked (SLL2) frame shorter than its 20-byte header, starting `08 00`: the
/// fuzzer's 42-byte file made `ladder` and `stats` panic.
#[test]
fn a_frame_shorter_than_its_link_header_is_no_panic() {
    let dir = scratch("sll2");
    let path = dir.join("short.pcap");
    let mut file = Vec::new();
    // pcap header: magic, version 2.4, zone, accuracy, snap length, link type 276 (SLL2).
    file.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    file.extend_from_slice(&2u16.to_le_bytes());
    file.extend_from_slice(&4u16.to_le_bytes());
    for w in [0u32, 0, 65535, 276] {
        file.extend_from_slice(&w.to_le_bytes());
    }
    // One record of 2 bytes.
    for w in [0u32, 0, 2, 2] {
        file.extend_from_slice(&w.to_le_bytes());
    }
    file.extend_from_slice(&[0x08, 0x00]);
    assert_eq!(file.len(), 42);
    std::fs::write(&path, &file).unwrap();
    for cmd in ["ladder", "stats"] {
        let out = synack(&[cmd, path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        assert!(err.contains("holds no TCP connection"), "{cmd}: {err}");
    }
}

/// One packet of a made-up capture: client 10.77.0.1:40000, server 10.77.0.2:80.
struct Made {
    ms: f64,
    from_client: bool,
    seq: u32,
    ack: u32,
    flags: &'static str,
    payload: Vec<u8>,
    comment: Option<String>,
}

fn made(ms: f64, from_client: bool, (seq, ack): (u32, u32), flags: &'static str) -> Made {
    Made {
        ms,
        from_client,
        seq,
        ack,
        flags,
        payload: Vec::new(),
        comment: None,
    }
}

impl Made {
    fn data(mut self, payload: &[u8]) -> Made {
        self.payload = payload.to_vec();
        self
    }
    fn note(mut self, comment: &str) -> Made {
        self.comment = Some(comment.to_owned());
        self
    }
}

/// Writes `packets` as a pcapng of Raw IP with nanosecond timestamps and comments.
fn write_pcapng(path: &Path, packets: &[Made]) {
    use pcap_file::DataLink;
    use pcap_file::pcapng::PcapNgWriter;
    use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
    use pcap_file::pcapng::blocks::interface_description::{
        InterfaceDescriptionBlock, InterfaceDescriptionOption,
    };
    let mut w = PcapNgWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::RAW,
        snaplen: 0,
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
    })
    .unwrap();
    for p in packets {
        let (src, dst, sp, dp) = if p.from_client {
            ([10, 77, 0, 1], [10, 77, 0, 2], 40000, 80)
        } else {
            ([10, 77, 0, 2], [10, 77, 0, 1], 80, 40000)
        };
        let mut b = etherparse::PacketBuilder::ipv4(src, dst, 64).tcp(sp, dp, p.seq, 65535);
        if p.flags.contains('S') {
            b = b.syn();
        }
        if p.flags.contains('A') {
            b = b.ack(p.ack);
        }
        if p.flags.contains('F') {
            b = b.fin();
        }
        let mut ip = Vec::new();
        b.write(&mut ip, &p.payload).unwrap();
        let options = p
            .comment
            .iter()
            .map(|c| EnhancedPacketOption::Comment(c.clone().into()))
            .collect();
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: std::time::Duration::from_secs_f64(p.ms / 1000.0),
            original_len: ip.len() as u32,
            data: ip.into(),
            options,
        })
        .unwrap();
    }
}

/// Comments are untrusted text: an escape sequence in one (or in a request target) must
/// reach neither the terminal nor the SVG as it is.
#[test]
fn control_characters_from_a_capture_are_shown_not_obeyed() {
    let dir = scratch("hostile");
    let path = dir.join("hostile.pcapng");
    let evil = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\u{202e}txet\x00\x0b end";
    write_pcapng(
        &path,
        &[
            made(0.0, true, (100, 0), "S").note(evil),
            made(1.0, false, (500, 101), "SA"),
            made(2.0, true, (101, 501), "A").data(b"GET /\x1b[2J HTTP/1.1\r\n\r\n"),
            made(3.0, false, (501, 126), "A").data(b"HTTP/1.1 200 \x1b[5mOK\r\n\r\n"),
        ],
    );
    let p = path.to_str().unwrap();
    for colour in ["never", "always"] {
        let out = text(&synack(&["ladder", "--color", colour, p]));
        for raw in [
            "\x1b]", "\x1b[2J", "\x1b[31m", "\x1b[5m", "\x07", "\x00", "\u{202e}",
        ] {
            assert!(
                !out.contains(raw),
                "--color {colour}: {raw:?} reached the terminal"
            );
        }
        assert!(out.contains("\\x1b[2J"), "shown visibly: {out}");
        assert!(out.contains("\\u{202e}"), "{out}");
        if colour == "never" {
            assert!(!out.contains('\x1b'), "no escape at all with --color never");
        }
    }
    let svg = dir.join("hostile.svg");
    text(&synack(&["ladder", "--svg", svg.to_str().unwrap(), p]));
    let words = svg_words(&svg);
    assert!(words.contains("\\x1b]0;owned\\x07"), "{words}");
    assert!(words.contains("GET /\\x1b[2J"), "{words}");
    let plot = dir.join("hostile-plot.svg");
    text(&synack(&["stats", "--plot", plot.to_str().unwrap(), p]));
    svg_text(&plot);
}

/// A capture that carries the sender's state in its comments (what synack writes with
/// `--internals on`): the RTT panel draws the sender's own RTT, SRTT and RTO; the lost
/// segment is drawn lost in the ladder and the plot.
#[test]
fn the_senders_own_numbers_are_drawn_when_the_comments_have_them() {
    let dir = scratch("internals");
    let path = dir.join("internals.pcapng");
    let mut packets = vec![
        made(0.0, true, (100, 0), "S"),
        made(2.0, false, (500, 101), "SA"),
        made(4.0, true, (101, 501), "A").data(b"GET /bytes/14600 HTTP/1.1\r\n\r\n"),
    ];
    let note = |i: u32, why: &str| {
        format!(
            "rtt sample {:.3} ms, srtt {:.3} ms, rttvar 0.500 ms, rto 1000 ms; in flight {} B, peer window 65535 B, send buffer {}/262144 B; why: {why}",
            2.0 + f64::from(i) * 0.1,
            2.0,
            (i + 1) * 1460,
            14600 - i * 1460
        )
    };
    for i in 0..10u32 {
        let mut p = made(6.0, false, (501 + i * 1460, 130), "A")
            .data(&[b'x'; 1460])
            .note(&note(i, "new data"));
        if i == 3 {
            p = p.note(&format!("{}; fault: lost (--loss)", note(i, "new data")));
        }
        packets.push(p);
    }
    packets.push(made(8.0, true, (130, 501 + 3 * 1460), "A"));
    packets.push(
        made(1008.0, false, (501 + 3 * 1460, 130), "A")
            .data(&[b'x'; 1460])
            .note("rtt sample 2.000 ms, srtt 2.000 ms, rttvar 0.500 ms, rto 2000 ms; in flight 10220 B, peer window 65535 B, send buffer 10220/262144 B; why: retransmission after RTO 1000 ms"),
    );
    packets.push(made(1010.0, true, (130, 501 + 10 * 1460), "A"));
    write_pcapng(&path, &packets);
    let p = path.to_str().unwrap();

    let ladder = text(&synack(&["ladder", "--color", "never", p]));
    let lost = ladder
        .lines()
        .find(|l| l.contains("seq=4381 "))
        .expect("the lost segment's row");
    assert!(
        lost.contains("|        X") && lost.contains("[lost]"),
        "{lost}"
    );
    assert!(
        ladder.contains("[retransmission]"),
        "the copy after the RTO: {ladder}"
    );
    assert!(
        !ladder.contains("probably lost"),
        "the capture said: {ladder}"
    );

    let plot = dir.join("plot.svg");
    text(&synack(&["stats", "--plot", plot.to_str().unwrap(), p]));
    let svg = svg_text(&plot);
    let words = svg_words(&plot);
    for title in PLOT_AXES {
        assert!(svg.contains(title), "{title}");
    }
    assert!(
        words.contains("the sender's own, from its comments"),
        "{words}"
    );
    assert!(
        words.contains("in flight (the sender's own count"),
        "{words}"
    );
    // The RTO line (red) goes from 1000 ms to 2000 ms; with a log scale from about 1 to
    // 10 000 ms both are on the picture.
    assert!(
        svg.contains(r##"stroke="#d00" stroke-width="1.6""##),
        "the RTO line"
    );
    // Zoomed in on the first 10 ms: the 1 s pause is left out, the ticks are round.
    let zoom = dir.join("zoom.svg");
    text(&synack(&[
        "stats",
        "--plot",
        zoom.to_str().unwrap(),
        "--from",
        "0",
        "--to",
        "0.01",
        p,
    ]));
    let words = svg_words(&zoom);
    assert!(words.contains("0.000 s to 0.010 s"), "{words}");
    for tick in ["0.002", "0.004", "0.010"] {
        assert!(words.contains(tick), "tick {tick}: {words}");
    }
    assert!(!words.contains("1.010"), "{words}");
}

/// The same from synack's own `--internals on`: what it writes, `stats --plot` reads.
#[test]
fn a_demo_with_internals_on_is_plotted_from_its_own_numbers() {
    let dir = scratch("demo-internals");
    let cap = dir.join("int.pcapng");
    text(&synack(&[
        "demo",
        "--journey",
        "off",
        "--internals",
        "on",
        "--http",
        "--bytes",
        "200k",
        "--loss",
        "5",
        "--seed",
        "3",
        "--capture",
        cap.to_str().unwrap(),
    ]));
    let plot = dir.join("plot.svg");
    text(&synack(&[
        "stats",
        "--plot",
        plot.to_str().unwrap(),
        cap.to_str().unwrap(),
    ]));
    svg_text(&plot);
    let words = svg_words(&plot);
    assert!(
        words.contains("the sender's own, from its comments"),
        "{words}"
    );
    assert!(
        words.contains("in flight (the sender's own count"),
        "{words}"
    );
    let json = text(&synack(&["stats", "--json", cap.to_str().unwrap()]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let c = v
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["bytes"][1].as_u64() > Some(200_000))
        .unwrap();
    assert!(c["lost"][1].as_u64().unwrap() > 0, "{json}");
    if let Some(retx) = tshark_fields(&cap, "tcp.analysis.retransmission", &["frame.number"]) {
        let ours =
            c["retransmissions"][0].as_u64().unwrap() + c["retransmissions"][1].as_u64().unwrap();
        assert_eq!(ours, retx.len() as u64, "synack and tshark");
    }
}

#[test]
fn plot_windows_that_make_no_sense_get_one_sentence() {
    let lossy = repo().join("captures/samples/lossy-transfer.pcapng");
    let dir = scratch("window");
    let out_file = dir.join("p.svg");
    for (from, to, says) in [
        ("2", "1", "--from must be before --to"),
        ("50", "60", "has no packets between 50.000 s and 60.000 s"),
    ] {
        let out = synack(&[
            "stats",
            "--plot",
            out_file.to_str().unwrap(),
            "--from",
            from,
            "--to",
            to,
            lossy.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(says) && !err.contains("panicked"), "{err}");
    }
    let out = synack(&["stats", "--from", "1", lossy.to_str().unwrap()]);
    assert!(!out.status.success(), "--from needs --plot");
    let out = synack(&["ladder", "--time-scale", "0", lossy.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than 0"));
}

/// The ladder of the samples: what each segment carries, lost segments stopping short,
/// time-proportional spacing, and each direction's RTT in stats.
#[test]
fn ladders_name_what_segments_carry_and_where_they_were_lost() {
    let sample = |name: &str| repo().join("captures/samples").join(name);
    let ladder = |args: &[&str], name: &str| {
        let path = sample(name);
        let mut all = vec!["ladder", "--color", "never"];
        all.extend_from_slice(args);
        all.push(path.to_str().unwrap());
        text(&synack(&all))
    };
    let http = ladder(&[], "http-journey.pcapng");
    for label in ["GET /", "POST /json", "GET /bytes/20000", "200 OK"] {
        assert!(http.contains(&format!("| {label}")), "{label}: {http}");
    }
    let https = ladder(&[], "https-journey.pcapng");
    for label in [
        "| ClientHello",
        "| ServerHello, ChangeCipherSpec, Application Data",
        "Application Data",
    ] {
        assert!(https.contains(label), "{label}: {https}");
    }
    assert!(!https.contains("GET /"), "encrypted: no HTTP to read");
    // The segments the capture says were lost stop short with an X.
    let lossy = ladder(&[], "lossy-transfer.pcapng");
    let lost: Vec<&str> = lossy.lines().filter(|l| l.contains("[lost]")).collect();
    assert_eq!(
        lost.len(),
        lossy.matches("# fault: lost").count(),
        "every packet commented lost"
    );
    assert!(
        lost.iter()
            .all(|l| l.contains('X') && !l.contains(">|") && !l.contains("|<"))
    );
    // Time-proportional: between two arrows, one row per MS of the time between them
    // (the arrow's own among them), or one marked row past 12.
    for (name, scale) in [
        ("time-wait-client.pcapng", 1.0),
        ("lossy-transfer.pcapng", 0.5),
    ] {
        let text = ladder(&["--time-scale", &scale.to_string()], name);
        let (blank, cut) = spacing(&text, scale);
        assert!(blank > 0, "{name}: no empty rows");
        // The lossy transfer has 1 s timeouts too.
        assert!(cut > 0 || !name.starts_with("lossy"), "{name}: no cut");
    }
    // SVG pictures of the same, well-formed.
    let dir = scratch("ladders");
    for (name, args) in [
        ("lossy-transfer.pcapng", vec![]),
        ("https-journey.pcapng", vec!["--time-scale", "1"]),
    ] {
        let svg = dir.join(format!("{name}.svg"));
        let mut all = vec!["--svg", svg.to_str().unwrap()];
        all.extend(args);
        ladder(&all, name);
        let words = svg_words(&svg);
        assert!(words.contains("ACK seq="), "{name}");
        if name.starts_with("lossy") {
            assert!(svg_text(&svg).contains("stroke-dasharray"), "lost arrows");
        } else {
            assert!(words.contains("ClientHello"), "{words}");
        }
    }
    // Captured at the client: its data's round trip is the whole path (1 ms each way);
    // the server's data is acknowledged by the client's own stack, next to the capture.
    let json = text(&synack(&[
        "stats",
        "--json",
        sample("time-wait-client.pcapng").to_str().unwrap(),
    ]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let rtt = &v[0]["rtt"];
    let client = rtt[0]["median_ms"].as_f64().unwrap();
    assert!((1.9..2.1).contains(&client), "{json}");
    assert!(rtt[1]["samples"].as_u64().unwrap() > 0, "{json}");
}

/// tcpdump with a snap length on a lossy transfer, live: what a user does first.
#[test]
fn tcpdump_with_a_snap_length_on_a_lossy_transfer() {
    let Some(ns) = Netns::new("snaplen") else {
        return;
    };
    if ns.run(&["tcpdump", "--version"]).status.code() != Some(0) {
        assert!(std::env::var("CI").is_err(), "CI must install tcpdump");
        eprintln!("skipping: tcpdump is not installed");
        return;
    }
    let mut server = Server::start(&ns, &["--no-capture", "--loss", "3", "--seed", "5"]);
    let pcap = ns.dir.join("s96.pcap");
    let err = ns.dir.join("tcpdump.err");
    let mut dump = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "tcpdump",
            "-i",
            "tun0",
            "-s",
            "96",
            "-U",
            "--immediate-mode",
            "-w",
        ])
        .arg(&pcap)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    assert!(wait_until(10.0, || std::fs::read_to_string(&err)
        .is_ok_and(|e| e.contains("listening on"))));
    let out = ns.curl(&["-o", "/dev/null", "http://10.77.0.2/bytes/200000"]);
    assert!(out.status.success());
    // The last packets are on the disk once the capture reads back with the FIN of both.
    assert!(wait_until(10.0, || {
        synack::analyze::read(&pcap)
            .map(|f| synack::analyze::conversations(&f))
            .is_ok_and(|c| match c.first() {
                Some(synack::analyze::Conversation::Tcp(c)) => {
                    c.segments.iter().filter(|s| s.fin).count() >= 2
                }
                _ => false,
            })
    }));
    unsafe { libc::kill(dump.id() as i32, libc::SIGINT) };
    let _ = dump.wait();
    assert!(server.stop().success());
    let mut files = vec![pcap.clone()];
    let pcapng = ns.dir.join("s96.pcapng");
    let converted = Command::new("editcap")
        .args(["-F", "pcapng"])
        .arg(&pcap)
        .arg(&pcapng)
        .status()
        .is_ok_and(|s| s.success());
    if converted {
        files.push(pcapng);
    } else {
        eprintln!("editcap is not installed: pcap only");
    }
    for f in &files {
        let json = text(&synack(&["stats", "--json", f.to_str().unwrap()]));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(v[0]["bytes"][1].as_u64().unwrap() >= 200_000, "{json}");
        assert!(v[0]["cut"][1].as_u64().unwrap() > 100, "{json}");
        let ours = v[0]["retransmissions"][1].as_u64().unwrap();
        if let Some(theirs) = tshark_fields(f, "tcp.analysis.retransmission", &["frame.number"]) {
            assert_eq!(
                ours,
                theirs.len() as u64,
                "{}: synack and tshark",
                f.display()
            );
        }
    }
}

/// Checks the rows between the arrows of a `--time-scale MS` ladder against the times of
/// the arrows; returns how many empty rows and cut pauses it saw.
fn spacing(ladder: &str, scale_ms: f64) -> (usize, usize) {
    let (mut blank, mut cut) = (0, 0);
    let mut before: Option<f64> = None;
    let (mut empty, mut marks) = (0, 0);
    for line in ladder.lines() {
        let mut words = line.split_whitespace();
        let time = match (words.next(), words.next()) {
            (Some(f), Some(t)) if f.parse::<usize>().is_ok() => t.parse::<f64>().ok(),
            _ => None,
        };
        if line.starts_with('#') {
            before = None;
        } else if let Some(t) = time {
            if let Some(b) = before {
                let rows = (t - b) * 1000.0 / scale_ms;
                if rows > 12.0 {
                    assert_eq!((marks, empty), (1, 2), "a cut pause before {line}");
                } else {
                    let want = (rows.round() as usize).saturating_sub(1);
                    assert_eq!((marks, empty), (0, want), "{want} empty rows before {line}");
                }
            }
            blank += empty;
            cut += marks;
            (before, empty, marks) = (Some(t), 0, 0);
        } else if line.trim_start().starts_with(":~") && line.contains(" later ") {
            marks += 1;
        } else if line.trim_start().starts_with('|')
            && line.trim().trim_matches('|').trim().is_empty()
        {
            empty += 1;
        }
    }
    (blank, cut)
}
