//! A user captures onto a disk that is full, or fills up: synack says so in one sentence,
//! keeps serving, leaves a file that reads cleanly up to its last whole packet, and exits
//! non-zero. The disk is a small tmpfs (root: mount), where O_DIRECT is refused too.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// A tmpfs of `size` mounted on `dir`, unmounted when dropped (even when a test fails).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// `None` (with the reason printed) without root, unless CI=true, which must run it.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true and this test needs root (mount -t tmpfs)");
            }
            let _ = writeln!(std::io::stderr(), "skipping: needs root (mount -t tmpfs)");
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Tmpfs {
            dir: dir.to_owned(),
        })
    }

    /// Fills the disk up to its last byte.
    fn fill(&self) {
        let mut f = std::fs::File::create(self.dir.join("filler")).unwrap();
        let block = [0u8; 4096];
        loop {
            if let Err(e) = f.write_all(&block) {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                return;
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).output();
    }
}

fn test_dir(tag: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-runs")
        .join(format!("full-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn demo(capture: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_synack"))
        .args(["demo", "--journey", "off", "--capture"])
        .arg(capture)
        .args(args)
        .output()
        .unwrap()
}

/// capinfos' packet count (a file it cannot read fails the test), or `None` without it.
fn capinfos_packets(path: &Path) -> Option<usize> {
    let out = Command::new("capinfos")
        .args(["-c", "-M"])
        .arg(path)
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "capinfos could not read {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("Number of packets"))?;
    line.rsplit(' ').next()?.trim().parse().ok()
}

/// The file reads cleanly with pcap-file, capinfos and tshark, and holds `packets`.
fn reads_cleanly(file: &Path, packets: usize) {
    let pkts = read_capture(file);
    assert_eq!(pkts.len(), packets, "the packets the summary counts");
    if let Some(n) = capinfos_packets(file) {
        assert_eq!(n, packets);
    }
    if let Some(problems) = tshark_problems(file) {
        assert!(problems.is_empty(), "{problems:?}");
    }
}

/// The number after `prefix` in `text`.
fn number_after(text: &str, prefix: &str) -> usize {
    let at = text
        .find(prefix)
        .unwrap_or_else(|| panic!("{prefix:?} in:\n{text}"));
    text[at + prefix.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_disk_full_at_the_start_is_one_sentence_and_no_file() {
    let dir = test_dir("start");
    let Some(disk) = Tmpfs::mount(&dir, "256k") else {
        return;
    };
    disk.fill();
    let file = dir.join("c.pcapng");
    let out = demo(&file, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim(),
        format!(
            "synack: cannot write to capture file {}: the disk is full; free some room, or capture elsewhere (--capture PATH) or not at all (--no-capture)",
            file.display()
        )
    );
    assert!(!file.exists(), "no empty file left behind");
}

#[test]
fn a_disk_that_fills_up_leaves_a_whole_capture_and_exits_non_zero() {
    let dir = test_dir("during");
    let Some(_disk) = Tmpfs::mount(&dir, "256k") else {
        return;
    };
    let file = dir.join("c.pcapng");
    // About 2.2 MB of capture onto 256 KiB.
    let out = demo(&file, &["--bytes", "2m"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(9), "{err}");
    assert!(
        err.contains("the download is byte-exact"),
        "the demo went on: {err}"
    );
    let said = format!(
        "capture {}: the disk is full; the file is cut back to its last whole packet (",
        file.display()
    );
    assert_eq!(
        err.matches(&said).count(),
        1,
        "said once, when it happened:\n{err}"
    );
    let kept = number_after(&err, &said);
    let summary = format!(
        "capture {} is incomplete: the disk is full; it holds {kept} packets up to its last whole one, and ",
        file.display()
    );
    let lost = number_after(&err, &summary);
    assert!(kept > 50 && lost > 500, "{kept} kept, {lost} not captured");
    reads_cleanly(&file, kept);
}

#[test]
fn serve_keeps_serving_when_the_disk_fills_up() {
    let Some(ns) = Netns::new("diskfull") else {
        return;
    };
    // The server's capture goes into the test's directory: make that a small disk.
    let Some(_disk) = Tmpfs::mount(&ns.dir, "256k") else {
        return;
    };
    let mut server = Server::start(&ns, &["--journey", "off", "--no-https"]);
    let big = ns.curl(&["-o", "/dev/null", "http://10.77.0.2/bytes/2000000"]);
    assert!(big.status.success());
    let said = format!(
        "capture {}: the disk is full; the file is cut back to its last whole packet (",
        server.capture.display()
    );
    assert!(
        wait_until(10.0, || server.stderr().contains(&said)),
        "said when it happens, while serving:\n{}",
        server.stderr()
    );
    let after = ns.curl(&["http://10.77.0.2/echo"]);
    assert!(after.status.success(), "synack serves on");
    let status = server.stop();
    let err = server.stderr();
    assert_eq!(status.code(), Some(9), "{err}");
    assert_eq!(err.matches(&said).count(), 1, "{err}");
    let kept = number_after(&err, &said);
    assert!(
        err.contains(&format!(
            "capture {} is incomplete: the disk is full; it holds {kept} packets",
            server.capture.display()
        )),
        "{err}"
    );
    reads_cleanly(&server.capture, kept);
}
