//! The capture's file, written on a thread of its own from aligned chunks of memory.
//!
//! The stack's thread encodes blocks into [`Chunk`]s of [`CHUNK`] bytes, aligned for
//! O_DIRECT; a full chunk goes to the writer thread, which hands it to the disk as it is
//! and sends it back for reuse. Nothing copies it again: not the page cache (O_DIRECT),
//! and not a staging buffer on the writer thread, which used to be most of that thread's
//! time (0.15-0.2 s of CPU per GB captured then, 0.08-0.13 s now), taken from the core
//! curl or the kernel needs. The chunk queue is bounded: a disk slower than the traffic
//! slows the stack down rather than losing packets from the capture or growing memory.
//!
//! Each chunk remembers where its last whole block ends and how many packets the file
//! holds up to there. When a write fails (a full disk, a reader that went away), the
//! thread cuts the file back to its last whole block, says so once, and from then on
//! takes chunks only to give them back: the stack keeps running and never waits for a
//! disk that cannot take more. The thread also keeps the ring of files (see
//! [`super::output`]): it opens each next file and removes the oldest.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;

use super::output::{Output, reason};

/// Capture writes go to the disk in chunks of this much memory, one write(2) each.
pub const CHUNK: usize = 1 << 20;

/// Chunks in flight between the stack and the writer thread: 8 MiB absorbs a burst while
/// the disk catches up.
const CHUNKS: usize = 8;

/// O_DIRECT wants buffers, offsets and lengths aligned to the device's logical block;
/// 4 KiB covers every device Linux has.
pub(super) const ALIGN: usize = 4096;

/// How far ahead of the write position [`Chunk::prefetch_ahead`] asks for cache lines:
/// about four full-size packets.
const PREFETCH_AHEAD: usize = 6 << 10;

/// [`CHUNK`] bytes of memory aligned to [`ALIGN`], filled from the front.
pub struct Chunk {
    buf: Box<[u8]>,
    /// `buf[at..at + CHUNK]` is the aligned region.
    at: usize,
    fill: usize,
    /// How far [`Chunk::prefetch_ahead`] has asked for lines.
    prefetched: usize,
    /// Where the last block that ends in this chunk ends (0: none does), and the packets
    /// in the file up to there: a point the file can be cut back to.
    end: usize,
    end_packets: u64,
}

impl Chunk {
    fn new() -> Self {
        let buf = vec![0u8; CHUNK + ALIGN].into_boxed_slice();
        let at = buf.as_ptr().align_offset(ALIGN);
        Chunk {
            buf,
            at,
            fill: 0,
            prefetched: 0,
            end: 0,
            end_packets: 0,
        }
    }

    /// A chunk with no memory, to stand in for the last one of a sink that has finished
    /// (nothing is put into it after that; putting into it would panic).
    pub fn none() -> Self {
        Chunk {
            buf: Box::default(),
            at: 0,
            fill: 0,
            prefetched: 0,
            end: 0,
            end_packets: 0,
        }
    }

    fn clear(&mut self) {
        self.fill = 0;
        self.prefetched = 0;
        self.end = 0;
        self.end_packets = 0;
    }

    /// Marks the end of a whole block here: the file holds `packets` packets up to it.
    #[inline]
    pub fn mark_end(&mut self, packets: u64) {
        self.end = self.fill;
        self.end_packets = packets;
    }

    /// Copies as much of `bytes` as there is room for; returns how much that was.
    #[inline]
    pub fn put(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(CHUNK - self.fill);
        let start = self.at + self.fill;
        self.buf[start..start + n].copy_from_slice(&bytes[..n]);
        self.fill += n;
        n
    }

    /// Asks the CPU for the cache lines the next few packets will be written to, each
    /// line once. Those lines were last touched a whole ring of chunks ago (or by the
    /// disk's DMA) and are no longer in this core's cache: written without a prefetch,
    /// every packet waited for its ~24 lines to arrive from memory, and on a 1 GB
    /// download that was most of the capture's cost (19 % of the throughput without the
    /// prefetch, 10-14 % with it, in netns-scripts/bench.sh). Writing a line the CPU has
    /// to fetch first stalls; a prefetch lets the fetch overlap the system calls between
    /// two packets.
    #[inline]
    pub fn prefetch_ahead(&mut self) {
        let end = (self.fill + PREFETCH_AHEAD).min(CHUNK);
        let mut line = self.prefetched.max(self.fill) & !63;
        while line < end {
            prefetch_for_write(&self.buf[self.at + line]);
            line += 64;
        }
        self.prefetched = self.prefetched.max(end);
    }

