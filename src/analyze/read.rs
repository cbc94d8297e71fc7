//! Reading any capture: pcap or pcapng (synack's, tcpdump's, Wireshark's), with Raw IP,
//! IPv4, Ethernet, Linux cooked (SLL, SLL2) or BSD loopback framing, down to the IPv4
//! packets inside. A file that is not a capture, or is cut short, is a clear error.

use std::io::{BufRead, Read};
use std::path::Path;
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};

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
    /// The IPv4 packet (link framing removed); empty if it was not IPv4.
    pub ip: Vec<u8>,
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
        DataLink::LINUX_SLL2 => (data.get(0..2)? == [0x08, 0x00]).then(|| &data[20..])?,
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
    let mut file = std::fs::File::open(path)
        .map(|f| std::io::BufReader::with_capacity(1 << 20, f))
        .map_err(|e| ReadError::Open(name.clone(), e))?;
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
    let mut frames = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let packet = packet.map_err(|e| damaged(name, frames.len(), e))?;
        frames.push(Frame {
            number: frames.len() + 1,
            time: packet.timestamp,
            ip: ip_of(link, &packet.data)
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
            comment: None,
            inbound: None,
        });
    }
    Ok(frames)
}

/// Nanoseconds per unit of an interface's timestamps (`if_tsresol`, pcapng §4.2;
/// microseconds when absent).
fn ns_per_unit(resol: Option<u8>) -> f64 {
    match resol {
        None => 1000.0,
        Some(r) if r & 0x80 == 0 => 1e9 / 10f64.powi(i32::from(r)),
        Some(r) => 1e9 / 2f64.powi(i32::from(r & 0x7f)),
    }
}

fn read_pcapng(name: &str, input: impl Read) -> Result<Vec<Frame>, ReadError> {
    let mut reader = PcapNgReader::new(input).map_err(|e| damaged(name, 0, e))?;
    // Per interface: its link type and timestamp unit.
    let mut interfaces: Vec<(DataLink, f64)> = Vec::new();
    let mut frames = Vec::new();
    while let Some(block) = reader.next_block() {
        let block = block.map_err(|e| damaged(name, frames.len(), e))?;
        let (interface, raw, data, options) = match block {
            Block::SectionHeader(_) => {
                interfaces.clear();
                continue;
            }
            Block::InterfaceDescription(idb) => {
                let resol = idb.options.iter().find_map(|o| match o {
                    InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
                    _ => None,
                });
                interfaces.push((idb.linktype, ns_per_unit(resol)));
                continue;
            }
            Block::EnhancedPacket(epb) => (
                epb.interface_id as usize,
                // pcap-file hands the raw count as nanoseconds; the unit is the interface's.
                epb.timestamp.as_nanos() as f64,
                epb.data.into_owned(),
                epb.options,
            ),
            Block::SimplePacket(spb) => (0, 0.0, spb.data.into_owned(), Vec::new()),
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
        let mut comment = None;
        let mut inbound = None;
        for o in options {
            match o {
                EnhancedPacketOption::Comment(c) => comment = Some(c.into_owned()),
                EnhancedPacketOption::Flags(f) => match f & 3 {
                    1 => inbound = Some(true),
                    2 => inbound = Some(false),
                    _ => {}
                },
                _ => {}
            }
        }
        frames.push(Frame {
            number: frames.len() + 1,
            time: Duration::from_nanos((raw * unit) as u64),
            ip: ip_of(link, &data).map(<[u8]>::to_vec).unwrap_or_default(),
            comment,
            inbound,
        });
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

    #[test]
    fn timestamp_units() {
        assert_eq!(ns_per_unit(None), 1000.0);
        assert_eq!(ns_per_unit(Some(9)), 1.0);
        assert_eq!(ns_per_unit(Some(6)), 1000.0);
    }
}
