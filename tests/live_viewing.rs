//! A user watches the capture live: `synack ... --capture - | tshark -i -` (or wireshark
//! -k -i -), or through a FIFO. The stream carries the packets as they happen, with their
//! comments and the TLS secrets before the records they open, and nothing else.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

fn out_dir(tag: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-runs")
        .join(format!("live-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn have_tshark() -> bool {
    let there = Command::new("tshark").arg("-v").output().is_ok();
    if !there {
        eprintln!("tshark is not installed: the stream is checked with pcap-file only");
    }
    there
}

/// `synack demo` to stdout is the capture byte for byte, and stdout holds nothing else.
#[test]
fn demo_streams_its_capture_to_stdout() {
    let dir = out_dir("stdout");
    let file = dir.join("file.pcapng");
    let bin = env!("CARGO_BIN_EXE_synack");
    let to_file = Command::new(bin)
        .args(["demo", "--seed", "5", "--capture"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(to_file.status.success());
    let to_stdout = Command::new(bin)
        .args(["demo", "--seed", "5", "--capture", "-"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&to_stdout.stderr);
    assert!(to_stdout.status.success(), "{err}");
    assert!(
        to_stdout.stdout == std::fs::read(&file).unwrap(),
        "stdout is the same capture as the file, and nothing else"
    );
    assert!(err.contains("capture to stdout complete"), "{err}");
    assert!(
        err.contains("connection #1") || err.contains("resolve"),
        "the journey is on stderr"
    );
}

/// The stream goes through a pipe into tshark, which decrypts the TLS (the secrets come
/// before the records) and shows the comments.
#[test]
fn tshark_reads_the_demo_from_a_pipe() {
    if !have_tshark() {
        return;
    }
    let mut demo = Command::new(env!("CARGO_BIN_EXE_synack"))
        .args(["demo", "--capture", "-", "--journey", "off"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let tshark = Command::new("tshark")
        .args(["-n", "-r", "-", "-T", "fields", "-E", "separator=|"])
        .args(["-e", "http.request.uri", "-e", "frame.comment"])
        .stdin(Stdio::from(demo.stdout.take().unwrap()))
        .output()
        .unwrap();
    let status = demo.wait().unwrap();
    let mut err = String::new();
    demo.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{err}");
    assert!(
        tshark.status.success(),
        "{}",
        String::from_utf8_lossy(&tshark.stderr)
    );
    let text = String::from_utf8_lossy(&tshark.stdout);
    let uris: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split('|').next())
        .filter(|u| !u.is_empty())
        .collect();
    assert_eq!(
        uris,
        ["/", "/json", "/bytes/256000"],
        "decrypted from the pipe"
    );
    assert!(text.contains("SYN, handshake 1/3"), "{text}");
    assert!(text.contains("DNS query"), "{text}");
}

/// A FIFO: synack waits for the reader, says so, and streams into it.
#[test]
fn demo_streams_into_a_fifo() {
    let dir = out_dir("fifo");
    let fifo = dir.join("live");
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let demo = Command::new(env!("CARGO_BIN_EXE_synack"))
        .args(["demo", "--journey", "off", "--capture"])
        .arg(&fifo)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut bytes = Vec::new();
    std::fs::File::open(&fifo)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    let out = demo.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "waiting for a reader to open the FIFO {}",
            fifo.display()
        )),
        "{err}"
    );
    let copy = dir.join("copy.pcapng");
    std::fs::write(&copy, &bytes).unwrap();
    let pkts = read_capture(&copy);
    assert!(
        err.contains(&format!("complete, {} packets", pkts.len())),
        "{err}"
    );
    if have_tshark() {
        let uris = tshark_fields(&copy, "http.request", &["http.request.uri"]).unwrap();
        assert_eq!(uris.len(), 3, "{uris:?}");
    }
}

/// Occurrences of `needle` in `hay`.
fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// `synack serve --capture - | tshark -i -`: a request's packets, comments included,
/// come out of synack within ~100 ms and show in tshark while the server runs on. The
/// test stands in the pipe between the two, to time both.
#[test]
fn serve_streams_packets_to_tshark_as_they_happen() {
    let Some(ns) = Netns::new("live") else {
        return;
    };
    if !have_tshark() {
        return;
    }
    let mut serve = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            env!("CARGO_BIN_EXE_synack"),
            "serve",
        ])
        .args(["--tun", "tun0", "--addr", "10.77.0.2/24", "--no-https"])
        .args(["--capture", "-", "--journey", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut tshark = Command::new("tshark")
        .args(["-n", "-l", "-i", "-", "-T", "fields", "-E", "separator=|"])
        .args(["-e", "frame.number", "-e", "frame.comment"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // synack's stdout, as it arrives, passed on to tshark.
    let raw = Arc::new(Mutex::new(Vec::<u8>::new()));
    let (mut from, mut to) = (serve.stdout.take().unwrap(), tshark.stdin.take().unwrap());
    let into = Arc::clone(&raw);
    let relay = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = from.read(&mut buf).unwrap();
            if n == 0 {
                return;
            }
            into.lock().unwrap().extend_from_slice(&buf[..n]);
            std::io::Write::write_all(&mut to, &buf[..n]).unwrap();
        }
    });
    let collect = |pipe: Box<dyn Read + Send>| {
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        lines
    };
    let seen = collect(Box::new(tshark.stdout.take().unwrap()));
    let err = collect(Box::new(serve.stderr.take().unwrap()));
    let has = |lines: &Arc<Mutex<Vec<String>>>, what: &str| {
        lines.lock().unwrap().iter().any(|l| l.contains(what))
    };
    assert!(
        wait_until(20.0, || has(&err, "synack: serving")),
        "serve started: {:?}",
        err.lock().unwrap()
    );
    assert!(
        has(&err, "capturing to stdout"),
        "{:?}",
        err.lock().unwrap()
    );
    const LAST: &str = "LAST-ACK -> CLOSED";
    let closed_in_tshark = |n: usize| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(LAST))
            .count()
            == n
    };
    let closed_in_stream = |n: usize| count(&raw.lock().unwrap(), LAST.as_bytes()) == n;
    // tshark takes a second or so to start reading; the first connection waits for it.
    assert!(
        ns.curl(&["-o", "/dev/null", "http://10.77.0.2/"])
            .status
            .success()
    );
    assert!(
        wait_until(10.0, || closed_in_tshark(1)),
        "tshark saw the first connection: {:?}",
        seen.lock().unwrap()
    );
    assert!(
        ns.curl(&["-o", "/dev/null", "http://10.77.0.2/echo"])
            .status
            .success()
    );
    let done = Instant::now();
    // The exchange's last packet (the ACK of our FIN) comes out while the server runs
    // on: the stack flushes the stream once it has been idle for 100 ms.
    assert!(
        wait_until(5.0, || closed_in_stream(2)),
        "the stream has the second connection"
    );
    let out_of_synack = done.elapsed();
    assert!(
        wait_until(5.0, || closed_in_tshark(2)),
        "tshark shows the second connection live: {:?}",
        seen.lock().unwrap()
    );
    let in_tshark = done.elapsed();
    eprintln!(
        "the last packet came out of synack {out_of_synack:?} after curl finished, and showed in tshark after {in_tshark:?}"
    );
    assert!(
        out_of_synack < Duration::from_millis(500),
        "{out_of_synack:?}"
    );
    assert!(has(&seen, "SYN, handshake 1/3"));
    // SAFETY: a signal to our own child (ip netns exec execs synack).
    unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
    let status = serve.wait().unwrap();
    assert!(status.success(), "{:?}", err.lock().unwrap());
    relay.join().unwrap();
    let ended = tshark.wait().unwrap();
    assert!(ended.success(), "tshark read a clean stream to its end");
    // The stream, whole, is a capture pcap-file reads, and only that.
    let dir = out_dir("serve");
    let copy = dir.join("stream.pcapng");
    std::fs::write(&copy, &*raw.lock().unwrap()).unwrap();
    let packets = read_capture(&copy).len();
    assert!(
        wait_until(2.0, || has(
            &err,
            &format!("capture to stdout complete, {packets} packets")
        )),
        "{packets} packets: {:?}",
        err.lock().unwrap()
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        packets,
        "tshark saw every packet"
    );
}
