//! What `serve`, `fetch` and `demo` set up alike: the TUN device, the capture, the
//! journal, the key log, the stop flag. Each failure is one sentence saying what to do.

use std::fs::File;
use std::io::{LineWriter, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::FileTypeExt;

use anyhow::{Context, bail};

use super::args::{Cidr, LinkArgs, RecordArgs};
use synack::capture::{Capture, CaptureConfig, PcapngSink, SinkInfo, SummaryHandle, Target};
use synack::device::TunDevice;
use synack::device::tun::Origin;
use synack::driver::Stop;
use synack::journey::Journal;
use synack::journey::file::BoundedFile;

/// A seed that differs on every run (RFC 9293 §3.4.1 wants ISNs hard to guess; smoltcp
/// derives them from this seed).
pub fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    if File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok()
    {
        return u64::from_ne_bytes(bytes);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() as u64 ^ u64::from(std::process::id()) << 32
}

pub fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Opens (or creates) the TUN device; returns it and the gateway (the kernel side).
pub fn open_tun(link: &LinkArgs) -> anyhow::Result<(TunDevice, Ipv4Addr)> {
    let gateway = link.gateway.unwrap_or_else(|| link.addr.first_host());
    if gateway == link.addr.addr {
        bail!(
            "--gateway {gateway} is the stack's own address; give the kernel side's address (usually the .1)"
        );
    }
    let mut tun = TunDevice::open(&link.tun)?;
    if let Some(mtu) = link.mtu
        && mtu as usize != tun.mtu()
    {
        tun.set_mtu(mtu as usize)?;
    }
    if tun.origin() == Origin::Created {
        tun.configure_kernel_side(gateway, link.addr.prefix)?;
        log::info!(
            "created {} with the kernel side at {gateway}/{}; it goes away when synack stops",
            tun.name(),
            link.addr.prefix
        );
    } else if let Some((kernel, prefix)) = tun.kernel_side() {
        // An existing device: the kernel routes to us only inside its own subnet.
        let net = |a: Ipv4Addr, p: u8| u32::from(a) & (u32::MAX << (32 - u32::from(p.max(1))));
        if net(link.addr.addr, prefix) != net(kernel, prefix) {
            bail!(
                "{}'s kernel side is {kernel}/{prefix}, and --addr {} is outside that subnet: the kernel would never send it a packet; give an --addr inside {}/{prefix} (or remake the device with netns-scripts/up.sh -a)",
                tun.name(),
                link.addr.addr,
                Ipv4Addr::from(net(kernel, prefix))
            );
        }
        if kernel == link.addr.addr {
            bail!(
                "--addr {} is {}'s kernel side: give the stack another address in the subnet (usually the .2)",
                link.addr.addr,
                tun.name()
            );
        }
    }
    Ok((tun, gateway))
}

/// The capture of `command` on `tun`, unless `--no-capture`: `--capture PATH` (or `-`)
/// or a new timestamped file under `captures/`. `role` says what the stack is ("server",
/// "client") in the interface's description.
pub fn open_capture(
    record: &RecordArgs,
    command: &str,
    role: &str,
    tun: &TunDevice,
    addr: Cidr,
) -> anyhow::Result<Option<PcapngSink>> {
    if record.no_capture {
        return Ok(None);
    }
    let info = SinkInfo {
        interface: tun.name(),
        description: format!(
            "synack userspace {role} at {}/{} on {}",
            addr.addr,
            addr.prefix,
            tun.name()
        ),
    };
    create_capture(record, command, info)
}

/// The capture, unless `--no-capture`, for any link.
pub fn create_capture(
    record: &RecordArgs,
    command: &str,
    info: SinkInfo<'_>,
) -> anyhow::Result<Option<PcapngSink>> {
    match record.capture_config(command) {
        Some(config) => create_capture_at(&config, info).map(Some),
        None => Ok(None),
    }
}

/// The capture `config` asks for, or one sentence on why it cannot be made (a full disk
/// is found here: the first blocks are written before this returns).
pub fn create_capture_at(config: &CaptureConfig, info: SinkInfo<'_>) -> anyhow::Result<PcapngSink> {
    say_if_fifo(config);
    Ok(PcapngSink::create(config, info)?)
}

/// Opening a FIFO waits for its reader: say so, or synack seems to hang.
pub fn say_if_fifo(config: &CaptureConfig) {
    if let Target::Path(path) = &config.target
        && std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo())
    {
        eprintln!(
            "synack: waiting for a reader to open the FIFO {} (e.g. wireshark -k -i {})",
            path.display(),
            path.display()
        );
    }
}

/// The journal: to `--journey-file` (bounded by `--journey-limit`) or stderr, in
/// `--journey` format.
pub fn open_journal(record: &RecordArgs, side: &'static str) -> anyhow::Result<Journal> {
    Ok(Journal::new(record.journey.into(), journey_out(record)?).with_side(side))
}

/// Where the journey goes: `--journey-file`, bounded by `--journey-limit`, or stderr.
pub fn journey_out(record: &RecordArgs) -> anyhow::Result<Box<dyn Write + Send>> {
    Ok(match &record.journey_file {
        Some(path) => Box::new(
            BoundedFile::create(path, record.journey_limit)
                .with_context(|| format!("cannot create journey file {}", path.display()))?,
        ),
        None => Box::new(LineWriter::new(std::io::stderr())),
    })
}

/// The capture around its sink, with `--keylog FILE` (appended) if given.
pub fn capture(record: &RecordArgs, sink: Option<PcapngSink>) -> anyhow::Result<Option<Capture>> {
    let Some(sink) = sink else {
        // Without a capture, --keylog still gets the secrets: a capture that keeps
        // nothing but them.
        return Ok(None);
    };
    let mut capture = Capture::new(sink);
    if let Some(path) = &record.keylog {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path);
        capture.set_keylog_file(
            file.with_context(|| format!("cannot open --keylog file {}", path.display()))?,
        );
    }
    Ok(Some(capture))
}

/// SIGINT and SIGTERM stop the driver's loop and leave a complete capture.
pub fn stop() -> anyhow::Result<Stop> {
    Stop::install().context("cannot install signal handlers")
}

/// The exit code of a run whose capture could not be completed (a full disk, a reader
/// that went away), when nothing else failed.
pub const EXIT_CAPTURE_INCOMPLETE: u8 = 9;

/// The last word on a capture once the node is shut down, from its summary (`summary`,
/// taken from the sink before it went into the capture) or what shutting down returned.
/// Returns whether the capture is complete (a limit it stopped at counts as complete).
pub fn report_capture(
    finished: Option<std::io::Result<(std::path::PathBuf, u64)>>,
    summary: Option<&SummaryHandle>,
) -> bool {
    if let Some(summary) = summary.and_then(SummaryHandle::get) {
        eprintln!("synack: {summary}");
        return summary.complete();
    }
    match finished {
        Some(Ok((path, packets))) => {
            eprintln!(
                "synack: capture {} complete, {packets} packets",
                path.display()
            );
            true
        }
        None => true,
        Some(Err(e)) => {
            eprintln!("synack: the capture could not be completed: {e}");
            false
        }
    }
}

/// The width of the terminal on stderr (where the journey goes), or `$COLUMNS`, or 120.
pub fn terminal_width() -> usize {
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills a winsize; on a non-terminal it fails and we fall back.
    let rc = unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut size) };
    if rc == 0 && size.ws_col > 0 {
        return usize::from(size.ws_col);
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(120)
}
