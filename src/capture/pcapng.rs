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

use super::DEFAULT_DIR;
use pcap_file::DataLink;
use pcap_file::Endianness;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};

use super::config::{
    CaptureConfig, CaptureError, DEFAULT_FILE_LIMIT, MIN_FILE_LIMIT, Target, ring_path, size,
};
use super::output::{Output, reason};
use super::summary::{Stop, Summary, SummaryHandle};
use super::writer::{Chunk, Start, Writer};
use crate::observe::Direction;

/// pcapng block and option codes (draft-ietf-opsawg-pcapng §4.3, §3.5).
pub(super) const ENHANCED_PACKET_BLOCK: u32 = 6;
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

/// The TLS secrets a ring keeps for the head of each new file, at most: about the last
/// 250 TLS 1.3 connections' (each writes ~1 KiB of key log). A connection older than that
/// which still carries data into a new file does not decrypt there.
const MAX_RING_SECRETS: usize = 256 << 10;

/// The section and interface blocks every file starts with: little-endian, one Raw IP
/// interface with nanosecond timestamps.
fn encode_head(info: SinkInfo<'_>) -> io::Result<Vec<u8>> {
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
    Ok(head.into_inner())
}

/// The latest TLS key log lines, for a ring's next file: bounded, oldest lines dropped
/// first.
#[derive(Default)]
struct RecentSecrets {
    text: String,
    cap: usize,
}

impl RecentSecrets {
    fn add(&mut self, lines: &str) {
        self.text.push_str(lines);
        // Trimmed down to the cap only when twice over it, so that each byte is moved
        // once on average however many handshakes come.
        if self.text.len() > 2 * self.cap {
            let over = self.text.len() - self.cap;
            let cut = self.text[over..]
                .find('\n')
                .map_or(self.text.len(), |nl| over + nl + 1);
            self.text.drain(..cut);
        }
    }
}

/// An opened target: where the bytes go, and what to call it.
struct Opened {
    out: Output,
    path: PathBuf,
    stream: bool,
}

/// Opens what `config` names: stdout, a stream into a FIFO (or any file that is not a
/// regular one), or a regular file (a ring's first).
fn open(config: &CaptureConfig) -> Result<Opened, CaptureError> {
    let files = config.files.max(1);
    let path = match &config.target {
        Target::Stdout => {
            if files > 1 {
                return Err(CaptureError::RingOnStream(files, "stdout".into()));
            }
            let out = Output::Stream(take_stdout()?);
            return Ok(Opened {
                out,
                path: PathBuf::from("-"),
                stream: true,
            });
        }
        Target::Path(path) => path,
    };
    let regular = std::fs::metadata(path).map_or(true, |m| m.is_file());
    if !regular {
        if files > 1 {
            return Err(CaptureError::RingOnStream(
                files,
                path.display().to_string(),
            ));
        }
        // A FIFO blocks here until a reader opens it.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| CaptureError::Stream(path.display().to_string(), reason(&e)))?;
        return Ok(Opened {
            out: Output::Stream(file),
            path: path.clone(),
            stream: true,
        });
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Only the default directory is made: a path the user gave in a directory that
        // does not exist is more likely a typo than a wish (and root would make it).
        if dir == Path::new(DEFAULT_DIR) {
            std::fs::create_dir_all(dir)
                .map_err(|e| CaptureError::Create(path.clone(), reason(&e)))?;
        } else if !dir.is_dir() {
            return Err(CaptureError::NoDirectory(dir.to_path_buf()));
        }
    }
    let path = if files > 1 {
        ring_path(path, 1)
    } else {
        path.clone()
    };
    let out =
        Output::create_file(&path).map_err(|e| CaptureError::Create(path.clone(), reason(&e)))?;
    Ok(Opened {
        out,
        path,
        stream: false,
    })
}

