//! `synack serve`: open the device, start the capture and the journal, run the stack until
//! SIGINT or SIGTERM, then leave a complete capture behind.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use clap::Args;

use super::args::{self, BufferArgs, FaultArgs, KnobArgs, LinkArgs, RecordArgs};
use super::setup::{self, plural};
use synack::app::App;
use synack::capture::PcapngSink;
use synack::driver::Edge;
use synack::driver::tun::TunDriver;
use synack::http::Limits;
use synack::link::Link;
use synack::node::{Config, Node, limits};
use synack::session::Timeouts;
use synack::tls;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub link: LinkArgs,
    #[command(flatten)]
    pub record: RecordArgs,
    #[command(flatten)]
    pub knobs: KnobArgs,
    #[command(flatten)]
    pub buffers: BufferArgs,
    #[command(flatten)]
    pub faults: FaultArgs,
    /// TCP port of the HTTP server.
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u16).range(1..))]
    pub http_port: u16,
    #[command(flatten)]
    pub queues: args::QueueArgs,
    /// Most connections served at once; past it, established connections wait in the accept queue.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_CONNS, value_parser = args::max_conns_range)]
    pub max_conns: usize,
    /// Serve static files from this directory (never anything outside it).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Largest request body accepted; larger gets 413.
    #[arg(long, default_value = "1m", value_parser = args::parse_buf)]
    pub max_body: usize,
    /// Seconds a client may take to send one request before it gets 408.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout: u64,
    /// Seconds a kept-alive connection may sit idle before it gets 408 and is closed.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub idle_timeout: u64,
    /// Seed for initial sequence numbers and SYN cookies (default: random, their key from the OS). A seed makes them predictable: for experiments only.
    #[arg(long)]
    pub seed: Option<u64>,
    /// TCP port of the HTTPS server (TLS 1.3 and 1.2, rustls).
    #[arg(long, default_value_t = 443, value_parser = clap::value_parser!(u16).range(1..), conflicts_with = "no_https")]
    pub https_port: u16,
    /// No HTTPS server.
    #[arg(long)]
    pub no_https: bool,
    /// PEM certificate (chain) for HTTPS. Without --cert/--key a self-signed one is made for every --name and --addr.
    #[arg(long, requires = "key", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// PEM private key for --cert.
    #[arg(long, requires = "cert", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Where to write the generated certificate, for clients' --cacert. Default: beside the capture.
    #[arg(long, value_name = "FILE", conflicts_with = "cert")]
    pub cert_out: Option<PathBuf>,
    /// UDP port of the DNS responder, which answers --name queries with the stack's address.
    #[arg(long, default_value_t = 53, value_parser = clap::value_parser!(u16).range(1..), conflicts_with = "no_dns")]
    pub dns_port: u16,
    /// No DNS responder.
    #[arg(long)]
    pub no_dns: bool,
    /// A name the DNS responder answers with an A record of --addr (repeatable; others get NXDOMAIN).
    #[arg(long = "name", value_name = "NAME", default_value = "synack.test", value_parser = synack::dns::valid_name)]
    pub names: Vec<String>,
}

