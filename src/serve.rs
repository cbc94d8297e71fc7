//! `synack serve`: open the device, start the capture and the journal, run the stack until
//! SIGINT or SIGTERM, then leave a complete capture behind.

use std::fs::File;
use std::io::{BufWriter, LineWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::app::App;
use crate::capture::{self, PcapngSink, SinkInfo, Tap};
use crate::cli::ServeArgs;
use crate::device::TunDevice;
use crate::device::tun::Origin;
use crate::http::Limits;
use crate::journey::Journal;
use crate::session::Timeouts;
use crate::stack::{Config, Stack};
use crate::tls;

/// A seed for initial sequence numbers that differs on every run (RFC 9293 §3.4.1 wants
/// ISNs hard to guess; smoltcp derives them from this seed).
fn random_seed() -> u64 {
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

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let gateway = args.gateway.unwrap_or_else(|| args.addr.first_host());
    if gateway == args.addr.addr {
        bail!(
            "--gateway {gateway} is the stack's own address; give the kernel side's address (usually the .1)"
        );
    }
    let app = App::new(args.root.clone()).with_context(|| {
        format!(
            "--root {}: no such directory (give an existing directory to serve files from)",
            args.root
                .as_ref()
                .map(|r| r.display().to_string())
                .unwrap_or_default()
        )
    })?;

    let mut tun = TunDevice::open(&args.tun)?;
    if let Some(mtu) = args.mtu
        && mtu as usize != tun.mtu()
    {
        tun.set_mtu(mtu as usize)?;
    }
    if tun.origin() == Origin::Created {
        tun.configure_kernel_side(gateway, args.addr.prefix)?;
        log::info!(
            "created {} with the kernel side at {gateway}/{}; it goes away when synack stops",
            tun.name(),
            args.addr.prefix
        );
    }

    let sink = if args.no_capture {
        None
    } else {
        let path = args
            .capture
            .clone()
            .unwrap_or_else(|| capture::default_path("serve"));
        let info = SinkInfo {
            interface: tun.name(),
            description: format!(
                "synack userspace stack at {}/{} on {}",
                args.addr.addr,
                args.addr.prefix,
                tun.name()
            ),
        };
        Some(PcapngSink::create(&path, info).with_context(|| {
            format!(
                "cannot create capture file {} (is the directory writable?)",
                path.display()
            )
        })?)
    };
    // The generated certificate goes beside the capture by default.
    let capture_dir = sink.as_ref().map(|s| match s.path().parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    });

    let out: Box<dyn Write + Send> = match &args.journey_file {
        Some(path) => {
            Box::new(BufWriter::new(File::create(path).with_context(|| {
                format!("cannot create journey file {}", path.display())
            })?))
        }
        None => Box::new(LineWriter::new(std::io::stderr())),
    };
    let journal = Journal::new(args.journey, out);

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
    }

    // HTTPS: the identity (given, or made and written out), and a key log when something
    // records the secrets (the capture's Decryption Secrets Block, --keylog).
    let (tls, keylog) = if args.no_https {
        (None, None)
    } else {
        let identity = match (&args.cert, &args.key) {
            (Some(cert), Some(key)) => tls::load(cert, key)?,
            _ => {
                let identity = tls::generate(&args.names, args.addr.addr)?;
                let out = args.cert_out.clone().unwrap_or_else(|| {
                    let dir = capture_dir
                        .clone()
                        .unwrap_or_else(|| PathBuf::from("captures"));
                    dir.join("synack-cert.pem")
                });
                if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                }
                std::fs::write(&out, &identity.cert_pem).with_context(|| {
                    format!(
                        "cannot write the certificate to {} (--cert-out)",
                        out.display()
                    )
                })?;
                eprintln!(
                    "synack: self-signed certificate for {} and {} written to {} (curl --cacert {} https://{}/)",
                    args.names.join(", "),
                    args.addr.addr,
                    out.display(),
                    out.display(),
                    args.names
                        .first()
                        .map_or_else(|| args.addr.addr.to_string(), Clone::clone)
                );
                identity
            }
        };
        let keylog = (!args.no_capture || args.keylog.is_some())
            .then(|| Arc::new(tls::KeyLogLines::default()));
        let config = tls::server_config(&identity, keylog.clone())
            .map_err(|e| anyhow::anyhow!("cannot set up TLS: {e}"))?;
        (Some(config), keylog)
    };

    let cfg = Config {
        addr: args.addr.addr,
        prefix: args.addr.prefix,
        gateway,
        http_port: args.http_port,
        https_port: (!args.no_https).then_some(args.https_port),
        tls,
        keylog,
        backlog: args.backlog,
        max_conns: args.max_conns,
        max_time_wait: args.max_time_wait,
        rx_buf: args.rx_buf,
        tx_buf: args.tx_buf,
        limits: Limits {
            max_body: args.max_body,
            ..Limits::default()
        },
        timeouts: Timeouts {
            request: Duration::from_secs(args.request_timeout),
            idle: Duration::from_secs(args.idle_timeout),
        },
        seed: args.seed.unwrap_or_else(random_seed),
        dns_port: (!args.no_dns).then_some(args.dns_port),
        dns_names: args.names.clone(),
    };
    let mtu = tun.mtu();
    let name = tun.name().to_owned();
    let capture_path = sink.as_ref().map(|s| s.path().to_owned());
    let mut tap = Tap::new(tun, sink);
    if let Some(path) = &args.keylog {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path);
        tap.set_keylog_file(
            file.with_context(|| format!("cannot open --keylog file {}", path.display()))?,
        );
    }
    let mut stack = Stack::new(cfg, tap, app, journal)?;

    eprintln!(
        "synack: serving http://{}:{}/ on {name} (MTU {mtu}, MSS {}), gateway {gateway}",
        args.addr.addr,
        args.http_port,
        mtu.saturating_sub(40)
    );
    if !args.no_https {
        eprintln!(
            "synack: serving https://{}:{}/ (TLS 1.3 and 1.2)",
            args.addr.addr, args.https_port
        );
    }
    if !args.no_dns {
        eprintln!(
            "synack: answering DNS on udp/{} at {} for {}",
            args.dns_port,
            args.addr.addr,
            args.names.join(", ")
        );
    }
    match &capture_path {
        Some(p) => eprintln!("synack: capturing to {}", p.display()),
        None => eprintln!("synack: capture off"),
    }
    eprintln!("synack: Ctrl-C or SIGTERM stops cleanly");

    let result = stack.run(&stop);
    let finished = stack.shutdown();
    let c = stack.counters();
    eprintln!(
        "synack: stopped. {} connection{}, {} packets in, {} out, {} SYN{} dropped at a full accept queue, {} DNS answer{} ({} datagram{} dropped), {} device error{}",
        c.connections,
        plural(c.connections),
        c.device.rx_packets,
        c.device.tx_packets,
        c.syn_dropped,
        plural(c.syn_dropped),
        c.dns_answered,
        plural(c.dns_answered),
        c.dns_dropped,
        plural(c.dns_dropped),
        c.device_errors,
        plural(c.device_errors),
    );
    match finished {
        Ok(Some((path, packets))) => eprintln!(
            "synack: capture {} complete, {packets} packets",
            path.display()
        ),
        Ok(None) => {}
        Err(e) => eprintln!("synack: the capture could not be completed: {e}"),
    }
    result?;
    Ok(())
}