    pub fn is_full(&self) -> bool {
        self.fill == CHUNK
    }

    pub fn filled(&self) -> &[u8] {
        &self.buf[self.at..self.at + self.fill]
    }

    pub fn len(&self) -> usize {
        self.fill
    }

    pub fn is_empty(&self) -> bool {
        self.fill == 0
    }
}

/// A hint that `byte`'s cache line is about to be written: fetch it now, for writing
/// where the CPU can say so.
#[inline(always)]
fn prefetch_for_write(byte: &u8) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_prefetchw() {
            // SAFETY: PREFETCHW is a hint (it reads and writes nothing, and cannot
            // fault), and this CPU has it.
            unsafe {
                std::arch::asm!("prefetchw [{}]", in(reg) byte, options(nostack, readonly, preserves_flags));
            }
        } else {
            // SAFETY: as above, for PREFETCHT0, which every x86-64 CPU has.
            unsafe {
                use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
                _mm_prefetch::<_MM_HINT_T0>((byte as *const u8).cast());
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: PRFM is a hint.
    unsafe {
        std::arch::asm!("prfm pstl1keep, [{}]", in(reg) byte, options(nostack, readonly, preserves_flags));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = byte;
}

/// Whether this CPU has PREFETCHW (CPUID 8000_0001h, ECX bit 8), asked once.
#[cfg(target_arch = "x86_64")]
fn has_prefetchw() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        use std::arch::x86_64::__cpuid;
        let extended = __cpuid(0x8000_0000).eax;
        extended >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & (1 << 8) != 0
    })
}

/// What the stack sends the writer thread.
enum ToWriter {
    /// A chunk for this offset in the current file: a full one, or the last of a file. A
    /// stream takes the bytes in order and has no use for the offset.
    Chunk { chunk: Chunk, offset: u64 },
    /// The bytes after the last chunk sent, for this offset, ending with a whole block
    /// and `packets` packets in the file: written so that the file is whole up to here
    /// (the stack is idle). The chunk that later covers them is written over them.
    Tail {
        bytes: Vec<u8>,
        offset: u64,
        packets: u64,
    },
    /// The current file is complete: go on in a new file at this path.
    Next(PathBuf),
}

/// What the writer thread left on the disk, for the capture's summary.
#[derive(Debug, Default)]
pub struct Written {
    /// The files left, oldest first, with the packets each holds.
    pub files: Vec<(PathBuf, u64)>,
    /// Files the ring removed, and the packets they held.
    pub removed_files: u64,
    pub removed_packets: u64,
    /// Why writing stopped early, in a few words ("the disk is full").
    pub failure: Option<String>,
}

/// The writer thread's side.
struct Thread {
    /// `None` once writing has failed: chunks then only come back.
    out: Option<Output>,
    /// The current file (or the stream's name).
    path: PathBuf,
    /// The end of the last whole block known to be written in the current file, and the
    /// packets up to it: where a failed file is cut back to, at the least.
    safe: (u64, u64),
    /// The section and interface blocks: a file cut back below this holds nothing.
    head_len: u64,
    /// Files a ring keeps, the current one included.
    ring: usize,
    /// Finished files, oldest first.
    done: VecDeque<(PathBuf, u64)>,
    /// Whether the current file is still there (a failed one that held nothing is not).
    current_kept: bool,
    written: Written,
    failed: Arc<AtomicBool>,
}