/// Serves until stopped; the exit code is [`setup::EXIT_CAPTURE_INCOMPLETE`] if the capture
/// could not be completed.
pub fn run(args: ServeArgs) -> anyhow::Result<u8> {
    let app = App::new(args.root.clone()).with_context(|| {
        format!(
            "--root {}: no such directory (give an existing directory to serve files from)",
            args.root
                .as_ref()
                .map(|r| r.display().to_string())
                .unwrap_or_default()
        )
    })?;

    if !args.no_https && args.https_port == args.http_port {
        anyhow::bail!(
            "--http-port {} is also the HTTPS port: give --https-port another port, or --no-https",
            args.http_port
        );
    }
    if !args.no_dns && args.dns_port == args.http_port {
        // Different protocols, but a user who does this has mistyped.
        log::warn!("--dns-port and --http-port are both {}", args.http_port);
    }
    let (tun, gateway) = setup::open_tun(&args.link)?;
    let addr = args.link.addr;
    let sink = setup::open_capture(&args.record, "serve", "server", &tun, addr)?;
    let summary = sink.as_ref().map(PcapngSink::summary_handle);
    // The generated certificate goes beside the capture by default.
    let capture_dir = sink.as_ref().map(|s| match s.path().parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    });

    let journal = setup::open_journal(&args.record, "server")?;
    let stop = setup::stop()?;

    // HTTPS: the identity (given, or made and written out), and a key log when something
    // records the secrets (the capture's Decryption Secrets Block, --keylog).
    let (tls, keylog) = if args.no_https {
        (None, None)
    } else {
        let identity = match (&args.cert, &args.key) {
            (Some(cert), Some(key)) => tls::load(cert, key)?,
            _ => {
                let identity = tls::generate(&args.names, addr.addr)?;
                let out = args.cert_out.clone().unwrap_or_else(|| {
                    let dir = capture_dir
                        .clone()
                        .unwrap_or_else(|| PathBuf::from("captures"));
                    dir.join("synack-cert.pem")
                });
                if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                    // As for captures: only the default directory is made.
                    if dir == std::path::Path::new(synack::capture::DEFAULT_DIR) {
                        std::fs::create_dir_all(dir)
                            .with_context(|| format!("cannot create {}", dir.display()))?;
                    } else if !dir.is_dir() {
                        anyhow::bail!(
                            "the directory {} does not exist: create it first, or give --cert-out a path in an existing one",
                            dir.display()
                        );
                    }
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
                    addr.addr,
                    out.display(),
                    out.display(),
                    args.names
                        .first()
                        .map_or_else(|| addr.addr.to_string(), Clone::clone)
                );
                identity
            }
        };
        let keylog = (!args.record.no_capture || args.record.keylog.is_some())
            .then(|| Arc::new(tls::KeyLogLines::default()));
        let config = tls::server_config(&identity, keylog.clone())
            .map_err(|e| anyhow::anyhow!("cannot set up TLS: {e}"))?;
        (Some(config), keylog)
    };

    let seed = args.seed.unwrap_or_else(setup::random_seed);
    // Unseeded, the key of ISNs and cookies owes nothing to the seed (which our ISNs and
    // ports give away): RFC 6528 §3 wants it secret.
    let secret = match args.seed {
        Some(_) => None,
        None => Some(synack::node::os_secret().context(
            "cannot read random bytes from the kernel; give --seed N to run with predictable ISNs and SYN cookies",
        )?),
    };
    let faults = args.faults.config(seed, 0);
    let mtu = tun.mtu();
    let cfg = Config {
        addr: addr.addr,
        prefix: addr.prefix,
        gateway,
        mtu,
        listen: true,
        http_port: args.http_port,
        https_port: (!args.no_https).then_some(args.https_port),
        tls,
        keylog,
        backlog: args.queues.backlog,
        syn_backlog: args.queues.syn_backlog,
        max_conns: args.max_conns,
        max_time_wait: args.queues.tw.max_time_wait,
        max_closing: synack::node::limits::DEFAULT_MAX_CLOSING,
        time_wait: Duration::from_secs(args.queues.tw.time_wait),
        rx_buf: args.buffers.rx_buf,
        tx_buf: args.buffers.tx_buf,
        limits: Limits {
            max_body: args.max_body,
            ..Limits::default()
        },
        timeouts: Timeouts {
            request: Duration::from_secs(args.request_timeout),
            idle: Duration::from_secs(args.idle_timeout),
        },
        seed,
        secret,
        dns_port: (!args.no_dns).then_some(args.dns_port),
        dns_names: args.names.clone(),
        knobs: args.knobs.knobs(),
        notes: sink.is_some(),
        internals: args.record.internals,
    };
    let name = tun.name().to_owned();
    let capturing = sink.as_ref().map(PcapngSink::describe);
    let capture = setup::capture(&args.record, sink)?;
    let node = Node::new(cfg, app, journal, synack::clock::now())?;
    let mut driver = TunDriver::new(tun, Link::new(faults), Edge::new(node, capture), stop);

    eprintln!(
        "synack: serving http://{}:{}/ on {name} (MTU {mtu}, MSS {}), gateway {gateway}",
        addr.addr,
        args.http_port,
        mtu.saturating_sub(40)
    );
    if !args.no_https {
        eprintln!(
            "synack: serving https://{}:{}/ (TLS 1.3 and 1.2)",
            addr.addr, args.https_port
        );
    }
    if !args.no_dns {
        eprintln!(
            "synack: answering DNS on udp/{} at {} for {}",
            args.dns_port,
            addr.addr,
            args.names.join(", ")
        );
    }
    if !faults.is_none() {
        eprintln!("synack: link faults in force: {}", faults.describe());
    }
    match &capturing {
        Some(c) => eprintln!("synack: capturing to {c}"),
        None => eprintln!("synack: capture off"),
    }
    eprintln!("synack: Ctrl-C or SIGTERM stops cleanly");

    let result = driver.run();
    let finished = driver.shutdown();
    let c = driver.edge.node.counters();
    let device = driver.tun.counters();
    eprintln!(
        "synack: stopped. {} connection{}, {} packets in, {} out, {} SYN{} dropped at a full accept queue, {} SYN cookie{} ({} came back), {} DNS answer{} ({} datagram{} dropped), {} device error{}",
        c.connections,
        plural(c.connections),
        device.rx_packets,
        device.tx_packets,
        c.syn_dropped,
        plural(c.syn_dropped),
        c.syn_cookies_sent,
        plural(c.syn_cookies_sent),
        c.syn_cookies_validated,
        c.dns_answered,
        plural(c.dns_answered),
        c.dns_dropped,
        plural(c.dns_dropped),
        driver.device_errors,
        plural(driver.device_errors),
    );
    let complete = setup::report_capture(finished, summary.as_ref());
    result?;
    Ok(if complete {
        0
    } else {
        setup::EXIT_CAPTURE_INCOMPLETE
    })
}
