//! Captures built from fuzz input, block by block: pcapng (section headers, interfaces of
//! every link type the reader knows, enhanced and simple packets with comments, flags and
//! snap lengths, decryption secrets, blocks it does not know) or classic pcap, either byte
//! order. The packets are TCP segments of a few connections whose sequence numbers follow
//! on (so the analysis sees handshakes, data, retransmissions and teardowns), DNS
//! datagrams, or raw bytes.
//!
//! A capture built without [`Block::Garbage`] and without naming an interface that was
//! never described is well-formed (pcapng, draft-ietf-opsawg-pcapng; the classic format
//! as libpcap writes it): the reader must read it.

use std::net::Ipv4Addr;

use arbitrary::Arbitrary;

use crate::build::{self, Ip, Tcp, TcpOpt};

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Raw,
    Ipv4,
    Ethernet,
    EthernetVlan,
    Sll,
    Sll2,
    Null,
    Loop,
    /// A link type the reader does not know.
    Other(u16),
}

impl Link {
    fn code(self) -> u32 {
        match self {
            Link::Raw => 101,
            Link::Ipv4 => 228,
            Link::Ethernet | Link::EthernetVlan => 1,
            Link::Sll => 113,
            Link::Sll2 => 276,
            Link::Null => 0,
            Link::Loop => 108,
            // Past every type libpcap assigns.
            Link::Other(n) => 300 + u32::from(n % 1000),
        }
    }

