//! The pcapng file: one section, one Raw IP interface with nanosecond timestamps, and an
//! Enhanced Packet Block per packet carrying its direction and, where it has one, a comment.
//!
//! Blocks are encoded on the stack's thread into 1 MiB chunks of memory; a writer thread
//! puts the chunks in the file and hands them back for reuse. Copying a gigabyte into the
//! page cache costs the kernel more than the stack spends on the packets themselves, so it
//! happens on the other core. The chunk queue is bounded: a disk slower than the traffic
//! slows the stack down rather than losing packets from the capture or growing memory.

use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::Endianness;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};

use crate::observe::Direction;

/// Capture writes are batched into chunks of this much memory, one write(2) each.
const CHUNK: usize = 1 << 20;

/// Chunks in flight between the stack and the writer thread: 8 MiB absorbs a burst while
/// the disk catches up.
const CHUNKS: usize = 8;

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

/// Zero bytes up to the next multiple of 4: pcapng aligns every field to 32 bits.
fn pad4(buf: &mut Vec<u8>) {
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// One option: code, length, value, padding (§3.5).
fn push_option(buf: &mut Vec<u8>, code: u16, value: &[u8]) {
    buf.extend_from_slice(&code.to_le_bytes());
    buf.extend_from_slice(&(value.len() as u16).to_le_bytes());
    buf.extend_from_slice(value);
    pad4(buf);
}

/// What the capture's interface block says about the link.
pub struct SinkInfo<'a> {
    pub interface: &'a str,
    pub description: String,
}

/// What the stack sends the writer thread.
enum ToWriter {
    /// Encoded blocks to append.
    Chunk(Vec<u8>),
    /// Make everything sent so far readable in the file (the stack is idle or finishing).
    Sync,
}

/// The writer thread's end: chunks go over, emptied ones (or the first error) come back.
struct Writer {
    to: SyncSender<ToWriter>,
    empty: Receiver<io::Result<Vec<u8>>>,
    thread: JoinHandle<io::Result<()>>,
    /// Chunks that exist; a new one is made only while fewer than [`CHUNKS`].
    chunks: usize,
    /// Times the stack had to wait for the writer: the disk was slower than the traffic.
    stalls: u64,
}

/// O_DIRECT wants buffers, offsets and lengths aligned to the device's logical block;
/// 4 KiB covers every device Linux has.
const ALIGN: usize = 4096;

/// The writer thread's file. Whole [`CHUNK`]-sized blocks go to disk through O_DIRECT,
/// which skips the page-cache copy that costs this kind of machine ~0.7 s of CPU per GB
/// (against ~0.1 s); the partial last block is written through a plain descriptor at
/// each sync and rewritten whole once it fills. Where the filesystem refuses O_DIRECT
/// (tmpfs), every block goes through the plain descriptor.
struct FileSink {
    direct: Option<File>,
    plain: File,
    /// Holds one block; `stage[at..at + CHUNK]` is the aligned region.
    stage: Vec<u8>,
    at: usize,
    fill: usize,
    /// File offset of the block being staged (a multiple of CHUNK).
    pos: u64,
}

impl FileSink {
    fn new(path: &Path, plain: File) -> Self {
        use std::os::unix::fs::OpenOptionsExt;
        let direct = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok();
        let stage = vec![0u8; CHUNK + ALIGN];
        let at = stage.as_ptr().align_offset(ALIGN);
        FileSink {
            direct,
            plain,
            stage,
            at,
            fill: 0,
            pos: 0,
        }
    }

