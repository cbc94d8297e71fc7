//! A user bounds what synack writes: `--capture-limit` stops one file, `--capture-files`
//! keeps a ring of them, `--journey-limit` stops the journey file. No root: `synack demo`
//! makes the traffic.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn out_dir(tag: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-runs")
        .join(format!("bounded-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn demo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_synack"))
        .arg("demo")
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// capinfos' packet count of a file, or `None` without capinfos. A file it cannot read
/// fails the test.
fn capinfos_packets(path: &Path) -> Option<u64> {
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

#[test]
fn one_capture_file_stops_at_its_limit_and_counts_the_rest() {
    let dir = out_dir("limit");
    let file = dir.join("c.pcapng");
    let out = demo(&[
        "--capture",
        file.to_str().unwrap(),
        "--capture-limit",
        "64k",
        "--bytes",
        "1m",
        "--journey",
        "off",
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "a limit is not a failure:\n{err}");
    assert!(
        err.contains(
            "the file reached its limit of 64 KiB (--capture-limit); capturing stops here"
        ),
        "said when it happens:\n{err}"
    );
    assert!(
        err.contains("the download is byte-exact"),
        "the demo went on:\n{err}"
    );
    let len = std::fs::metadata(&file).unwrap().len();
    assert!(len <= 64 << 10, "{len} bytes");
    let pkts = read_capture(&file);
    let summary = format!(
        "capture {} stopped at its limit of 64 KiB (--capture-limit): it holds the first {} packets, and ",
        file.display(),
        pkts.len()
    );
    let at = err
        .find(&summary)
        .unwrap_or_else(|| panic!("{summary:?} in:\n{err}"));
    let not_captured: u64 = err[at + summary.len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(not_captured > 100, "a 1 MB download is more than 64 KiB");
    if let Some(n) = capinfos_packets(&file) {
        assert_eq!(n, pkts.len() as u64);
    }
}

#[test]
fn a_ring_of_capture_files_keeps_the_last_ones_each_whole() {
    let dir = out_dir("ring");
    let base = dir.join("r.pcapng");
    let out = demo(&[
        "--capture",
        base.to_str().unwrap(),
        "--capture-limit",
        "64k",
        "--capture-files",
        "3",
        "--bytes",
        "1m",
        "--journey",
        "off",
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "{files:?}");
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let first: u32 = names[0]["r_".len().."r_".len() + 5].parse().unwrap();
    assert!(first > 1, "older files were removed");
    for (i, name) in names.iter().enumerate() {
        assert_eq!(name, &format!("r_{:05}.pcapng", first + i as u32));
    }
    // Each file opens alone, and the last one ends with the connection's teardown.
    let mut total = 0;
    for f in &files {
        assert!(std::fs::metadata(f).unwrap().len() <= 64 << 10);
        let pkts = read_capture(f);
        assert!(!pkts.is_empty());
        if let Some(n) = capinfos_packets(f) {
            assert_eq!(n, pkts.len() as u64);
        }
        if let Some(problems) = tshark_problems(f) {
            assert!(problems.is_empty(), "{}: {problems:?}", f.display());
        }
        total += pkts.len();
    }
    let last = read_capture(&files[2]);
    assert!(
        last.iter().any(|p| p
            .comment
            .as_deref()
            .is_some_and(|c| c.contains("LAST-ACK -> CLOSED"))),
        "the ring ends with the end of the run"
    );
    assert!(
        err.contains(&format!(
            "capture {} to {} (3 files) complete, {total} packets (the ring removed {} older files",
            files[0].display(),
            files[2].display(),
            first - 1
        )),
        "{err}"
    );
}

#[test]
fn the_journey_file_stops_at_its_limit_with_whole_lines() {
    let dir = out_dir("journey");
    let journey = dir.join("j.jsonl");
    let out = demo(&[
        "--no-capture",
        "--journey",
        "json",
        "--journey-file",
        journey.to_str().unwrap(),
        "--journey-limit",
        "4k",
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let text = std::fs::read_to_string(&journey).unwrap();
    assert!(
        text.len() <= 4096 && text.len() > 2048,
        "{} bytes",
        text.len()
    );
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("a whole JSON line, not {line:?}: {e}"));
    }
    assert!(
        err.contains(
            "it reached its limit of 4 KiB (--journey-limit); later events are not written to it"
        ),
        "{err}"
    );
    assert!(
        err.contains("bytes of later events were not written"),
        "{err}"
    );

    // Under the limit, the whole journey.
    let whole = dir.join("whole.jsonl");
    let out = demo(&[
        "--no-capture",
        "--journey",
        "json",
        "--journey-file",
        whole.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let text = std::fs::read_to_string(&whole).unwrap();
    assert!(text.len() > 4096);
    assert!(!stderr(&out).contains("--journey-limit"));
}