impl Thread {
    fn handle(&mut self, msg: ToWriter, empty: &SyncSender<Chunk>) {
        match msg {
            ToWriter::Chunk { mut chunk, offset } => {
                if let Some(out) = self.out.as_mut() {
                    match out.write_at(chunk.filled(), offset) {
                        Ok(()) if chunk.end > 0 => {
                            self.safe = (offset + chunk.end as u64, chunk.end_packets);
                        }
                        Ok(()) => {}
                        Err(e) => self.fail(&e),
                    }
                }
                chunk.clear();
                // The stack may have stopped listening (it is finishing): fine.
                let _ = empty.send(chunk);
            }
            ToWriter::Tail {
                bytes,
                offset,
                packets,
            } => {
                if let Some(out) = self.out.as_mut() {
                    match out.write_at(&bytes, offset) {
                        Ok(()) => self.safe = (offset + bytes.len() as u64, packets),
                        Err(e) => self.fail(&e),
                    }
                }
            }
            ToWriter::Next(path) => {
                if self.out.is_some() {
                    self.next(path);
                }
            }
        }
    }

    /// Closes the current file and opens the next; a ring's oldest file goes first, so
    /// that a disk near full has its room back before the new file needs it.
    fn next(&mut self, path: PathBuf) {
        self.out = None;
        let old = std::mem::replace(&mut self.path, path);
        self.done.push_back((old, self.safe.1));
        self.safe = (0, 0);
        while self.done.len() >= self.ring {
            let Some((oldest, packets)) = self.done.pop_front() else {
                break;
            };
            match std::fs::remove_file(&oldest) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("capture: cannot remove {}: {e}", oldest.display()),
            }
            self.written.removed_files += 1;
            self.written.removed_packets += packets;
        }
        match Output::create_file(&self.path) {
            Ok(out) => self.out = Some(out),
            Err(e) => {
                self.current_kept = false;
                self.give_up(reason(&e));
                log::error!(
                    "capture: cannot create {}: {}; capturing stops (everything else carries on)",
                    self.path.display(),
                    reason(&e)
                );
            }
        }
    }

    /// A write failed: cut the file back to its last whole block, say so once, and stop.
    fn fail(&mut self, e: &io::Error) {
        let why = reason(e);
        let Some(out) = self.out.take() else {
            return;
        };
        self.give_up(why.clone());
        let path = self.path.display();
        if out.is_stream() {
            log::error!("capture to {path}: {why}; capturing stops (everything else carries on)");
            return;
        }
        match out.cut_back(self.safe) {
            Ok((len, packets)) if len >= self.head_len => {
                self.safe = (len, packets);
                log::error!(
                    "capture {path}: {why}; the file is cut back to its last whole packet ({packets} packets) and capturing stops (everything else carries on)"
                );
            }
            Ok(_) => {
                drop(out);
                self.current_kept = false;
                let _ = std::fs::remove_file(&self.path);
                log::error!(
                    "capture {path}: {why}; the file held no whole block and is removed, and capturing stops (everything else carries on)"
                );
            }
            Err(cut) => log::error!(
                "capture {path}: {why}; capturing stops (everything else carries on), and the file could not be cut back to its last whole packet: {cut}"
            ),
        }
    }

    fn give_up(&mut self, why: String) {
        self.out = None;
        self.written.failure = Some(why);
        self.failed.store(true, Ordering::Release);
    }

    fn into_written(mut self) -> Written {
        let mut files: Vec<(PathBuf, u64)> = self.done.into();
        if self.current_kept {
            files.push((self.path, self.safe.1));
        }
        self.written.files = files;
        self.written
    }
}

/// How the writer thread starts: where it writes, and what is already there.
pub struct Start {
    pub out: Output,
    /// The file's path (or the stream's name, for messages).
    pub path: PathBuf,
    /// Bytes of the section and interface blocks, already written by the stack's thread.
    pub head_len: u64,
    /// Files a ring keeps (1: no ring).
    pub ring: usize,
}

/// The stack's end of the writer thread: full chunks go over, emptied ones come back.
pub struct Writer {
    to: SyncSender<ToWriter>,
    empty: Receiver<Chunk>,
    thread: JoinHandle<Written>,
    /// Chunks that exist; a new one is made only while fewer than [`CHUNKS`].
    chunks: usize,
    /// Times the stack had to wait for the writer: the disk was slower than the traffic.
    stalls: u64,
    failed: Arc<AtomicBool>,
}

