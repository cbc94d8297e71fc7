//! Reading any capture: pcap or pcapng (synack's, tcpdump's, Wireshark's), with Raw IP,
//! IPv4, Ethernet, Linux cooked (SLL, SLL2) or BSD loopback framing, down to the IPv4
//! packets inside. A file that is not a capture, or is cut short, is a clear error.
//!
//! Packets cut by a snap length (`tcpdump -s 96`: fewer bytes captured than were on the
//! wire) are normal and read: each frame keeps the bytes captured and the IP packet's
//! original length, and the analysis reads what the headers show.

use std::io::{BufRead, Read};
use std::path::Path;
use std::time::Duration;

use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{DataLink, TsResolution};

/// Why a capture cannot be read, in words for the user.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot open {0}: {1}")]
    Open(String, std::io::Error),
    #[error("{0} is not a pcap or pcapng capture (it starts with {1})")]
    NotACapture(String, String),
    #[error("{path} is damaged or cut short after {packets} packets: {reason}")]
    Damaged {
        path: String,
        packets: usize,
        reason: String,
    },
    #[error(
        "{0} uses link type {1:?}, which synack cannot read (it reads Raw IP, IPv4, Ethernet, Linux cooked and loopback captures)"
    )]
    LinkType(String, DataLink),
}

/// One captured packet: its IPv4 bytes, when, and what the capture said about it.
#[derive(Debug, Clone)]
pub struct Frame {
    /// 1-based, as Wireshark numbers frames.
    pub number: usize,
    pub time: Duration,
    /// The IPv4 packet (link framing removed) as far as it was captured; empty if it was
    /// not IPv4.
    pub ip: Vec<u8>,
    /// The IPv4 packet's length on the wire, from the record's original length: more than
    /// `ip.len()` when the capture's snap length cut it.
    pub ip_len: usize,
    pub comment: Option<String>,
    /// pcapng's direction flag, if the capture has it: `Some(true)` inbound.
    pub inbound: Option<bool>,
}

/// The IPv4 packet inside a frame of this link type, if it carries one.
fn ip_of(link: DataLink, data: &[u8]) -> Option<&[u8]> {
    let ip = match link {
        DataLink::RAW | DataLink::IPV4 => data,
        // Ethernet II: the EtherType at 12, after any 802.1Q / 802.1ad tags (4 bytes each).
        DataLink::ETHERNET => {
            let mut at = 12;
            loop {
                match data.get(at..at + 2)? {
                    [0x81, 0x00] | [0x88, 0xa8] => at += 4,
                    [0x08, 0x00] => break &data[at + 2..],
                    _ => return None,
                }
            }
        }
        // Linux cooked capture (tcpdump -i any): 16-byte header, protocol at 14.
        DataLink::LINUX_SLL => (data.get(14..16)? == [0x08, 0x00]).then(|| &data[16..])?,
        // SLL2: 20-byte header, protocol at 0.
        DataLink::LINUX_SLL2 => (data.get(0..2)? == [0x08, 0x00])
            .then(|| data.get(20..))
            .flatten()?,
        // BSD loopback: a 4-byte address family in host order; 2 is AF_INET.
        DataLink::NULL | DataLink::LOOP => {
            let family = data.get(0..4)?;
            (family == [2, 0, 0, 0] || family == [0, 0, 0, 2]).then(|| &data[4..])?
        }
        _ => return None,
    };
    (ip.first()? >> 4 == 4).then_some(ip)
}

fn readable(link: DataLink) -> bool {
    matches!(
        link,
        DataLink::RAW
            | DataLink::IPV4
            | DataLink::ETHERNET
            | DataLink::LINUX_SLL
            | DataLink::LINUX_SLL2
            | DataLink::NULL
            | DataLink::LOOP
    )
}

/// Reads every frame of the capture at `path`.
pub fn read(path: &Path) -> Result<Vec<Frame>, ReadError> {
    let name = path.display().to_string();
    // Streamed: a capture of gigabytes is read through a buffer, not into memory first.
    let file = std::fs::File::open(path)
        .map(|f| std::io::BufReader::with_capacity(1 << 20, f))
        .map_err(|e| ReadError::Open(name.clone(), e))?;
    read_from(&name, file)
}

