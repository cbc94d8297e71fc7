//! The capture's file, written on a thread of its own from aligned chunks of memory.
//!
//! The stack's thread encodes blocks into [`Chunk`]s of [`CHUNK`] bytes, aligned for
//! O_DIRECT; a full chunk goes to the writer thread, which hands it to the disk as it is
//! and sends it back for reuse. Nothing copies it again: not the page cache (O_DIRECT),
//! and not a staging buffer on the writer thread, which used to be most of that thread's
//! time (0.15-0.2 s of CPU per GB captured then, 0.08-0.13 s now), taken from the core
//! curl or the kernel needs. The chunk queue is bounded: a disk slower than the traffic
//! slows the stack down rather than losing packets from the capture or growing memory.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;

/// Capture writes go to the disk in chunks of this much memory, one write(2) each.
pub const CHUNK: usize = 1 << 20;

/// Chunks in flight between the stack and the writer thread: 8 MiB absorbs a burst while
/// the disk catches up.
const CHUNKS: usize = 8;

/// O_DIRECT wants buffers, offsets and lengths aligned to the device's logical block;
/// 4 KiB covers every device Linux has.
const ALIGN: usize = 4096;

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
        }
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
    /// A full chunk, for this offset in the file.
    Full { chunk: Chunk, offset: u64 },
    /// The bytes after the last full chunk, for this offset: written so that the file
    /// is whole up to here (the stack is idle or finishing). The full chunk that later
    /// covers them is written over them.
    Tail { bytes: Vec<u8>, offset: u64 },
}

/// The writer thread's file. Full chunks go to the disk through O_DIRECT, which skips
/// the page-cache copy that costs this kind of machine ~0.7 s of CPU per GB (against
/// ~0.1 s); tails go through a plain descriptor. Where the filesystem refuses O_DIRECT
/// (tmpfs), everything goes through the plain descriptor.
struct FileOut {
    direct: Option<File>,
    plain: File,
}

impl FileOut {
    fn new(path: &Path, plain: File) -> Self {
        use std::os::unix::fs::OpenOptionsExt;
        let direct = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok();
        FileOut { direct, plain }
    }

    fn write(&mut self, msg: &ToWriter) -> io::Result<()> {
        match msg {
            ToWriter::Full { chunk, offset } => {
                let block = chunk.filled();
                let direct = self.direct.as_ref().map(|f| f.write_all_at(block, *offset));
                if !matches!(direct, Some(Ok(()))) {
                    // No O_DIRECT here, or the device refused it: plain writes from now on.
                    self.direct = None;
                    self.plain.write_all_at(block, *offset)?;
                }
                Ok(())
            }
            ToWriter::Tail { bytes, offset } => self.plain.write_all_at(bytes, *offset),
        }
    }
}

/// The stack's end of the writer thread: full chunks go over, emptied ones (or the
/// first error) come back.
pub struct Writer {
    to: SyncSender<ToWriter>,
    empty: Receiver<io::Result<Chunk>>,
    thread: JoinHandle<io::Result<()>>,
    /// Chunks that exist; a new one is made only while fewer than [`CHUNKS`].
    chunks: usize,
    /// Times the stack had to wait for the writer: the disk was slower than the traffic.
    stalls: u64,
}

impl Writer {
    /// Starts the thread that writes to `file` (opened at `path`, which it also opens
    /// for O_DIRECT), and returns the first chunk to fill.
    pub fn spawn(path: &Path, file: File) -> io::Result<(Writer, Chunk)> {
        let (to, from_stack) = sync_channel::<ToWriter>(CHUNKS);
        let (empty_tx, empty) = sync_channel::<io::Result<Chunk>>(CHUNKS);
        let mut out = FileOut::new(path, file);
        let thread = std::thread::Builder::new()
            .name("capture-writer".into())
            .spawn(move || {
                // The stack's thread is the bottleneck of a fast transfer; the writer needs
                // a fraction of a core and has CHUNKS MiB of slack, so it yields to others.
                // SAFETY: setpriority on this thread's own id.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
                // SIGINT and SIGTERM must reach the stack's thread: only there do they wake
                // the poll(2) an idle server sleeps in. Taken here, the stop flag would be
                // set and nobody would look at it.
                // SAFETY: a zeroed sigset filled by sigfillset, applied to this thread only.
                unsafe {
                    let mut all: libc::sigset_t = std::mem::zeroed();
                    libc::sigfillset(&mut all);
                    libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
                }
                for msg in from_stack {
                    if let Err(e) = out.write(&msg) {
                        let _ = empty_tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                        return Err(e);
                    }
                    if let ToWriter::Full { mut chunk, .. } = msg {
                        chunk.fill = 0;
                        chunk.prefetched = 0;
                        // The stack may have stopped listening (it is finishing): fine.
                        let _ = empty_tx.send(Ok(chunk));
                    }
                }
                Ok(())
            })?;
        let writer = Writer {
            to,
            empty,
            thread,
            chunks: 1,
            stalls: 0,
        };
        Ok((writer, Chunk::new()))
    }

    /// Sends the full chunk, for `offset` in the file, and puts an empty one in its place:
    /// a recycled chunk if one is back, a new one while there are fewer than [`CHUNKS`],
    /// else it waits for the writer (backpressure).
    pub fn swap_full(&mut self, chunk: &mut Chunk, offset: u64) -> io::Result<()> {
        let next = match self.empty.try_recv() {
            Ok(chunk) => chunk?,
            Err(TryRecvError::Empty) if self.chunks < CHUNKS => {
                self.chunks += 1;
                Chunk::new()
            }
            Err(_) => {
                self.stalls += 1;
                let waited = self.empty.recv();
                waited.map_err(|_| stopped())??
            }
        };
        let full = std::mem::replace(chunk, next);
        self.to
            .send(ToWriter::Full {
                chunk: full,
                offset,
            })
            .map_err(|_| stopped())
    }

    /// Has the writer put `bytes` at `offset`, after everything sent before.
    pub fn send_tail(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        let msg = ToWriter::Tail {
            bytes: bytes.to_vec(),
            offset,
        };
        self.to.send(msg).map_err(|_| stopped())
    }

    /// Waits for the writer to write everything sent; returns how many times the stack
    /// had to wait for it along the way.
    pub fn finish(self) -> io::Result<u64> {
        drop(self.to);
        let joined = self
            .thread
            .join()
            .map_err(|_| io::Error::other("capture writer panicked"))?;
        joined.map(|()| self.stalls)
    }
}

fn stopped() -> io::Error {
    io::Error::other("capture writer stopped")
}
