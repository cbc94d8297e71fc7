//! What the capture costs the stack's thread per packet: `cargo bench --bench capture`.
//!
//! Encodes a download's worth of packets (full-size data segments one way, one ACK the
//! other way for every two, as `/bytes` makes them) two ways:
//!
//! - into /dev/null: the encoding alone, with the chunks hot in the cache;
//! - into a file under the target directory: what the writer thread and the disk
//!   sustain (the stack waits for them if they fall behind).
//!
//! Times are the stack thread's CPU time per packet (CLOCK_THREAD_CPUTIME_ID): waiting
//! for the writer costs none. `PACKETS=N` changes the number of data segments (700000,
//! about 1 GB). What the capture costs a real transfer, where the chunks are cold and
//! the kernel shares the cache, is measured by `netns-scripts/bench.sh`.

use std::path::Path;
use std::time::{Duration, Instant};

use synack::capture::{CaptureConfig, PcapngSink, SinkInfo};
use synack::observe::Direction;

/// Full-size IPv4 TCP segment at MTU 1500, and a bare ACK with timestamps.
const DATA: usize = 1500;
const ACK: usize = 52;

fn main() {
    let packets: u64 = std::env::var("PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(700_000);
    let n = packets + packets / 2;
    let null = Path::new("/dev/null");

    let hot = (0..3)
        .map(|_| run(null, packets).cpu)
        .min()
        .unwrap_or_default();
    println!("encoding alone: {:>4.0} ns/packet", per(hot, n));

    let dir = std::env::var_os("CARGO_TARGET_TMPDIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let file = dir.join("bench-capture.pcapng");
    let disk = run(&file, packets);
    let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&file);
    println!(
        "into a file:    {:>4.0} ns/packet; the writer put {:.0} MB on disk at {:.2} GB/s",
        per(disk.cpu, n),
        bytes as f64 / 1e6,
        bytes as f64 / disk.wall.as_secs_f64() / 1e9
    );
}

struct Run {
    /// The stack thread's CPU time for the packets.
    cpu: Duration,
    /// Wall time until the file was complete.
    wall: Duration,
}

/// One download's worth of packets into `path`.
fn run(path: &Path, packets: u64) -> Run {
    let data = [0x45u8; DATA];
    let ack = [0x45u8; ACK];
    let info = SinkInfo {
        interface: "bench",
        description: "cargo bench".into(),
    };
    let mut sink =
        PcapngSink::create(&CaptureConfig::file(path), info).expect("create the capture");
    let start = Instant::now();
    let cpu_start = thread_cpu();
    let mut t = Duration::from_secs(1_795_000_000);
    for i in 0..packets {
        t += Duration::from_micros(2);
        sink.write_packet(t, Direction::Out, std::hint::black_box(&data), None)
            .expect("write a data segment");
        if i % 2 == 1 {
            sink.write_packet(t, Direction::In, &ack, None)
                .expect("write an ACK");
        }
    }
    let cpu = thread_cpu() - cpu_start;
    sink.finish().expect("finish the capture");
    Run {
        cpu,
        wall: start.elapsed(),
    }
}

fn per(d: Duration, n: u64) -> f64 {
    d.as_nanos() as f64 / n as f64
}

/// CPU time this thread has used: waiting for the writer thread costs none.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
