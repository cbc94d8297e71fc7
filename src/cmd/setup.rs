//! What `serve`, `fetch` and `demo` set up alike: the TUN device, the capture, the
//! journal, the key log, the stop flag. Each failure is one sentence saying what to do.

use std::fs::File;
use std::io::{BufWriter, LineWriter, Write};
use std::net::Ipv4Addr;

use anyhow::{Context, bail};

use super::args::{Cidr, LinkArgs, RecordArgs};
use synack::capture::{self, Capture, PcapngSink, SinkInfo};
use synack::device::TunDevice;
use synack::device::tun::Origin;
use synack::driver::Stop;
use synack::journey::Journal;

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

/// The capture file of `command` on `tun`, unless `--no-capture`: `--capture PATH` or a
/// new timestamped file under `captures/`. `role` says what the stack is ("server",
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

/// The capture file, unless `--no-capture`, for any link.
pub fn create_capture(
    record: &RecordArgs,
    command: &str,
    info: SinkInfo<'_>,
) -> anyhow::Result<Option<PcapngSink>> {
    if record.no_capture {
        return Ok(None);
    }
    let path = record
        .capture
        .clone()
        .unwrap_or_else(|| capture::default_path(command));
    create_capture_at(&path, info).map(Some)
}

/// The capture file at `path`, or one sentence on why it cannot be made.
pub fn create_capture_at(path: &std::path::Path, info: SinkInfo<'_>) -> anyhow::Result<PcapngSink> {
    PcapngSink::create(path, info).with_context(|| {
        format!(
            "cannot create capture file {} (is the directory writable?)",
            path.display()
        )
    })
}

/// The journal: to `--journey-file` or stderr, in `--journey` format.
pub fn open_journal(record: &RecordArgs, side: &'static str) -> anyhow::Result<Journal> {
    let out: Box<dyn Write + Send> = match &record.journey_file {
        Some(path) => {
            Box::new(BufWriter::new(File::create(path).with_context(|| {
                format!("cannot create journey file {}", path.display())
            })?))
        }
        None => Box::new(LineWriter::new(std::io::stderr())),
    };
    Ok(Journal::new(record.journey.into(), out).with_side(side))
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

/// The last word on a capture once the stack is shut down.
pub fn report_capture(finished: Option<std::io::Result<(std::path::PathBuf, u64)>>) {
    match finished {
        Some(Ok((path, packets))) => eprintln!(
            "synack: capture {} complete, {packets} packets",
            path.display()
        ),
        None => {}
        Some(Err(e)) => eprintln!("synack: the capture could not be completed: {e}"),
    }
}