/// Takes the process's standard output for the capture: the capture gets a descriptor
/// of its own for it, and descriptor 1 becomes a copy of stderr, so that nothing else
/// printed to stdout can land in the middle of the pcapng stream.
fn take_stdout() -> Result<File, CaptureError> {
    use std::os::fd::FromRawFd;
    let failed = |what: &str| {
        CaptureError::Stream(
            "stdout".into(),
            format!("{what}: {}", io::Error::last_os_error()),
        )
    };
    // SAFETY: isatty, fcntl and dup2 on the standard descriptors, which exist for the
    // life of the process; the new descriptor is owned by the File made from it and
    // by nothing else.
    unsafe {
        if libc::isatty(1) == 1 {
            return Err(CaptureError::Terminal);
        }
        let fd = libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3);
        if fd < 0 {
            return Err(failed("cannot duplicate it"));
        }
        if libc::dup2(2, 1) < 0 {
            libc::close(fd);
            return Err(failed("cannot point it at stderr"));
        }
        Ok(File::from_raw_fd(fd))
    }
}

/// Writes pcapng: into a file, a ring of files, or a stream (stdout, a FIFO).
///
/// Blocks are encoded on the stack's thread into chunks that a writer thread hands to
/// the disk (see [`super::writer`]). The sink checks the limit of the file before each
/// packet (a sum and a comparison), and learns of a failed write once a chunk (or at a
/// flush): no system call and no allocation per packet.
pub struct PcapngSink {
    /// The current file (a ring's latest), or `-` for stdout.
    path: PathBuf,
    /// The path the capture was asked for (a ring's files are named after it).
    base: PathBuf,
    stream: bool,
    /// The most bytes a file may hold (`u64::MAX`: no limit).
    limit: u64,
    /// Files a ring keeps; 1: no ring.
    ring: u32,
    /// The number of a ring's current file (from 1).
    index: u64,
    /// The section and interface blocks every file starts with.
    head: Vec<u8>,
    /// A ring's latest TLS secrets, for the head of each new file.
    secrets: Option<RecentSecrets>,
    /// The chunk being filled, and its offset in the current file.
    chunk: Chunk,
    offset: u64,
    writer: Option<Writer>,
    /// Packets encoded, all files together; and in the current file.
    packets: u64,
    file_packets: u64,
    /// Packets given to the sink, captured or not.
    offered: u64,
    /// Capturing has stopped: the limit, a failed write, or the end.
    stopped: bool,
    limit_hit: bool,
    chunks_sent: u64,
    summary: SummaryHandle,
}

impl PcapngSink {
    /// Opens the capture and writes its section and interface blocks before returning,
    /// so that a disk already full (or a reader already gone) is found here, with one
    /// sentence, rather than after the first chunk.
    pub fn create(config: &CaptureConfig, info: SinkInfo<'_>) -> Result<Self, CaptureError> {
        let head =
            encode_head(info).map_err(|e| CaptureError::Write(target_of(config), reason(&e)))?;
        let Opened {
            mut out,
            path,
            stream,
        } = open(config)?;
        if let Err(e) = out.write_at(&head, 0) {
            if stream {
                return Err(CaptureError::Stream(path.display().to_string(), reason(&e)));
            }
            drop(out);
            let _ = std::fs::remove_file(&path);
            return Err(CaptureError::Write(path, reason(&e)));
        }
        let limit = match (config.limit, stream) {
            (Some(limit), _) => limit.max(MIN_FILE_LIMIT),
            (None, true) => u64::MAX,
            (None, false) => DEFAULT_FILE_LIMIT,
        };
        let ring = config.files.max(1);
        let start = Start {
            out,
            path: if stream && path == Path::new("-") {
                PathBuf::from("stdout")
            } else {
                path.clone()
            },
            head_len: head.len() as u64,
            ring: ring as usize,
        };
        let (writer, chunk) = Writer::spawn(start).map_err(CaptureError::Thread)?;
        let base = match &config.target {
            Target::Path(p) => p.clone(),
            Target::Stdout => PathBuf::from("-"),
        };
        let mut sink = PcapngSink {
            path,
            base,
            stream,
            limit,
            ring,
            index: 1,
            secrets: (ring > 1).then(|| RecentSecrets {
                text: String::new(),
                cap: MAX_RING_SECRETS.min((limit / 4) as usize),
            }),
            head,
            chunk,
            offset: 0,
            writer: Some(writer),
            packets: 0,
            file_packets: 0,
            offered: 0,
            stopped: false,
            limit_hit: false,
            chunks_sent: 0,
            summary: SummaryHandle::default(),
        };
        if stream {
            // The stream has its head already, and a stream cannot be written over.
            sink.offset = sink.head.len() as u64;
        } else {
            // Written again with the first chunk (the same bytes), which keeps the chunks
            // at offsets aligned for O_DIRECT.
            sink.start_file()
                .map_err(|e| CaptureError::Write(sink.path.clone(), reason(&e)))?;
        }
        Ok(sink)
    }