/// Reads every frame of a capture from `input`; `name` is what errors call it.
pub fn read_from(name: &str, mut file: impl BufRead) -> Result<Vec<Frame>, ReadError> {
    let name = name.to_owned();
    // The first bytes say which format it is (the reader still gets all of them).
    let bytes: Vec<u8> = file
        .fill_buf()
        .map_err(|e| ReadError::Open(name.clone(), e))?
        .iter()
        .take(8)
        .copied()
        .collect();
    match bytes.get(0..4) {
        Some([0x0a, 0x0d, 0x0d, 0x0a]) => read_pcapng(&name, file),
        Some(
            [0xa1, 0xb2, 0xc3, 0xd4]
            | [0xd4, 0xc3, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0x3c, 0x4d]
            | [0x4d, 0x3c, 0xb2, 0xa1],
        ) => read_pcap(&name, file),
        _ => {
            let start: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
            let start = if start.is_empty() {
                "nothing: it is empty".to_owned()
            } else {
                start.join(" ")
            };
            Err(ReadError::NotACapture(name, start))
        }
    }
}

fn damaged(path: &str, packets: usize, e: impl std::fmt::Display) -> ReadError {
    ReadError::Damaged {
        path: path.to_owned(),
        packets,
        reason: e.to_string(),
    }
}

fn read_pcap(name: &str, input: impl Read) -> Result<Vec<Frame>, ReadError> {
    let mut reader = PcapReader::new(input).map_err(|e| damaged(name, 0, e))?;
    let link = reader.header().datalink;
    if !readable(link) {
        return Err(ReadError::LinkType(name.to_owned(), link));
    }
    let nanos_per_frac = match reader.header().ts_resolution {
        TsResolution::MicroSecond => 1000,
        TsResolution::NanoSecond => 1,
    };
    let mut frames = Vec::new();
    // The raw records: pcap-file's checked ones refuse a record whose original length is
    // over the snap length, which is exactly what a snap length makes (tcpdump -s 200).
    while let Some(packet) = reader.next_raw_packet() {
        let packet = packet.map_err(|e| damaged(name, frames.len(), e))?;
        let time = Duration::from_secs(u64::from(packet.ts_sec))
            + Duration::from_nanos(u64::from(packet.ts_frac) * nanos_per_frac);
        frames.push(frame(
            frames.len() + 1,
            time,
            link,
            &packet.data,
            packet.orig_len,
        ));
    }
    Ok(frames)
}

/// A frame from a record's bytes and the length the record says it had on the wire.
fn frame(number: usize, time: Duration, link: DataLink, data: &[u8], orig_len: u32) -> Frame {
    let ip = ip_of(link, data).map(<[u8]>::to_vec).unwrap_or_default();
    // What the snap length cut off comes off the end of the IP packet; an original length
    // shorter than what was captured is a writer's mistake, and the bytes win.
    let cut = (orig_len as usize).saturating_sub(data.len());
    Frame {
        number,
        time,
        ip_len: if ip.is_empty() { 0 } else { ip.len() + cut },
        ip,
        comment: None,
        inbound: None,
    }
}

/// An interface's timestamp unit (`if_tsresol`, pcapng §4.2; microseconds when absent):
/// a negative power of 10 or of 2.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Unit {
    Decimal(u32),
    Binary(u32),
}

impl Unit {
    fn of(resol: Option<u8>) -> Unit {
        match resol {
            None => Unit::Decimal(6),
            Some(r) if r & 0x80 == 0 => Unit::Decimal(u32::from(r)),
            Some(r) => Unit::Binary(u32::from(r & 0x7f)),
        }
    }

