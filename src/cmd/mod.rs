//! The binary's side: the command line, each command's front end, and turning failures
//! into one clear sentence. The library takes plain configuration structs; `clap` and
//! `anyhow` live only here.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod analyze;
mod args;
mod demo;
mod fetch;
mod script;
mod serve;
mod setup;

use analyze::{LadderArgs, StatsArgs};
use demo::DemoArgs;
use fetch::FetchArgs;
use script::ScriptArgs;
use serve::ServeArgs;

#[derive(Debug, Parser)]
#[command(
    name = "synack",
    version,
    about = "A userspace TCP/IP stack on a TUN device that shows the journey of an HTTP request"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP/1.1 from a smoltcp stack on a TUN device, capturing every packet.
    Serve(ServeArgs),
    /// Fetch a URL with the userspace stack as the client, on a TUN device.
    Fetch(FetchArgs),
    /// The whole journey with no root at all: a client stack and a server stack in one process, on a virtual clock.
    Demo(DemoArgs),
    /// Draw each TCP connection and DNS exchange of any pcap or pcapng as a ladder diagram.
    Ladder(LadderArgs),
    /// Per-connection numbers of any pcap or pcapng: handshake RTT, bytes, retransmissions, windows, RTT.
    Stats(StatsArgs),
    /// Run packetdrill scripts against a TCP stack and show where it diverges from them.
    Script(ScriptArgs),
}

/// Parses the command line, runs the command, and turns any failure into one sentence
/// on stderr and a non-zero exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let logger = env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("synack=info,smoltcp=warn"),
    )
    .format_timestamp_millis()
    .build();
    // smoltcp's trace lines pass through a tap that hands them to the node while it polls a
    // connection (--internals on); everything else is env_logger's to print.
    let level = logger.filter();
    synack::internals::install(Some(Box::new(logger)), level);
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Fetch(args) => fetch::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Ladder(args) => analyze::ladder(args).map(|()| 0),
        Command::Stats(args) => analyze::stats(args).map(|()| 0),
        Command::Script(args) => script::run(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("synack: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::args::{Cidr, JourneyFormat, parse_buf};
    use super::*;

    #[test]
    fn cidr_parsing() {
        let c: Cidr = "10.77.0.2/24".parse().unwrap();
        assert_eq!(
            (c.addr, c.prefix, c.first_host()),
            (Ipv4Addr::new(10, 77, 0, 2), 24, Ipv4Addr::new(10, 77, 0, 1))
        );
        assert!("10.77.0.2/31".parse::<Cidr>().is_err());
        assert!("nope/24".parse::<Cidr>().is_err());
    }

    #[test]
    fn buffer_sizes() {
        assert_eq!(parse_buf("64k"), Ok(65536));
        assert_eq!(parse_buf("1M"), Ok(1 << 20));
        assert_eq!(parse_buf("4096"), Ok(4096));
        assert!(parse_buf("12").unwrap_err().contains("out of range"));
        assert!(parse_buf("lots").is_err());
    }

    #[test]
    fn flags_are_bounded_with_a_clear_range() {
        let err = Cli::try_parse_from(["synack", "serve", "--backlog", "0"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("1..=65536"), "{err}");
        let err = Cli::try_parse_from(["synack", "serve", "--mtu", "100"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("576"), "{err}");
        assert!(
            Cli::try_parse_from(["synack", "serve", "--capture", "x", "--no-capture"]).is_err()
        );
        for (flag, value, range) in [
            ("--ack-delay", "5000", "0..=1000"),
            ("--keepalive", "0", "1..=7200"),
            ("--timeout", "0", "1..=3600"),
            ("--loss", "101", "0..=100"),
            ("--delay", "20000", "0..=10000"),
        ] {
            let err = Cli::try_parse_from(["synack", "demo", flag, value])
                .unwrap_err()
                .to_string();
            assert!(err.contains(range), "{flag} {value}: {err}");
        }
        let err = Cli::try_parse_from(["synack", "demo", "--nagle", "maybe"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("on or off"), "{err}");
        let Command::Demo(d) =
            Cli::try_parse_from(["synack", "demo", "--nagle", "off", "--ack-delay", "off"])
                .unwrap()
                .command
        else {
            panic!("demo")
        };
        let knobs = d.knobs.knobs();
        assert!(!knobs.nagle && knobs.ack_delay.is_none());
        let ok = Cli::try_parse_from(["synack", "serve", "--journey", "json"]).unwrap();
        let Command::Serve(a) = ok.command else {
            panic!("serve")
        };
        assert_eq!(a.record.journey, JourneyFormat::Json);
    }

    #[test]
    fn capture_and_journey_bounds() {
        use synack::capture::{CaptureConfig, Target};
        let Command::Serve(a) = Cli::try_parse_from([
            "synack",
            "serve",
            "--capture",
            "c.pcapng",
            "--capture-limit",
            "100m",
            "--capture-files",
            "5",
            "--journey-limit",
            "1g",
        ])
        .unwrap()
        .command
        else {
            panic!("serve")
        };
        assert_eq!(
            a.record.capture_config("serve"),
            Some(CaptureConfig {
                target: Target::Path("c.pcapng".into()),
                limit: Some(100 << 20),
                files: 5,
            })
        );
        assert_eq!(a.record.journey_limit, 1 << 30);
        let Command::Demo(d) = Cli::try_parse_from(["synack", "demo", "--capture", "-"])
            .unwrap()
            .command
        else {
            panic!("demo")
        };
        assert!(d.record.captures_to_stdout());
        assert_eq!(
            d.record.capture_config("demo").unwrap().target,
            Target::Stdout
        );
        assert_eq!(
            d.record.journey_limit,
            synack::journey::file::DEFAULT_LIMIT,
            "the flag's default is the library's"
        );
        assert_eq!(d.record.capture_config("demo").unwrap().limit, None);
        for (flag, value, says) in [
            ("--capture-limit", "1k", "out of range 64 KiB..=1024 GiB"),
            ("--capture-limit", "lots", "not a size"),
            ("--capture-files", "0", "1..=10000"),
            ("--journey-limit", "10", "out of range 4 KiB"),
        ] {
            let err = Cli::try_parse_from(["synack", "serve", flag, value])
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{flag} {value}: {err}");
        }
        for (flag, value) in [("--capture-limit", "1m"), ("--capture-files", "3")] {
            assert!(Cli::try_parse_from(["synack", "serve", "--no-capture", flag, value]).is_err());
        }
        assert!(Cli::try_parse_from(["synack", "serve", "--no-capture"]).is_ok());
    }
}