    /// The current file (a ring's latest); `-` for stdout.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the capture goes and how it is bounded, for the line that says so at start.
    pub fn describe(&self) -> String {
        let target = if self.path == Path::new("-") {
            "stdout".to_owned()
        } else {
            self.path.display().to_string()
        };
        match (self.stream, self.limit, self.ring) {
            (true, u64::MAX, _) => target,
            (_, limit, 1) => format!(
                "{target} (up to {}, then capturing stops: --capture-limit)",
                size(limit)
            ),
            (_, limit, ring) => format!(
                "{target} and on, a ring of {ring} files of up to {} each",
                size(limit)
            ),
        }
    }

    /// Chunks handed to the writer thread so far (the file is moving while this grows).
    pub fn chunks_sent(&self) -> u64 {
        self.chunks_sent
    }

    /// Packets captured so far, all files together (packets past the limit or after a
    /// failed write are not).
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Where the capture's [`Summary`] will be once it has finished, for whoever reports
    /// on it after the sink has gone to the tap.
    pub fn summary_handle(&self) -> SummaryHandle {
        self.summary.clone()
    }

    /// Bytes in the current file, encoded or written.
    #[inline]
    fn file_bytes(&self) -> u64 {
        self.offset + self.chunk.len() as u64
    }

    /// Writes one packet. `since_epoch` is the capture time since the Unix epoch.
    ///
    /// The Enhanced Packet Block (pcapng §4.3) is laid out here rather than by pcap-file's
    /// typed writer, which walks every block twice (once to learn its length) and copies
    /// through a body buffer; on a download that cost a tenth of the stack's throughput.
    ///
    /// Past the limit, or once a write has failed, the packet is counted and not captured
    /// (the result is still `Ok`: the capture's troubles are said once, by the sink, and
    /// in its [`Summary`]).
    pub fn write_packet(
        &mut self,
        since_epoch: Duration,
        dir: Direction,
        data: &[u8],
        comment: Option<&str>,
    ) -> io::Result<()> {
        self.offered += 1;
        if self.stopped {
            return Ok(());
        }
        let ns = since_epoch.as_nanos() as u64;
        let flags = match dir {
            Direction::In => EPB_INBOUND,
            Direction::Out => EPB_OUTBOUND,
        };
        let comment = comment.map(|c| &c.as_bytes()[..c.len().min(u16::MAX as usize)]);
        let options_len = 8 + comment.map_or(0, |c| 4 + c.len().next_multiple_of(4)) + 4;
        let block_len = (12 + 20 + data.len().next_multiple_of(4) + options_len) as u32;
        if self.file_bytes() + u64::from(block_len) > self.limit && self.file_packets > 0 {
            self.at_limit()?;
            if self.stopped {
                return Ok(());
            }
        }
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
        self.packets += 1;
        self.file_packets += 1;
        self.chunk.mark_end(self.file_packets);
        self.chunk.prefetch_ahead();
        Ok(())
    }

    /// Writes a Decryption Secrets Block (pcapng §4.7) holding TLS key log lines, so that
    /// Wireshark decrypts the TLS that follows with no other file. A ring also keeps the
    /// latest lines for the head of its next file, so that each file decrypts alone.
    pub fn write_secrets(&mut self, key_log: &str) -> io::Result<()> {
        if self.stopped {
            return Ok(());
        }
        if let Some(recent) = self.secrets.as_mut() {
            recent.add(key_log);
        }
        let block_len = secrets_block_len(key_log);
        if self.file_bytes() + block_len > self.limit && self.file_packets > 0 {
            // A ring's next file starts with these secrets among the recent ones.
            return self.at_limit();
        }
        self.put_secrets(key_log)?;
        self.chunk.mark_end(self.file_packets);
        Ok(())
    }