impl Writer {
    /// Starts the thread, and returns the first chunk to fill.
    pub fn spawn(start: Start) -> io::Result<(Writer, Chunk)> {
        let (to, from_stack) = sync_channel::<ToWriter>(CHUNKS);
        let (empty_tx, empty) = sync_channel::<Chunk>(CHUNKS);
        let failed = Arc::new(AtomicBool::new(false));
        let mut thread = Thread {
            out: Some(start.out),
            path: start.path,
            safe: (start.head_len, 0),
            head_len: start.head_len,
            ring: start.ring.max(1),
            done: VecDeque::new(),
            current_kept: true,
            written: Written::default(),
            failed: Arc::clone(&failed),
        };
        // SIGINT and SIGTERM must reach the stack's thread, where the stop flag is read.
        // The new thread is born with every signal blocked (a thread inherits its
        // creator's mask), so there is no moment in which it could take one; the stack's
        // thread gets its own mask back right after.
        // SAFETY: sigsets filled by sigfillset or by pthread_sigmask, applied to this
        // thread only.
        let saved = unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut saved: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut saved);
            saved
        };
        let spawned = std::thread::Builder::new()
            .name("capture-writer".into())
            .spawn(move || {
                // The stack's thread is the bottleneck of a fast transfer; the writer needs
                // a fraction of a core and has CHUNKS MiB of slack, so it yields to others.
                // SAFETY: setpriority on this thread's own id.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
                for msg in from_stack {
                    thread.handle(msg, &empty_tx);
                }
                thread.into_written()
            });
        // SAFETY: restores the mask saved above, on this thread.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &saved, std::ptr::null_mut());
        }
        let thread = spawned?;
        let writer = Writer {
            to,
            empty,
            thread,
            chunks: 1,
            stalls: 0,
            failed,
        };
        Ok((writer, Chunk::new()))
    }

    /// Whether writing has failed (the writer has said why): nothing sent now is written.
    #[inline]
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Sends the chunk, for `offset` in the current file, and puts an empty one in its
    /// place: a recycled chunk if one is back, a new one while there are fewer than
    /// [`CHUNKS`], else it waits for the writer (backpressure).
    pub fn send_chunk(&mut self, chunk: &mut Chunk, offset: u64) -> io::Result<()> {
        let next = match self.empty.try_recv() {
            Ok(chunk) => chunk,
            Err(TryRecvError::Empty) if self.chunks < CHUNKS => {
                self.chunks += 1;
                Chunk::new()
            }
            Err(_) => {
                self.stalls += 1;
                self.empty.recv().map_err(|_| stopped())?
            }
        };
        let sent = std::mem::replace(chunk, next);
        self.to
            .send(ToWriter::Chunk {
                chunk: sent,
                offset,
            })
            .map_err(|_| stopped())
    }

    /// Sends the last chunk, with no empty one to take in its place (the sink is
    /// finishing).
    pub fn send_last(&mut self, chunk: Chunk, offset: u64) -> io::Result<()> {
        self.to
            .send(ToWriter::Chunk { chunk, offset })
            .map_err(|_| stopped())
    }

    /// Has the writer put `bytes` at `offset`, after everything sent before; they end
    /// with a whole block, and the file holds `packets` packets up to there.
    pub fn send_tail(&self, bytes: &[u8], offset: u64, packets: u64) -> io::Result<()> {
        let msg = ToWriter::Tail {
            bytes: bytes.to_vec(),
            offset,
            packets,
        };
        self.to.send(msg).map_err(|_| stopped())
    }

    /// The current file is complete (its last chunk is sent): go on at `path`.
    pub fn next_file(&self, path: PathBuf) -> io::Result<()> {
        self.to.send(ToWriter::Next(path)).map_err(|_| stopped())
    }

    /// Waits for the writer to write everything sent; returns what it left on the disk
    /// and how many times the stack had to wait for it along the way.
    pub fn finish(self) -> io::Result<(Written, u64)> {
        drop(self.to);
        let written = self
            .thread
            .join()
            .map_err(|_| io::Error::other("the capture writer panicked"))?;
        Ok((written, self.stalls))
    }
}

fn stopped() -> io::Error {
    io::Error::other("the capture writer stopped")
}
