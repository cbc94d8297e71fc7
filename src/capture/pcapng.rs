//! The pcapng file: one section, one Raw IP interface with nanosecond timestamps, and an
//! Enhanced Packet Block per packet carrying its direction and, where it has one, a comment.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::pcapng::{Block, PcapNgWriter};

use crate::observe::Direction;

/// Capture writes are batched into this much memory before a write(2).
const WRITE_BUFFER: usize = 1 << 20;

/// pcapng `epb_flags` (RFC draft-ietf-opsawg-pcapng §4.3.1): bits 0-1 are the direction.
const EPB_INBOUND: u32 = 0b01;
const EPB_OUTBOUND: u32 = 0b10;

/// What the capture's interface block says about the link.
pub struct SinkInfo<'a> {
    pub interface: &'a str,
    pub description: String,
}

pub struct PcapngSink {
    path: PathBuf,
    writer: PcapNgWriter<BufWriter<File>>,
    /// Reused for every packet's options, so writing a packet allocates nothing.
    options: Vec<EnhancedPacketOption<'static>>,
    packets: u64,
}

impl PcapngSink {
    pub fn create(path: &Path, info: SinkInfo<'_>) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = BufWriter::with_capacity(WRITE_BUFFER, File::create(path)?);
        let section = SectionHeaderBlock {
            options: vec![SectionHeaderOption::UserApplication(Cow::Owned(format!(
                "synack {}",
                env!("CARGO_PKG_VERSION")
            )))],
            ..Default::default()
        };
        let mut writer = PcapNgWriter::with_section_header(file, section).map_err(to_io)?;
        let interface = InterfaceDescriptionBlock {
            linktype: DataLink::RAW,
            snaplen: 0,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Owned(info.interface.to_owned())),
                InterfaceDescriptionOption::IfDescription(Cow::Owned(info.description)),
                // pcap-file writes nanoseconds; without this Wireshark reads them as
                // microseconds and every packet lands in the year 2500-something.
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        };
        writer.write_pcapng_block(interface).map_err(to_io)?;
        Ok(PcapngSink {
            path: path.to_owned(),
            writer,
            options: Vec::with_capacity(2),
            packets: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Writes one packet. `since_epoch` is the capture time since the Unix epoch.
    pub fn write_packet(
        &mut self,
        since_epoch: Duration,
        dir: Direction,
        data: &[u8],
        comment: Option<String>,
    ) -> io::Result<()> {
        let mut options = std::mem::take(&mut self.options);
        options.push(EnhancedPacketOption::Flags(match dir {
            Direction::In => EPB_INBOUND,
            Direction::Out => EPB_OUTBOUND,
        }));
        if let Some(text) = comment {
            options.push(EnhancedPacketOption::Comment(Cow::Owned(text)));
        }
        let block = Block::EnhancedPacket(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: since_epoch,
            original_len: data.len() as u32,
            data: Cow::Borrowed(data),
            options,
        });
        let result = self.writer.write_block(&block).map(drop).map_err(to_io);
        if let Block::EnhancedPacket(epb) = block {
            let mut options = epb.options;
            options.clear();
            // An empty Vec collected in place keeps its allocation for the next packet.
            self.options = options.into_iter().map(|o| o.into_owned()).collect();
        }
        self.packets += 1;
        result
    }

    /// Pushes everything buffered to the file. After this the file is a complete pcapng.
    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.get_mut().flush()
    }
}

fn to_io(e: pcap_file::PcapError) -> io::Error {
    match e {
        pcap_file::PcapError::IoError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}
