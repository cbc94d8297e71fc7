//! Packets written the way packetdrill prints them (`packet_to_string.c`, short form):
//! flags in tcpdump's order, `start:end(len)`, `ack N` when the ACK bit is set, `win N`,
//! and the options between angle brackets.

use std::fmt::Write;

use super::ast::{TcpOpt, flag};

/// The fields of a TCP segment in the script's numbering.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpView {
    pub flags: u8,
    pub seq: u32,
    pub len: usize,
    pub ack: u32,
    /// `None`: not shown (a script packet that does not check it).
    pub win: Option<u16>,
    pub options: Vec<TcpOpt>,
}

pub fn flags(f: u8) -> String {
    let mut s = String::new();
    for (bit, c) in [
        (flag::FIN, 'F'),
        (flag::SYN, 'S'),
        (flag::RST, 'R'),
        (flag::PSH, 'P'),
        (flag::ACK, '.'),
        (flag::URG, 'U'),
        (flag::ECE, 'E'),
        (flag::CWR, 'W'),
    ] {
        if f & bit != 0 {
            s.push(c);
        }
    }
    if s.is_empty() {
        s.push('-');
    }
    s
}

pub fn tcp(v: &TcpView) -> String {
    let mut s = format!(
        "{} {}:{}({})",
        flags(v.flags),
        v.seq,
        v.seq.wrapping_add(v.len as u32),
        v.len
    );
    if v.flags & flag::ACK != 0 {
        let _ = write!(s, " ack {}", v.ack);
    }
    if let Some(w) = v.win {
        let _ = write!(s, " win {w}");
    }
    if !v.options.is_empty() {
        let _ = write!(s, " <{}>", options(&v.options));
    }
    s
}

pub fn options(opts: &[TcpOpt]) -> String {
    opts.iter().map(option).collect::<Vec<_>>().join(",")
}

pub fn option(o: &TcpOpt) -> String {
    match o {
        TcpOpt::Eol => "eol".into(),
        TcpOpt::Nop => "nop".into(),
        TcpOpt::Mss(m) => format!("mss {m}"),
        TcpOpt::WScale(w) => format!("wscale {w}"),
        TcpOpt::SackOk => "sackOK".into(),
        TcpOpt::Sack(blocks) => format!(
            "sack {}",
            blocks
                .iter()
                .map(|(l, r)| format!("{l}:{r}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        TcpOpt::Timestamp { val, ecr } => format!("TS val {val} ecr {ecr}"),
    }
}

/// `script packet:  0.100000 S. 0:0(0) ack 1 <...>`, packetdrill's dump line.
pub fn line(kind: &str, at_us: i64, text: &str) -> String {
    format!("{kind} packet: {:9.6} {text}", at_us as f64 / 1e6)
}

/// Seconds as packetdrill prints them in timing errors.
pub fn secs(us: i64) -> String {
    format!("{:.6}", us as f64 / 1e6)
}
