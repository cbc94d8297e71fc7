//! The pcapng file: one section, one Raw IP interface with nanosecond timestamps, and an
//! Enhanced Packet Block per packet carrying its direction and, where it has one, a comment.
//!
//! Blocks are encoded on the stack's thread straight into the chunks the writer thread
//! hands to the disk (see [`super::writer`]): one copy of each packet.

use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::Endianness;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};

use super::writer::{CHUNK, Chunk, Writer};
use crate::observe::Direction;

/// pcapng block and option codes (draft-ietf-opsawg-pcapng §4.3, §3.5).
const ENHANCED_PACKET_BLOCK: u32 = 6;
const DECRYPTION_SECRETS_BLOCK: u32 = 0x0000_000A;
/// Secrets type "TLSK": the NSS key log format (pcapng §4.7).
const SECRETS_TLS_KEY_LOG: u32 = 0x544C_534B;
const OPT_COMMENT: u16 = 1;
const EPB_FLAGS: u16 = 2;
/// `epb_flags` bits 0-1 are the direction (§4.3.1).
const EPB_INBOUND: u32 = 0b01;
const EPB_OUTBOUND: u32 = 0b10;

/// Zeros to pad a field of `len` bytes to 32 bits, as pcapng aligns every field.
fn padding(len: usize) -> &'static [u8] {
    &[0; 3][..len.next_multiple_of(4) - len]
}

/// Little-endian 32-bit words laid end to end.
fn words<const N: usize, const B: usize>(w: [u32; N]) -> [u8; B] {
    let mut out = [0; B];
    for (bytes, word) in out.chunks_exact_mut(4).zip(w) {
        bytes.copy_from_slice(&word.to_le_bytes());
    }
    out
}

/// An option's code and length (§3.5).
fn option_header(code: u16, len: usize) -> [u8; 4] {
    let mut out = [0; 4];
    out[..2].copy_from_slice(&code.to_le_bytes());
    out[2..].copy_from_slice(&(len as u16).to_le_bytes());
    out
}

/// What the capture's interface block says about the link.
pub struct SinkInfo<'a> {
    pub interface: &'a str,
    pub description: String,
}

pub struct PcapngSink {
    path: PathBuf,
    /// The chunk being filled, and its offset in the file.
    chunk: Chunk,
    offset: u64,
    writer: Option<Writer>,
    packets: u64,
    chunks_sent: u64,
}

impl PcapngSink {
    pub fn create(path: &Path, info: SinkInfo<'_>) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let (writer, chunk) = Writer::spawn(path, File::create(path)?)?;
        let section = SectionHeaderBlock {
            // Packet blocks are laid out little-endian below; the section must say so.
            endianness: Endianness::Little,
            options: vec![SectionHeaderOption::UserApplication(Cow::Owned(format!(
                "synack {}",
                env!("CARGO_PKG_VERSION")
            )))],
            ..Default::default()
        };
        let mut head = PcapNgWriter::with_section_header(Vec::new(), section).map_err(to_io)?;
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
        head.write_pcapng_block(interface).map_err(to_io)?;
        let mut sink = PcapngSink {
            path: path.to_owned(),
            chunk,
            offset: 0,
            writer: Some(writer),
            packets: 0,
            chunks_sent: 0,
        };
        sink.put(head.get_ref())?;
        Ok(sink)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Chunks handed to the writer thread so far (the file is moving while this grows).
    pub fn chunks_sent(&self) -> u64 {
        self.chunks_sent
    }

    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Writes one packet. `since_epoch` is the capture time since the Unix epoch.
    ///
    /// The Enhanced Packet Block (pcapng §4.3) is laid out here rather than by pcap-file's
    /// typed writer, which walks every block twice (once to learn its length) and copies
    /// through a body buffer; on a download that cost a tenth of the stack's throughput.
    pub fn write_packet(
        &mut self,
        since_epoch: Duration,
        dir: Direction,
        data: &[u8],
        comment: Option<&str>,
    ) -> io::Result<()> {
        let ns = since_epoch.as_nanos() as u64;
        let flags = match dir {
            Direction::In => EPB_INBOUND,
            Direction::Out => EPB_OUTBOUND,
        };
        let comment = comment.map(|c| &c.as_bytes()[..c.len().min(u16::MAX as usize)]);
        let options_len = 8 + comment.map_or(0, |c| 4 + c.len().next_multiple_of(4)) + 4;
        let block_len = (12 + 20 + data.len().next_multiple_of(4) + options_len) as u32;
        let head: [u8; 28] = words([
            ENHANCED_PACKET_BLOCK,
            block_len,
            0, // interface id
            (ns >> 32) as u32,
            ns as u32,
            data.len() as u32, // captured length
            data.len() as u32, // original length
        ]);
        self.put(&head)?;
        self.put(data)?;
        // The data's padding and the direction option, in one piece.
        let pad = data.len().next_multiple_of(4) - data.len();
        let mut after = [0u8; 3 + 8];
        after[pad..pad + 4].copy_from_slice(&option_header(EPB_FLAGS, 4));
        after[pad + 4..pad + 8].copy_from_slice(&flags.to_le_bytes());
        self.put(&after[..pad + 8])?;
        if let Some(text) = comment {
            self.put(&option_header(OPT_COMMENT, text.len()))?;
            self.put(text)?;
            self.put(padding(text.len()))?;
        }
        // opt_endofopt, then the block's length again.
        self.put(&words::<2, 8>([0, block_len]))?;
        self.chunk.prefetch_ahead();
        self.packets += 1;
        Ok(())
    }

    /// Writes a Decryption Secrets Block (pcapng §4.7) holding TLS key log lines, so that
    /// Wireshark decrypts the TLS that follows with no other file.
    pub fn write_secrets(&mut self, key_log: &str) -> io::Result<()> {
        let data = key_log.as_bytes();
        let block_len = (12 + 8 + data.len().next_multiple_of(4)) as u32;
        let head: [u8; 16] = words([
            DECRYPTION_SECRETS_BLOCK,
            block_len,
            SECRETS_TLS_KEY_LOG,
            data.len() as u32,
        ]);
        self.put(&head)?;
        self.put(data)?;
        self.put(padding(data.len()))?;
        self.put(&block_len.to_le_bytes())
    }

    /// Appends encoded bytes to the capture, handing each chunk that fills to the writer.
    #[inline]
    fn put(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        loop {
            bytes = &bytes[self.chunk.put(bytes)..];
            if !self.chunk.is_full() {
                return Ok(());
            }
            self.hand_over()?;
            if bytes.is_empty() {
                return Ok(());
            }
        }
    }

    /// Sends the full chunk to the writer thread and takes an empty one.
    fn hand_over(&mut self) -> io::Result<()> {
        let Some(w) = self.writer.as_mut() else {
            return Err(io::Error::other("capture already finished"));
        };
        w.swap_full(&mut self.chunk, self.offset)?;
        self.offset += CHUNK as u64;
        self.chunks_sent += 1;
        Ok(())
    }

    /// Has the writer thread put what is encoded so far in the file, so the file catches
    /// up while the stack is idle.
    pub fn flush(&mut self) -> io::Result<()> {
        match self.writer.as_ref() {
            Some(w) if !self.chunk.filled().is_empty() => {
                w.send_tail(self.chunk.filled(), self.offset)
            }
            _ => Ok(()),
        }
    }

    /// Writes everything and waits for the writer thread: after this the file is a
    /// complete pcapng.
    pub fn finish(&mut self) -> io::Result<()> {
        let sent = self.flush();
        let Some(w) = self.writer.take() else {
            return Ok(());
        };
        let stalls = w.finish()?;
        log::debug!(
            "capture {}: the stack waited for the disk {stalls} times",
            self.path.display()
        );
        sent
    }
}

impl Drop for PcapngSink {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            log::error!("capture {}: {e}", self.path.display());
        }
    }
}