    /// The frame around an IPv4 packet on this link.
    fn frame(self, ip: &[u8], big_endian: bool) -> Vec<u8> {
        let mut f = Vec::with_capacity(ip.len() + 20);
        match self {
            Link::Raw | Link::Ipv4 | Link::Other(_) => {}
            Link::Ethernet => {
                f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00]);
            }
            Link::EthernetVlan => {
                f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
                f.extend_from_slice(&[0x81, 0x00, 0x00, 0x07, 0x08, 0x00]);
            }
            Link::Sll => {
                f.extend_from_slice(&[0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
                f.extend_from_slice(&[0x08, 0x00]);
            }
            Link::Sll2 => {
                f.extend_from_slice(&[0x08, 0x00, 0, 0]);
                f.extend_from_slice(&[0, 0, 0, 3, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
            }
            Link::Null => {
                let family = if big_endian {
                    [0, 0, 0, 2]
                } else {
                    [2, 0, 0, 0]
                };
                f.extend_from_slice(&family);
            }
            // DLT_LOOP: always network byte order.
            Link::Loop => f.extend_from_slice(&[0, 0, 0, 2]),
        }
        f.extend_from_slice(ip);
        f
    }
}

/// A pcapng option (the reader must skip those it does not know).
#[derive(Arbitrary, Debug, Clone)]
pub enum Opt {
    Comment(String),
    /// A custom option (code 2989: binary, with a Private Enterprise Number).
    Custom(u32, Vec<u8>),
    /// Any code and value: may be wrong for the block (a wrong length for a known code).
    Raw(u16, Vec<u8>),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Time {
    /// After the last packet, in the interface's units.
    After(u16),
    Abs(u64),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Frame {
    /// A segment of connection `conn % 4`; `to_server` says which way.
    Tcp {
        conn: u8,
        to_server: bool,
        /// Relative to where this side's sequence space is (0: the next new byte).
        seq: i16,
        /// Acknowledge what the other side sent, give or take.
        ack: Option<i16>,
        flags: u8,
        window: u16,
        options: Vec<TcpOpt>,
        len: u16,
    },
    Dns {
        conn: u8,
        to_server: bool,
        payload: Vec<u8>,
    },
    /// An IPv4 packet of any protocol with these bytes after the header.
    Ip {
        protocol: u8,
        payload: Vec<u8>,
    },
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Block {
    Section {
        options: Vec<Opt>,
    },
    Interface {
        link: Link,
        snaplen: Option<u16>,
        tsresol: Option<u8>,
        options: Vec<Opt>,
    },
    Packet {
        interface: u8,
        time: Time,
        frame: Frame,
        /// Keep only this many bytes (a snap length); the original length is the frame's.
        cut: Option<u16>,
        comment: Option<String>,
        /// 1 inbound, 2 outbound (pcapng's epb_flags, bits 0-1).
        direction: Option<u8>,
        options: Vec<Opt>,
    },
    Simple {
        frame: Frame,
    },
    Secrets {
        text: String,
    },
    /// A block type the reader does not know, with a body of these bytes.
    Unknown {
        kind: u16,
        body: Vec<u8>,
    },
    /// Bytes dropped in between blocks: the file is damaged from here.
    Garbage(Vec<u8>),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Format {
    PcapNg {
        big_endian: bool,
    },
    Pcap {
        big_endian: bool,
        nanos: bool,
        link: Link,
        snaplen: Option<u16>,
    },
}

#[derive(Arbitrary, Debug, Clone)]
pub struct Capture {
    pub format: Format,
    pub blocks: Vec<Block>,
}

/// The sequence numbers each side of each connection has reached.
#[derive(Default)]
pub struct Flows {
    next: [[u32; 2]; 4],
}

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

impl Flows {
    /// The IPv4 packet for `frame`, moving the connection's numbers on.
    pub fn ip(&mut self, frame: &Frame) -> Vec<u8> {
        match frame {
            Frame::Tcp {
                conn,
                to_server,
                seq,
                ack,
                flags,
                window,
                options,
                len,
            } => {
                let c = usize::from(conn % 4);
                let me = usize::from(!to_server);
                let (src, dst) = ends(c, *to_server, 80);
                let s = self.next[c][me].wrapping_add(*seq as i32 as u32);
                let mut fl = flags & 0x3F;
                let a = match ack {
                    Some(d) => {
                        fl |= build::flags::ACK;
                        self.next[c][1 - me].wrapping_add(*d as i32 as u32)
                    }
                    None => {
                        fl &= !build::flags::ACK;
                        0
                    }
                };
                let len = usize::from(*len % 3000);
                let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                let end = s
                    .wrapping_add(len as u32)
                    .wrapping_add(u32::from(fl & build::flags::SYN != 0))
                    .wrapping_add(u32::from(fl & build::flags::FIN != 0));
                if (end.wrapping_sub(self.next[c][me]) as i32) > 0 {
                    self.next[c][me] = end;
                }
                let opts = build::options(options, a);
                let tcp = build::tcp_segment(&Tcp {
                    src,
                    dst,
                    seq: s,
                    ack: a,
                    flags: fl,
                    window: *window,
                    urgent: 0,
                    options: &opts,
                    payload: &payload,
                });
                build::ipv4(&Ip::new(src.0, dst.0, 6), &tcp)
            }
            Frame::Dns {
                conn,
                to_server,
                payload,
            } => {
                let (src, dst) = ends(usize::from(conn % 4), *to_server, 53);
                let udp = build::udp_datagram(src, dst, payload);
                build::ipv4(&Ip::new(src.0, dst.0, 17), &udp)
            }
            Frame::Ip { protocol, payload } => {
                build::ipv4(&Ip::new(CLIENT, SERVER, *protocol), payload)
            }
            Frame::Raw(bytes) => bytes.clone(),
        }
    }
}

/// A connection's two ends; connection 3 is the server's own (port 53 or 80 at the client).
fn ends(c: usize, to_server: bool, port: u16) -> ((Ipv4Addr, u16), (Ipv4Addr, u16)) {
    let client = (CLIENT, 40_000 + c as u16);
    let server = (SERVER, port);
    if to_server {
        (client, server)
    } else {
        (server, client)
    }
}

struct Out {
    bytes: Vec<u8>,
    big: bool,
}

impl Out {
    fn u16(&mut self, v: u16) {
        let b = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.bytes.extend_from_slice(&b);
    }
    fn u32(&mut self, v: u32) {
        let b = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.bytes.extend_from_slice(&b);
    }
    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    /// Options, then opt_endofopt; returns whether they are all well-formed for any block.
    fn options(&mut self, opts: &[Opt], comment: Option<&str>) -> bool {
        let mut ok = true;
        let mut any = false;
        let mut put = |out: &mut Out, code: u16, value: &[u8]| {
            // An option's length is 16 bits; fuzz inputs stay far below.
            let value = &value[..value.len().min(60_000)];
            out.u16(code);
            out.u16(value.len() as u16);
            out.bytes.extend_from_slice(value);
            out.pad();
            any = true;
        };
        if let Some(c) = comment {
            put(self, 1, c.as_bytes());
        }
        for o in opts.iter().take(8) {
            match o {
                Opt::Comment(c) => put(self, 1, c.as_bytes()),
                Opt::Custom(pen, data) => {
                    let mut v = if self.big {
                        pen.to_be_bytes().to_vec()
                    } else {
                        pen.to_le_bytes().to_vec()
                    };
                    v.extend_from_slice(data);
                    put(self, 2989, &v);
                }
                Opt::Raw(code, data) => {
                    // opt_endofopt would end the options early; the rest would be garbage.
                    ok = false;
                    put(self, *code, data);
                }
            }
        }
        if any {
            self.u32(0);
        }
        ok
    }

    /// A whole block: type, length, body (built by `body`), length again.
    fn block(&mut self, kind: u32, body: impl FnOnce(&mut Out) -> bool) -> bool {
        let start = self.bytes.len();
        self.u32(kind);
        self.u32(0);
        let ok = body(self);
        self.pad();
        let len = (self.bytes.len() - start + 4) as u32;
        let b = if self.big {
            len.to_be_bytes()
        } else {
            len.to_le_bytes()
        };
        self.bytes[start + 4..start + 8].copy_from_slice(&b);
        self.u32(len);
        ok
    }
}

impl Capture {
    /// The file's bytes, and whether it is well-formed (every reader must read it).
    pub fn bytes(&self) -> (Vec<u8>, bool) {
        match &self.format {
            Format::PcapNg { big_endian } => self.pcapng(*big_endian),
            Format::Pcap {
                big_endian,
                nanos,
                link,
                snaplen,
            } => self.pcap(*big_endian, *nanos, *link, *snaplen),
        }
    }

    fn pcapng(&self, big: bool) -> (Vec<u8>, bool) {
        let mut out = Out {
            bytes: Vec::new(),
            big,
        };
        let mut flows = Flows::default();
        let mut well_formed = true;
        // Per interface of the current section: its link and snap length.
        let mut interfaces: Vec<(Link, u32)> = Vec::new();
        let mut clock = 1_700_000_000_000_000u64;
        let section = |out: &mut Out, opts: &[Opt]| {
            out.block(0x0A0D_0D0A, |o| {
                o.u32(0x1A2B_3C4D);
                o.u16(1);
                o.u16(0);
                // Section length unknown.
                o.u32(u32::MAX);
                o.u32(u32::MAX);
                o.options(opts, None)
            })
        };
        let starts_with_section = matches!(self.blocks.first(), Some(Block::Section { .. }));
        if !starts_with_section {
            section(&mut out, &[]);
        }
        for block in self.blocks.iter().take(512) {
            match block {
                Block::Section { options } => {
                    well_formed &= section(&mut out, options);
                    interfaces.clear();
                }
                Block::Interface {
                    link,
                    snaplen,
                    tsresol,
                    options,
                } => {
                    let snap = snaplen.map_or(0, |s| u32::from(s.max(64)));
                    well_formed &= !matches!(link, Link::Other(_));
                    interfaces.push((*link, snap));
                    well_formed &= out.block(1, |o| {
                        o.u16(link.code() as u16);
                        o.u16(0);
                        o.u32(snap);
                        let mut ok = true;
                        if let Some(r) = tsresol {
                            // if_tsresol: one byte; 10^-r or 2^-(r & 0x7f) seconds.
                            o.u16(9);
                            o.u16(1);
                            o.bytes.push(*r);
                            o.pad();
                            ok = o.options(options, None);
                            if options.is_empty() {
                                o.u32(0);
                            }
                        } else {
                            ok &= o.options(options, None);
                        }
                        ok
                    });
                }
                Block::Packet {
                    interface,
                    time,
                    frame,
                    cut,
                    comment,
                    direction,
                    options,
                } => {
                    let i = usize::from(*interface);
                    let (link, snap) = match interfaces.get(i) {
                        Some(&x) => x,
                        None => {
                            well_formed = false;
                            (Link::Raw, 0)
                        }
                    };
                    let ip = flows.ip(frame);
                    let data = link.frame(&ip, big);
                    let mut keep = data.len();
                    if let Some(c) = cut {
                        keep = keep.min(usize::from(*c));
                    }
                    if snap > 0 {
                        keep = keep.min(snap as usize);
                    }
                    clock = match time {
                        Time::After(d) => clock.wrapping_add(u64::from(*d)),
                        Time::Abs(t) => *t,
                    };
                    well_formed &= out.block(6, |o| {
                        o.u32(u32::from(*interface));
                        o.u32((clock >> 32) as u32);
                        o.u32(clock as u32);
                        o.u32(keep as u32);
                        o.u32(data.len() as u32);
                        o.bytes.extend_from_slice(&data[..keep]);
                        o.pad();
                        let mut opts: Vec<Opt> = Vec::new();
                        let mut ok = true;
                        if let Some(d) = direction {
                            let flags = u32::from(d & 3);
                            let v = if o.big {
                                flags.to_be_bytes()
                            } else {
                                flags.to_le_bytes()
                            };
                            o.u16(2);
                            o.u16(4);
                            o.bytes.extend_from_slice(&v);
                            if comment.is_none() && options.is_empty() {
                                o.u32(0);
                            }
                        }
                        opts.extend(options.iter().cloned());
                        ok &= o.options(&opts, comment.as_deref());
                        ok
                    });
                }
                Block::Simple { frame } => {
                    let (link, snap) = match interfaces.first() {
                        Some(&x) => x,
                        None => {
                            well_formed = false;
                            (Link::Raw, 0)
                        }
                    };
                    let ip = flows.ip(frame);
                    let data = link.frame(&ip, big);
                    let keep = if snap > 0 {
                        data.len().min(snap as usize)
                    } else {
                        data.len()
                    };
                    out.block(3, |o| {
                        o.u32(data.len() as u32);
                        o.bytes.extend_from_slice(&data[..keep]);
                        true
                    });
                }
                Block::Secrets { text } => {
                    out.block(10, |o| {
                        o.u32(0x544c_534b);
                        o.u32(text.len() as u32);
                        o.bytes.extend_from_slice(text.as_bytes());
                        true
                    });
                }
                Block::Unknown { kind, body } => {
                    // Types assigned for local use (pcapng §11.1: high bit set).
                    out.block(0x8000_0000 | u32::from(*kind), |o| {
                        o.bytes.extend_from_slice(body);
                        true
                    });
                }
                Block::Garbage(bytes) => {
                    well_formed = false;
                    out.bytes.extend_from_slice(bytes);
                }
            }
        }
        (out.bytes, well_formed)
    }

    fn pcap(&self, big: bool, nanos: bool, link: Link, snaplen: Option<u16>) -> (Vec<u8>, bool) {
        let mut out = Out {
            bytes: Vec::new(),
            big,
        };
        let mut flows = Flows::default();
        let mut well_formed = !matches!(link, Link::Other(_));
        out.u32(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 });
        out.u16(2);
        out.u16(4);
        out.u32(0);
        out.u32(0);
        let snap = snaplen.map_or(262_144, |s| u32::from(s.max(64)));
        out.u32(snap);
        out.u32(link.code());
        let mut clock = (1_700_000_000u32, 0u32);
        let frac_max = if nanos { 1_000_000_000 } else { 1_000_000 };
        for block in self.blocks.iter().take(512) {
            match block {
                Block::Packet {
                    time, frame, cut, ..
                } => {
                    let ip = flows.ip(frame);
                    let data = link.frame(&ip, big);
                    let keep = data
                        .len()
                        .min(cut.map_or(usize::MAX, usize::from))
                        .min(snap as usize);
                    clock = match time {
                        Time::After(d) => {
                            // After an absolute time near the end of u32 seconds, the
                            // clock wraps as a 32-bit pcap timestamp does.
                            let frac = clock.1 + u32::from(*d) * 7;
                            (clock.0.wrapping_add(frac / frac_max), frac % frac_max)
                        }
                        Time::Abs(t) => ((*t >> 32) as u32, (*t as u32) % frac_max),
                    };
                    out.u32(clock.0);
                    out.u32(clock.1);
                    out.u32(keep as u32);
                    out.u32(data.len() as u32);
                    out.bytes.extend_from_slice(&data[..keep]);
                }
                Block::Garbage(bytes) => {
                    well_formed = false;
                    out.bytes.extend_from_slice(bytes);
                }
                _ => {}
            }
        }
        (out.bytes, well_formed)
    }
}