    /// `count` units as a duration, in integers: a float loses tenths of a microsecond on
    /// today's timestamps (some 1.8e18 ns since 1970), enough to make two captures of the
    /// same packets disagree.
    fn duration(self, count: u64) -> Duration {
        let count = u128::from(count);
        let nanos = match self {
            Unit::Decimal(r) if r <= 9 => count * 10u128.pow(9 - r),
            Unit::Decimal(r) => count / 10u128.pow((r - 9).min(38)),
            Unit::Binary(r) => (count * 1_000_000_000) >> r.min(127),
        };
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

fn read_pcapng(name: &str, input: impl Read) -> Result<Vec<Frame>, ReadError> {
    let mut reader = PcapNgReader::new(input).map_err(|e| damaged(name, 0, e))?;
    // Per interface: its link type and timestamp unit.
    let mut interfaces: Vec<(DataLink, Unit)> = Vec::new();
    let mut frames = Vec::new();
    while let Some(block) = reader.next_block() {
        let block = block.map_err(|e| damaged(name, frames.len(), e))?;
        let (interface, raw, data, orig_len, options) = match block {
            Block::SectionHeader(_) => {
                interfaces.clear();
                continue;
            }
            Block::InterfaceDescription(idb) => {
                let resol = idb.options.iter().find_map(|o| match o {
                    InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
                    _ => None,
                });
                interfaces.push((idb.linktype, Unit::of(resol)));
                continue;
            }
            Block::EnhancedPacket(epb) => (
                epb.interface_id as usize,
                // pcap-file hands the raw count as nanoseconds; the unit is the interface's.
                u64::try_from(epb.timestamp.as_nanos()).unwrap_or(u64::MAX),
                epb.data,
                epb.original_len,
                epb.options,
            ),
            Block::SimplePacket(spb) => (0, 0, spb.data, spb.original_len, Vec::new()),
            _ => continue,
        };
        let Some(&(link, unit)) = interfaces.get(interface) else {
            return Err(damaged(
                name,
                frames.len(),
                "a packet names an interface that was never described",
            ));
        };
        if !readable(link) {
            return Err(ReadError::LinkType(name.to_owned(), link));
        }
        let mut f = frame(frames.len() + 1, unit.duration(raw), link, &data, orig_len);
        for o in options {
            match o {
                EnhancedPacketOption::Comment(c) => f.comment = Some(c.into_owned()),
                EnhancedPacketOption::Flags(flags) => match flags & 3 {
                    1 => f.inbound = Some(true),
                    2 => f.inbound = Some(false),
                    _ => {}
                },
                _ => {}
            }
        }
        frames.push(f);
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_truncation_are_errors_that_say_so() {
        let dir = std::env::temp_dir().join(format!("synack-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("garbage");
        std::fs::write(&garbage, b"GET / HTTP/1.1\r\n").unwrap();
        let e = read(&garbage).unwrap_err().to_string();
        assert!(e.contains("is not a pcap or pcapng capture"), "{e}");
        let empty = dir.join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(read(&empty).unwrap_err().to_string().contains("empty"));
        // A pcapng section header cut in half.
        let cut = dir.join("cut");
        std::fs::write(&cut, [0x0a, 0x0d, 0x0d, 0x0a, 0x1c, 0, 0, 0, 0x4d, 0x3c]).unwrap();
        let e = read(&cut).unwrap_err().to_string();
        assert!(e.contains("damaged or cut short"), "{e}");
        assert!(
            read(&dir.join("missing"))
                .unwrap_err()
                .to_string()
                .contains("cannot open")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A minimal IPv4 header (20 bytes, protocol TCP) to frame.
    fn ipv4() -> Vec<u8> {
        let mut ip = vec![0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0];
        ip.extend_from_slice(&[10, 77, 0, 1, 10, 77, 0, 2]);
        ip
    }

    #[test]
    fn every_framing_gives_the_ip_packet_inside() {
        let ip = ipv4();
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x08, 0x00]);
        eth.extend_from_slice(&ip);
        let mut vlan = vec![0u8; 12];
        vlan.extend_from_slice(&[0x81, 0x00, 0x00, 0x07, 0x08, 0x00]);
        vlan.extend_from_slice(&ip);
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x08, 0x00]);
        sll.extend_from_slice(&ip);
        let mut sll2 = vec![0x08, 0x00];
        sll2.extend_from_slice(&[0u8; 18]);
        sll2.extend_from_slice(&ip);
        let mut lo = vec![2, 0, 0, 0];
        lo.extend_from_slice(&ip);
        for (link, frame) in [
            (DataLink::RAW, &ip),
            (DataLink::IPV4, &ip),
            (DataLink::ETHERNET, &eth),
            (DataLink::ETHERNET, &vlan),
            (DataLink::LINUX_SLL, &sll),
            (DataLink::LINUX_SLL2, &sll2),
            (DataLink::NULL, &lo),
        ] {
            assert_eq!(ip_of(link, frame), Some(&ip[..]), "{link:?}");
        }
        // ARP in Ethernet, IPv6 in SLL: not IPv4, not read.
        let mut arp = eth.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(ip_of(DataLink::ETHERNET, &arp), None);
        sll[14..16].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(ip_of(DataLink::LINUX_SLL, &sll), None);
    }

    #[test]
    fn a_legacy_pcap_of_ethernet_frames_reads_back() {
        use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
        let dir = std::env::temp_dir().join(format!("synack-pcap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("eth.pcap");
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&ipv4());
        let header = PcapHeader {
            datalink: DataLink::ETHERNET,
            ..Default::default()
        };
        let mut w = PcapWriter::with_header(std::fs::File::create(&path).unwrap(), header).unwrap();
        for ms in [0u64, 1500] {
            let t = Duration::from_millis(ms);
            w.write_packet(&PcapPacket::new(t, frame.len() as u32, &frame))
                .unwrap();
        }
        drop(w);
        let frames = read(&path).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].time - frames[0].time, Duration::from_millis(1500));
        assert_eq!(frames[0].ip, ipv4());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A pcap of `link` frames, each (data captured, original length), with a snap length.
    fn pcap(link: DataLink, snaplen: u32, frames: &[(Vec<u8>, u32)]) -> Vec<u8> {
        use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
        let header = PcapHeader {
            datalink: link,
            snaplen,
            ..Default::default()
        };
        let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
        for (i, (data, orig)) in frames.iter().enumerate() {
            let t = Duration::from_millis(i as u64);
            w.write_packet(&PcapPacket::new(t, *orig, data)).unwrap();
        }
        w.into_writer()
    }

    /// A TCP/IPv4 packet with `payload` bytes of data.
    fn tcp_packet(payload: usize) -> Vec<u8> {
        let mut ip = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1000, 80, 1, 65535)
            .write(&mut ip, &vec![0u8; payload])
            .unwrap();
        ip
    }

    #[test]
    fn packets_cut_by_a_snap_length_are_read_with_their_length_on_the_wire() {
        // tcpdump -s 96 on Ethernet: 96 bytes kept of a 1514-byte frame.
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x08, 0x00]);
        eth.extend_from_slice(&tcp_packet(1460));
        let cut = eth[..96].to_vec();
        let file = pcap(DataLink::ETHERNET, 96, &[(cut, eth.len() as u32)]);
        let frames = read_from("cut.pcap", &file[..]).unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].ip.len(), 96 - 14);
        assert_eq!(frames[0].ip_len, 1500);
        // And in pcapng, where the block carries the original length.
        let frames = read_from("cut.pcapng", &pcapng(&eth[..96], eth.len() as u32)[..]).unwrap();
        assert_eq!((frames[0].ip.len(), frames[0].ip_len), (82, 1500));
    }

    fn pcapng(data: &[u8], orig: u32) -> Vec<u8> {
        use pcap_file::pcapng::PcapNgWriter;
        use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
        use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
        let mut w = PcapNgWriter::new(Vec::new()).unwrap();
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 96,
            options: vec![],
        })
        .unwrap();
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_micros(5),
            original_len: orig,
            data: data.to_vec().into(),
            options: vec![],
        })
        .unwrap();
        w.into_inner()
    }

    #[test]
    fn frames_shorter_than_their_link_header_are_not_ip() {
        // The fuzzer's 42-byte file: a pcap of one 2-byte SLL2 frame, `08 00`.
        let file = pcap(DataLink::LINUX_SLL2, 65535, &[(vec![0x08, 0x00], 2)]);
        assert_eq!(file.len(), 42);
        let frames = read_from("sll2.pcap", &file[..]).unwrap();
        assert!(frames[0].ip.is_empty());
        for link in [
            DataLink::RAW,
            DataLink::ETHERNET,
            DataLink::LINUX_SLL,
            DataLink::LINUX_SLL2,
            DataLink::NULL,
            DataLink::LOOP,
        ] {
            for len in 0..=20 {
                let mut data = vec![0x45u8; len];
                // Each framing's IPv4 marker where it looks for it.
                for at in [0, 12, 14] {
                    if at + 2 <= len {
                        data[at..at + 2].copy_from_slice(&[0x08, 0x00]);
                    }
                }
                let _ = ip_of(link, &data);
            }
        }
        // An original length shorter than what was captured is a writer's mistake: the
        // bytes count.
        let ip = tcp_packet(10);
        let mut file = pcap(DataLink::RAW, 65535, &[(ip.clone(), ip.len() as u32)]);
        // The record's original length: after the 24-byte file header and three other
        // fields, in the byte order the magic number shows.
        let one = if file[0] == 0xa1 {
            1u32.to_be_bytes()
        } else {
            1u32.to_le_bytes()
        };
        file[36..40].copy_from_slice(&one);
        let frames = read_from("short.pcap", &file[..]).unwrap();
        assert_eq!(frames[0].ip_len, ip.len());
    }

    /// Mutated captures (bytes flipped, cut anywhere, lengths made huge) go through the
    /// reader and every analysis without a panic: an error or a result, never a crash.
    #[test]
    fn damaged_captures_never_panic() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/samples");
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            // xorshift64*: reproducible, no dependency.
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        for name in ["http-journey.pcapng", "https-journey.pcapng"] {
            let good = std::fs::read(dir.join(name)).unwrap();
            for round in 0..300 {
                let mut bad = good.clone();
                match round % 3 {
                    0 => {
                        for _ in 0..1 + next() % 8 {
                            let at = (next() % bad.len() as u64) as usize;
                            bad[at] ^= 1 << (next() % 8);
                        }
                    }
                    1 => bad.truncate((next() % good.len() as u64) as usize),
                    _ => {
                        let at = (next() % (bad.len() as u64 - 4)) as usize;
                        bad[at..at + 4].copy_from_slice(&[0xff, 0xff, 0xff, 0x7f]);
                    }
                }
                analyse_all(&bad);
            }
        }
        // Every framing of a real packet, cut at every length.
        let ip = tcp_packet(100);
        for link in [DataLink::RAW, DataLink::LINUX_SLL2, DataLink::ETHERNET] {
            let mut framed = match link {
                DataLink::LINUX_SLL2 => [vec![0x08, 0x00], vec![0; 18]].concat(),
                DataLink::ETHERNET => [vec![0; 12], vec![0x08, 0x00]].concat(),
                _ => Vec::new(),
            };
            framed.extend_from_slice(&ip);
            for len in 0..framed.len() {
                let file = pcap(
                    link,
                    65535,
                    &[(framed[..len].to_vec(), framed.len() as u32)],
                );
                analyse_all(&file);
            }
        }
    }

    fn analyse_all(file: &[u8]) {
        use crate::analyze::*;
        let Ok(frames) = read_from("fuzz", file) else {
            return;
        };
        let convs = conversations(&frames);
        let how = Ladder::default();
        let _ = ladder_text(&convs, &how);
        let _ = ladder_svg(&convs, &how);
        for c in &convs {
            if let Conversation::Tcp(c) = c {
                let _ = stats_text(1, &stats(c));
                let _ = plot_svg(c, "fuzz", Window::default());
                let _ = plot_svg(
                    c,
                    "fuzz",
                    Window {
                        from: Some(0.001),
                        to: Some(0.002),
                    },
                );
            }
        }
    }

    #[test]
    fn timestamp_units() {
        assert_eq!(Unit::of(None), Unit::Decimal(6));
        let t = 1_780_000_000_123_457u64;
        assert_eq!(
            Unit::of(None).duration(t),
            Duration::from_micros(t),
            "to the microsecond"
        );
        assert_eq!(
            Unit::of(Some(9)).duration(t * 1000 + 1),
            Duration::from_nanos(t * 1000 + 1)
        );
        assert_eq!(Unit::of(Some(12)).duration(5000), Duration::from_nanos(5));
        assert_eq!(
            Unit::of(Some(0x80 | 10)).duration(1024),
            Duration::from_secs(1)
        );
        // Nonsense units do not panic.
        let _ = Unit::of(Some(255)).duration(u64::MAX);
        let _ = Unit::of(Some(127)).duration(u64::MAX);
    }
}