fn to_io(e: pcap_file::PcapError) -> io::Error {
    match e {
        pcap_file::PcapError::IoError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
    use pcap_file::pcapng::{Block, PcapNgReader};

    #[test]
    fn pcap_file_reads_back_what_we_lay_out() {
        let path =
            std::env::temp_dir().join(format!("synack-pcapng-{}.pcapng", std::process::id()));
        let info = SinkInfo {
            interface: "tun9",
            description: "test".into(),
        };
        let mut sink = PcapngSink::create(&path, info).unwrap();
        let t = Duration::new(1_795_000_000, 123_456_789);
        sink.write_packet(t, Direction::In, b"abcde", Some("SYN, handshake 1/3"))
            .unwrap();
        sink.write_packet(t, Direction::Out, &[7; 1500], None)
            .unwrap();
        sink.finish().unwrap();
        let mut reader = PcapNgReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let mut packets = Vec::new();
        while let Some(block) = reader.next_block() {
            if let Block::EnhancedPacket(epb) = block.unwrap() {
                packets.push(epb.into_owned());
            }
        }
        std::fs::remove_file(&path).unwrap();
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[0].data.as_ref(), b"abcde");
        assert_eq!(packets[0].original_len, 5);
        assert_eq!(packets[0].timestamp, t);
        assert!(
            packets[0]
                .options
                .contains(&EnhancedPacketOption::Flags(EPB_INBOUND))
        );
        assert!(
            packets[0]
                .options
                .contains(&EnhancedPacketOption::Comment("SYN, handshake 1/3".into()))
        );
        assert_eq!(packets[1].data.len(), 1500);
        assert_eq!(
            packets[1].options,
            vec![EnhancedPacketOption::Flags(EPB_OUTBOUND)]
        );
    }

    /// Blocks that straddle chunks, tails written at idle syncs and later covered by the
    /// full chunk, and a partial last chunk: the file reads back packet for packet.
    #[test]
    fn chunks_and_syncs_make_one_whole_file() {
        let path = std::env::temp_dir().join(format!(
            "synack-pcapng-chunks-{}.pcapng",
            std::process::id()
        ));
        let info = SinkInfo {
            interface: "tun9",
            description: "test".into(),
        };
        let mut sink = PcapngSink::create(&path, info).unwrap();
        let t = Duration::new(1_795_000_000, 0);
        // Odd sizes, so that block boundaries fall everywhere in a chunk.
        let size = |i: usize| 1 + (i * 7919) % 1499;
        let count = 3000;
        for i in 0..count {
            let data = vec![i as u8; size(i)];
            let comment = (i % 100 == 0).then(|| format!("packet {i}"));
            sink.write_packet(t, Direction::Out, &data, comment.as_deref())
                .unwrap();
            if i % 250 == 0 {
                sink.flush().unwrap();
            }
        }
        assert!(sink.chunks_sent() >= 2, "the test must cross chunks");
        sink.finish().unwrap();
        let mut reader = PcapNgReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let mut seen = 0;
        while let Some(block) = reader.next_block() {
            if let Block::EnhancedPacket(epb) = block.unwrap() {
                assert_eq!(epb.data.as_ref(), vec![seen as u8; size(seen)].as_slice());
                let comment = EnhancedPacketOption::Comment(format!("packet {seen}").into());
                assert_eq!(epb.options.contains(&comment), seen % 100 == 0);
                seen += 1;
            }
        }
        std::fs::remove_file(&path).unwrap();
        assert_eq!(seen, count);
    }
}