    fn append(&mut self, mut data: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        while !data.is_empty() {
            let n = data.len().min(CHUNK - self.fill);
            let start = self.at + self.fill;
            self.stage[start..start + n].copy_from_slice(&data[..n]);
            self.fill += n;
            data = &data[n..];
            if self.fill == CHUNK {
                let block = &self.stage[self.at..self.at + CHUNK];
                let direct = self
                    .direct
                    .as_ref()
                    .map(|f| f.write_all_at(block, self.pos));
                if !matches!(direct, Some(Ok(()))) {
                    // No O_DIRECT here, or the device refused it: plain writes from now on.
                    self.direct = None;
                    self.plain.write_all_at(block, self.pos)?;
                }
                self.pos += CHUNK as u64;
                self.fill = 0;
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.plain
            .write_all_at(&self.stage[self.at..self.at + self.fill], self.pos)
    }
}

fn spawn_writer(path: &Path, file: File) -> io::Result<Writer> {
    let (to, from_stack) = sync_channel::<ToWriter>(CHUNKS);
    let (empty_tx, empty) = sync_channel::<io::Result<Vec<u8>>>(CHUNKS);
    let mut sink = FileSink::new(path, file);
    let thread = std::thread::Builder::new()
        .name("capture-writer".into())
        .spawn(move || {
            // The stack's thread is the bottleneck of a fast transfer; the writer needs a
            // fraction of a core and has CHUNKS MiB of slack, so it yields to everyone else.
            // SAFETY: setpriority on this thread's own id.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
            // SIGINT and SIGTERM must reach the stack's thread: only there do they wake the
            // poll(2) an idle server sleeps in. Taken here, the stop flag would be set and
            // nobody would look at it.
            // SAFETY: a zeroed sigset filled by sigfillset, applied to this thread only.
            unsafe {
                let mut all: libc::sigset_t = std::mem::zeroed();
                libc::sigfillset(&mut all);
                libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
            }
            for msg in from_stack {
                let result = match msg {
                    ToWriter::Chunk(mut chunk) => sink.append(&chunk).map(|()| {
                        chunk.clear();
                        chunk
                    }),
                    ToWriter::Sync => sink.sync().map(|()| Vec::new()),
                };
                match result {
                    // The stack may have stopped listening (it is finishing); that is fine.
                    Ok(chunk) if chunk.capacity() > 0 => drop(empty_tx.send(Ok(chunk))),
                    Ok(_) => {}
                    Err(e) => {
                        let _ = empty_tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                        return Err(e);
                    }
                }
            }
            sink.sync()
        })?;
    Ok(Writer {
        to,
        empty,
        thread,
        chunks: 1,
        stalls: 0,
    })
}

pub struct PcapngSink {
    path: PathBuf,
    writer: PcapNgWriter<Vec<u8>>,
    file: Option<Writer>,
    packets: u64,
    chunks_sent: u64,
}

impl PcapngSink {
    pub fn create(path: &Path, info: SinkInfo<'_>) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = spawn_writer(path, File::create(path)?)?;
        let section = SectionHeaderBlock {
            // Packet blocks are laid out little-endian below; the section must say so.
            endianness: Endianness::Little,
            options: vec![SectionHeaderOption::UserApplication(Cow::Owned(format!(
                "synack {}",
                env!("CARGO_PKG_VERSION")
            )))],
            ..Default::default()
        };
        let chunk = Vec::with_capacity(CHUNK + 64 * 1024);
        let mut writer = PcapNgWriter::with_section_header(chunk, section).map_err(to_io)?;
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
            file: Some(file),
            packets: 0,
            chunks_sent: 0,
        })
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
    /// The Enhanced Packet Block (pcapng §4.3) is laid out straight into the chunk that
    /// pcap-file's writer writes into, behind the section and interface blocks it wrote:
    /// one copy of the packet. pcap-file's typed writer walks every block twice (once to
    /// learn its length) and copies through a body buffer; on a download that cost a
    /// tenth of the stack's throughput.
    pub fn write_packet(
        &mut self,
        since_epoch: Duration,
        dir: Direction,
        data: &[u8],
        comment: Option<String>,
    ) -> io::Result<()> {
        let ns = since_epoch.as_nanos() as u64;
        let flags = match dir {
            Direction::In => EPB_INBOUND,
            Direction::Out => EPB_OUTBOUND,
        };
        let comment = comment
            .as_deref()
            .map(|c| &c.as_bytes()[..c.len().min(u16::MAX as usize)]);
        let options_len = 8 + comment.map_or(0, |c| 4 + c.len().next_multiple_of(4)) + 4;
        let block_len = (12 + 20 + data.len().next_multiple_of(4) + options_len) as u32;
        let out = self.writer.get_mut();
        for word in [
            ENHANCED_PACKET_BLOCK,
            block_len,
            0, // interface id
            (ns >> 32) as u32,
            ns as u32,
            data.len() as u32, // captured length
            data.len() as u32, // original length
        ] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(data);
        pad4(out);
        push_option(out, EPB_FLAGS, &flags.to_le_bytes());
        if let Some(text) = comment {
            push_option(out, OPT_COMMENT, text);
        }
        out.extend_from_slice(&[0; 4]); // opt_endofopt
        out.extend_from_slice(&block_len.to_le_bytes());
        self.packets += 1;
        if out.len() >= CHUNK {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Writes a Decryption Secrets Block (pcapng §4.7) holding TLS key log lines, so that
    /// Wireshark decrypts the TLS that follows with no other file.
    pub fn write_secrets(&mut self, key_log: &str) -> io::Result<()> {
        let data = key_log.as_bytes();
        let block_len = (12 + 8 + data.len().next_multiple_of(4)) as u32;
        let out = self.writer.get_mut();
        for word in [
            DECRYPTION_SECRETS_BLOCK,
            block_len,
            SECRETS_TLS_KEY_LOG,
            data.len() as u32,
        ] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(data);
        pad4(out);
        out.extend_from_slice(&block_len.to_le_bytes());
        if out.len() >= CHUNK {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Sends the current chunk to the writer thread and takes an empty one: a recycled
    /// chunk if one is back, a new one while there are fewer than [`CHUNKS`], else waits
    /// for the writer (backpressure).
    fn hand_over(&mut self) -> io::Result<()> {
        let Some(w) = self.file.as_mut() else {
            return Err(io::Error::other("capture already finished"));
        };
        let next = match w.empty.try_recv() {
            Ok(chunk) => chunk?,
            Err(TryRecvError::Empty) if w.chunks < CHUNKS => {
                w.chunks += 1;
                Vec::with_capacity(CHUNK + 64 * 1024)
            }
            Err(_) => {
                w.stalls += 1;
                let waited = w.empty.recv();
                waited.map_err(|_| io::Error::other("capture writer stopped"))??
            }
        };
        let full = std::mem::replace(self.writer.get_mut(), next);
        self.chunks_sent += 1;
        w.to.send(ToWriter::Chunk(full))
            .map_err(|_| io::Error::other("capture writer stopped"))
    }

    /// Hands what is encoded to the writer thread and has it make the file whole, so the
    /// file catches up while the stack is idle.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.writer.get_ref().is_empty() {
            return Ok(());
        }
        self.hand_over()?;
        let Some(w) = self.file.as_ref() else {
            return Ok(());
        };
        w.to.send(ToWriter::Sync)
            .map_err(|_| io::Error::other("capture writer stopped"))
    }

    /// Writes everything and waits for the writer thread: after this the file is a
    /// complete pcapng.
    pub fn finish(&mut self) -> io::Result<()> {
        let Some(w) = self.file.take() else {
            return Ok(());
        };
        let last = std::mem::take(self.writer.get_mut());
        let sent = if last.is_empty() {
            Ok(())
        } else {
            w.to.send(ToWriter::Chunk(last))
        };
        drop(w.to);
        log::debug!(
            "capture {}: the stack waited for the disk {} times",
            self.path.display(),
            w.stalls
        );
        let joined = w
            .thread
            .join()
            .map_err(|_| io::Error::other("capture writer panicked"))?;
        sent.map_err(|_| io::Error::other("capture writer stopped early"))?;
        joined
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
        sink.write_packet(
            t,
            Direction::In,
            b"abcde",
            Some("SYN, handshake 1/3".into()),
        )
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
}