    fn put_secrets(&mut self, key_log: &str) -> io::Result<()> {
        let data = key_log.as_bytes();
        let block_len = secrets_block_len(key_log) as u32;
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

    /// The current file is as big as it may grow: a ring goes on in its next file; one
    /// file stops capturing, whole up to here.
    fn at_limit(&mut self) -> io::Result<()> {
        if self.ring > 1 {
            return self.rotate();
        }
        self.stopped = true;
        self.limit_hit = true;
        log::warn!(
            "capture {}: the file reached its limit of {} (--capture-limit); capturing stops here and later packets are only counted (--capture-files N keeps a ring of files instead)",
            self.path.display(),
            size(self.limit)
        );
        self.flush()
    }

    /// Ends the current file of a ring and starts the next: its own section, interface
    /// and TLS secrets, so that it opens (and decrypts) alone.
    fn rotate(&mut self) -> io::Result<()> {
        self.hand_over()?;
        self.index += 1;
        self.path = ring_path(&self.base, self.index);
        self.writer
            .as_ref()
            .ok_or_else(finished)?
            .next_file(self.path.clone())?;
        self.offset = 0;
        self.file_packets = 0;
        self.start_file()
    }

    /// Encodes a file's first blocks: the section and interface, and a ring's secrets.
    fn start_file(&mut self) -> io::Result<()> {
        let head = std::mem::take(&mut self.head);
        let put = self.put(&head);
        self.head = head;
        put?;
        if let Some(recent) = self.secrets.as_mut().filter(|r| !r.text.is_empty()) {
            let text = std::mem::take(&mut recent.text);
            let put = self.put_secrets(&text);
            if let Some(recent) = self.secrets.as_mut() {
                recent.text = text;
            }
            put?;
        }
        self.chunk.mark_end(0);
        Ok(())
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

    /// Sends the chunk (full, or the last of a file or a stream's flush) to the writer
    /// thread and takes an empty one; notices if the writer has failed.
    fn hand_over(&mut self) -> io::Result<()> {
        let Some(w) = self.writer.as_mut() else {
            return Err(finished());
        };
        let len = self.chunk.len() as u64;
        w.send_chunk(&mut self.chunk, self.offset)?;
        self.offset += len;
        self.chunks_sent += 1;
        if w.failed() {
            // The writer has said why; from now on packets are only counted.
            self.stopped = true;
        }
        Ok(())
    }

    /// Has the writer thread put what is encoded so far in the file (or the stream), so
    /// the file catches up while the stack is idle and a live reader sees the packets.
    pub fn flush(&mut self) -> io::Result<()> {
        let Some(w) = self.writer.as_ref() else {
            return Ok(());
        };
        if w.failed() {
            self.stopped = true;
            return Ok(());
        }
        if self.chunk.is_empty() {
            return Ok(());
        }
        if self.stream {
            // A stream cannot be written over later: the partial chunk goes as it is.
            let sent = self.chunks_sent;
            self.hand_over()?;
            // Not a chunk that moves the file along on its own (see `chunks_sent`).
            self.chunks_sent = sent;
            return Ok(());
        }
        w.send_tail(self.chunk.filled(), self.offset, self.file_packets)
    }

    /// Writes everything and waits for the writer thread: after this the file is a
    /// complete pcapng (a failed one is cut back to its last whole packet). The
    /// capture's [`Summary`] is then in the [`SummaryHandle`]; an incomplete capture is
    /// also an error, whose message is the summary.
    pub fn finish(&mut self) -> io::Result<()> {
        let Some(mut w) = self.writer.take() else {
            return Ok(());
        };
        self.stopped = true;
        // The last chunk, as full as it is; no empty one is needed in its place.
        let last = std::mem::replace(&mut self.chunk, Chunk::none());
        let sent = w.send_last(last, self.offset);
        let (written, stalls) = w.finish()?;
        sent?;
        log::debug!(
            "capture {}: the stack waited for the disk {stalls} times",
            self.path.display()
        );
        let captured = written.files.iter().map(|f| f.1).sum::<u64>() + written.removed_packets;
        let stop = match written.failure {
            Some(why) => Some(Stop::Failed(why)),
            None if self.limit_hit => Some(Stop::Limit(self.limit)),
            None => None,
        };
        let summary = Summary {
            target: if self.stream && self.base == Path::new("-") {
                "stdout".into()
            } else {
                self.base.display().to_string()
            },
            stream: self.stream,
            files: written.files,
            removed_files: written.removed_files,
            removed_packets: written.removed_packets,
            not_captured: self.offered.saturating_sub(captured),
            stop,
        };
        let complete = summary.complete();
        let said = summary.to_string();
        self.summary.set(summary);
        if complete {
            Ok(())
        } else {
            Err(io::Error::other(said))
        }
    }
}

impl Drop for PcapngSink {
    fn drop(&mut self) {
        // A failed capture has said so when it failed, and its summary says it again.
        let _ = self.finish();
    }
}

/// The name a capture's target goes by before anything is open.
fn target_of(config: &CaptureConfig) -> PathBuf {
    match &config.target {
        Target::Path(p) => p.clone(),
        Target::Stdout => PathBuf::from("-"),
    }
}

fn secrets_block_len(key_log: &str) -> u64 {
    (12 + 8 + key_log.len().next_multiple_of(4)) as u64
}

fn finished() -> io::Error {
    io::Error::other("the capture has already finished")
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
        let mut sink = PcapngSink::create(&CaptureConfig::file(&path), info).unwrap();
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
        let mut sink = PcapngSink::create(&CaptureConfig::file(&path), info).unwrap();
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

    fn info() -> SinkInfo<'static> {
        SinkInfo {
            interface: "tun9",
            description: "test".into(),
        }
    }

    /// A directory of its own for one test.
    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("synack-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Packet `i`: its number in its first four bytes, and a size that varies.
    fn packet(i: u32) -> Vec<u8> {
        let mut data = vec![(i % 251) as u8; 600 + (i as usize * 37) % 900];
        data[..4].copy_from_slice(&i.to_le_bytes());
        data
    }

    /// The blocks of a pcapng, read with pcap-file: the first blocks' kinds (up to the
    /// first packet), and the numbers of the packets.
    fn read_back(bytes: &[u8]) -> (Vec<&'static str>, Vec<u32>) {
        let mut reader = PcapNgReader::new(bytes).expect("a section header first");
        let mut kinds = vec!["section"];
        let mut numbers = Vec::new();
        while let Some(block) = reader.next_block() {
            match block.expect("a well-formed block") {
                Block::EnhancedPacket(epb) => {
                    let n = u32::from_le_bytes(epb.data[..4].try_into().unwrap());
                    assert_eq!(epb.data.as_ref(), packet(n).as_slice());
                    numbers.push(n);
                }
                Block::InterfaceDescription(_) if numbers.is_empty() => kinds.push("interface"),
                Block::Unknown(u) if u.type_ == DECRYPTION_SECRETS_BLOCK && numbers.is_empty() => {
                    kinds.push("secrets")
                }
                _ => {}
            }
        }
        (kinds, numbers)
    }

    #[test]
    fn one_file_stops_at_its_limit_whole_and_counts_the_rest() {
        let dir = scratch("limit");
        let path = dir.join("c.pcapng");
        let config = CaptureConfig {
            limit: Some(MIN_FILE_LIMIT),
            ..CaptureConfig::file(&path)
        };
        let mut sink = PcapngSink::create(&config, info()).unwrap();
        let handle = sink.summary_handle();
        let t = Duration::new(1_795_000_000, 0);
        for i in 0..300 {
            sink.write_packet(t, Direction::In, &packet(i), None)
                .unwrap();
        }
        let captured = sink.packets();
        assert!(captured > 10 && captured < 300, "{captured}");
        sink.finish().unwrap();
        let summary = handle.get().unwrap();
        assert_eq!(summary.stop, Some(Stop::Limit(MIN_FILE_LIMIT)));
        assert!(summary.complete(), "a limit is not a failure");
        assert_eq!(summary.files, vec![(path.clone(), captured)]);
        assert_eq!(summary.not_captured, 300 - captured);
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            bytes.len() as u64 <= MIN_FILE_LIMIT,
            "{} bytes",
            bytes.len()
        );
        let (_, numbers) = read_back(&bytes);
        assert_eq!(numbers, (0..captured as u32).collect::<Vec<_>>());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_ring_keeps_its_last_files_each_whole_and_each_with_the_secrets() {
        let dir = scratch("ring");
        let base = dir.join("r.pcapng");
        let config = CaptureConfig {
            target: Target::Path(base.clone()),
            limit: Some(MIN_FILE_LIMIT),
            files: 3,
        };
        let mut sink = PcapngSink::create(&config, info()).unwrap();
        let handle = sink.summary_handle();
        let t = Duration::new(1_795_000_000, 0);
        sink.write_secrets("CLIENT_RANDOM 00 11\n").unwrap();
        let count = 600;
        for i in 0..count {
            sink.write_packet(t, Direction::Out, &packet(i), Some(&format!("n{i}")))
                .unwrap();
            if i % 97 == 0 {
                sink.flush().unwrap();
            }
        }
        sink.finish().unwrap();
        let summary = handle.get().unwrap();
        assert_eq!(summary.stop, None);
        assert_eq!(summary.files.len(), 3);
        assert!(summary.removed_files >= 2, "{summary:?}");
        assert_eq!(summary.not_captured, 0);
        assert_eq!(
            summary.packets() + summary.removed_packets,
            u64::from(count)
        );
        let mut left: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        left.sort();
        let listed: Vec<PathBuf> = summary.files.iter().map(|f| f.0.clone()).collect();
        assert_eq!(left, listed, "the files left are the ring's last three");
        let last = ring_path(&base, summary.removed_files + 3);
        assert_eq!(listed[2], last);
        // Each file opens alone, starts with its section, interface and secrets, and
        // the packets run on from one file to the next up to the last.
        let mut next = (summary.removed_packets) as u32;
        for (file, packets) in &summary.files {
            let bytes = std::fs::read(file).unwrap();
            assert!(bytes.len() as u64 <= MIN_FILE_LIMIT);
            let (kinds, numbers) = read_back(&bytes);
            assert_eq!(
                kinds,
                ["section", "interface", "secrets"],
                "{}",
                file.display()
            );
            assert_eq!(numbers.len() as u64, *packets);
            assert_eq!(
                numbers,
                (next..next + numbers.len() as u32).collect::<Vec<_>>()
            );
            next += numbers.len() as u32;
        }
        assert_eq!(next, count);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_ring_keeps_only_the_latest_secrets() {
        let mut recent = RecentSecrets {
            text: String::new(),
            cap: 100,
        };
        for i in 0..1000 {
            recent.add(&format!("CLIENT_RANDOM {i:04} secret\n"));
            assert!(recent.text.len() <= 2 * 100 + 30);
        }
        assert!(recent.text.ends_with("CLIENT_RANDOM 0999 secret\n"));
        assert!(recent.text.starts_with("CLIENT_RANDOM "), "whole lines");
    }

    /// A FIFO in `dir` and a thread that reads it to the end (or until `stop_after`
    /// bytes, when it closes its end).
    fn fifo_reader(
        dir: &Path,
        stop_after: usize,
    ) -> (
        PathBuf,
        std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
        std::thread::JoinHandle<()>,
    ) {
        use std::io::Read;
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (path, sink) = (fifo.clone(), std::sync::Arc::clone(&got));
        let reader = std::thread::spawn(move || {
            let mut f = File::open(&path).unwrap();
            let mut buf = [0u8; 65536];
            loop {
                let n = f.read(&mut buf).unwrap();
                let mut all = sink.lock().unwrap();
                all.extend_from_slice(&buf[..n]);
                if n == 0 || all.len() >= stop_after {
                    return;
                }
            }
        });
        (fifo, got, reader)
    }

    #[test]
    fn a_stream_is_the_file_byte_for_byte_and_a_flush_reaches_the_reader() {
        let dir = scratch("stream");
        let (fifo, got, reader) = fifo_reader(&dir, usize::MAX);
        let file = dir.join("same.pcapng");
        let mut stream = PcapngSink::create(&CaptureConfig::file(&fifo), info()).unwrap();
        let mut plain = PcapngSink::create(&CaptureConfig::file(&file), info()).unwrap();
        assert!(stream.describe().contains("fifo") && !stream.describe().contains("limit"));
        let t = Duration::new(1_795_000_000, 0);
        for sink in [&mut stream, &mut plain] {
            sink.write_secrets("CLIENT_RANDOM 00 11\n").unwrap();
            sink.write_packet(t, Direction::In, &packet(0), Some("SYN"))
                .unwrap();
            sink.flush().unwrap();
        }
        // The reader has the packet after a flush, without waiting for a chunk to fill.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while read_back_lenient(&got.lock().unwrap()) < 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the flush reached the reader"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        for i in 1..3000 {
            for sink in [&mut stream, &mut plain] {
                sink.write_packet(t, Direction::Out, &packet(i), None)
                    .unwrap();
                if i % 500 == 0 {
                    sink.flush().unwrap();
                }
            }
        }
        let handle = stream.summary_handle();
        stream.finish().unwrap();
        plain.finish().unwrap();
        reader.join().unwrap();
        let streamed = std::mem::take(&mut *got.lock().unwrap());
        assert_eq!(streamed, std::fs::read(&file).unwrap());
        let summary = handle.get().unwrap();
        assert!(summary.complete() && summary.stream);
        assert_eq!(summary.packets(), 3000);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Packets readable so far in a stream that may end mid-block.
    fn read_back_lenient(bytes: &[u8]) -> usize {
        let Ok(mut reader) = PcapNgReader::new(bytes) else {
            return 0;
        };
        let mut n = 0;
        while let Some(Ok(block)) = reader.next_block() {
            n += usize::from(matches!(block, Block::EnhancedPacket(_)));
        }
        n
    }

    #[test]
    fn a_reader_that_goes_away_stops_the_capture_and_nothing_else() {
        let dir = scratch("gone");
        let (fifo, _got, reader) = fifo_reader(&dir, 100_000);
        let mut sink = PcapngSink::create(&CaptureConfig::file(&fifo), info()).unwrap();
        let handle = sink.summary_handle();
        let t = Duration::new(1_795_000_000, 0);
        let mut i = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        // Packets keep coming, and keep being taken, after the reader has gone.
        while !sink.stopped {
            assert!(
                std::time::Instant::now() < deadline,
                "the failure is noticed"
            );
            sink.write_packet(t, Direction::Out, &packet(i), None)
                .unwrap();
            sink.flush().unwrap();
            i += 1;
        }
        reader.join().unwrap();
        for j in 0..100 {
            sink.write_packet(t, Direction::Out, &packet(i + j), None)
                .unwrap();
        }
        let err = sink.finish().unwrap_err().to_string();
        assert!(err.contains("the reader went away"), "{err}");
        let summary = handle.get().unwrap();
        assert!(!summary.complete());
        assert_eq!(
            summary.packets() + summary.not_captured,
            u64::from(i + 100),
            "every packet is captured or counted"
        );
        assert!(summary.not_captured >= 100);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_device_is_found_at_the_start() {
        // /dev/full takes no byte: ENOSPC, as a disk that is already full.
        let Err(e) = PcapngSink::create(&CaptureConfig::file("/dev/full"), info()) else {
            panic!("a capture onto /dev/full must not start");
        };
        assert_eq!(
            e.to_string(),
            "cannot write the capture to /dev/full: the disk is full"
        );
    }
}
