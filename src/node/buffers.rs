//! Socket buffers from a pool of anonymous memory that goes back to the kernel when a
//! connection closes.
//!
//! smoltcp wants each TCP socket's receive and send buffers up front, at their full size.
//! Taken from the heap, a 256 KiB buffer is either a fresh `mmap` (a system call per
//! connection) or a reused chunk that `calloc` zeroes in full, touching every page: 10,000
//! idle keep-alive connections then hold ~3 GB. Here each buffer is a page-aligned region
//! of anonymous memory. The kernel gives it pages only where bytes are written (a small
//! request and response touch one page each: smoltcp's rings restart at their front
//! whenever they empty), and when the connection closes `madvise(MADV_DONTNEED)` hands
//! the touched pages back, so the resident size falls when a load ends. The regions
//! themselves are kept for the next connection, which saves the `mmap`.
//!
//! The last few regions given back stay warm instead: their pages are kept, and the next
//! connections take them first. Giving pages back and faulting them in again (zeroed) for
//! the next connection was half of what a short connection cost (`bench.sh`: new
//! connections/s 24 000 with every page given back, 46 000 without). A warm region still
//! holds the bytes of the connection before; smoltcp's rings read only what was written
//! into them, so nothing of it can reach the next one.

use std::ptr::NonNull;

/// Regions kept for reuse per size. Past it a freed region is unmapped; a burst of
/// connections can grow the pool, but an idle server holds only address space.
const MAX_SPARE: usize = 4096;

/// Regions given back that keep their pages, per size: at most this many regions' worth
/// of touched pages stays resident once a load ends (a few pages each after small
/// exchanges, 64 x 256 KiB at the very worst).
const WARM: usize = 64;

/// Regions mapped at once when the pool is empty: one system call serves this many
/// connections.
const REGIONS_PER_MAP: usize = 16;

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as usize } else { 4096 }
}

/// A region of the pool. It is lent to one socket at a time; [`Pool::put`] takes it back
/// once that socket is dropped.
#[derive(Debug)]
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
    /// The region's whole size (its pool's).
    cap: usize,
}

impl Region {
    /// The region as a buffer for smoltcp.
    ///
    /// # Safety
    /// The caller must hand the slice to exactly one owner and must not call
    /// [`Pool::put`] with this region until that owner (and every borrow of the slice) is
    /// gone.
    pub unsafe fn lend(&self) -> &'static mut [u8] {
        // SAFETY: the region is `len` mapped, readable and writable bytes that live until
        // `Pool::put` unmaps or recycles them, which the caller promises comes after the
        // borrow ends.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Where the region starts (tests check that it is unmapped in the end).
    #[cfg(test)]
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// Bytes of this region that are resident (pages the kernel has given it), as
    /// `mincore(2)` says.
    pub fn resident(&self) -> usize {
        let page = page_size();
        let pages = self.cap.div_ceil(page);
        let mut vec = [0u8; 256];
        let mut total = 0;
        let mut done = 0;
        while done < pages {
            let n = (pages - done).min(vec.len());
            // SAFETY: the range is inside our mapping and page-aligned; `vec` has room
            // for one byte per page asked.
            let rc = unsafe {
                libc::mincore(
                    self.ptr.as_ptr().add(done * page).cast(),
                    n * page,
                    vec.as_mut_ptr(),
                )
            };
            if rc != 0 {
                return 0;
            }
            total += vec[..n].iter().filter(|b| **b & 1 != 0).count();
            done += n;
        }
        total * page
    }
}

/// Pools of regions, one per size asked for (a server has two sizes; a script's sockets
/// may ask for others with SO_RCVBUF and SO_SNDBUF).
#[derive(Debug, Default)]
pub struct Pools {
    pools: Vec<Pool>,
}

impl Pools {
    /// A region of at least `size` bytes (`len()` is `size`).
    pub fn take(&mut self, size: usize) -> Option<Region> {
        let want = Pool::new(size).size;
        let i = match self.pools.iter().position(|p| p.size == want) {
            Some(i) => i,
            None => {
                self.pools.push(Pool::new(size));
                self.pools.len() - 1
            }
        };
        self.pools[i].take(size)
    }

    /// Gives a region back to the pool it came from.
    pub fn put(&mut self, region: Region) {
        if let Some(p) = self.pools.iter_mut().find(|p| p.size == region.cap) {
            p.put(region);
        }
    }

    /// Bytes of address space mapped for regions.
    pub fn mapped_bytes(&self) -> usize {
        self.pools
            .iter()
            .map(|p| p.mapped() * p.region_size())
            .sum()
    }
}

/// A pool of regions of one size.
#[derive(Debug)]
pub struct Pool {
    size: usize,
    /// Given back with their pages (taken first, last in first out).
    warm: Vec<Region>,
    /// Given back without them.
    spare: Vec<Region>,
    mapped: usize,
}

// SAFETY: a Region is plain memory owned by whoever holds it; nothing in it refers to a
// thread.
unsafe impl Send for Region {}

impl Pool {
    /// A pool of `size`-byte regions (rounded up to whole pages).
    pub fn new(size: usize) -> Self {
        let page = page_size();
        Pool {
            size: size.div_ceil(page) * page,
            warm: Vec::new(),
            spare: Vec::new(),
            mapped: 0,
        }
    }

    /// A region of the pool's size, or `None` if the kernel has no memory for it.
    /// `want` (at most the pool's size) is how much of it the caller will use.
    pub fn take(&mut self, want: usize) -> Option<Region> {
        let mut region = match self.warm.pop() {
            Some(r) => r,
            None => {
                if self.spare.is_empty() {
                    self.map_more()?;
                }
                self.spare.pop()?
            }
        };
        region.len = want.min(self.size);
        Some(region)
    }

    fn map_more(&mut self) -> Option<()> {
        let total = self.size * REGIONS_PER_MAP;
        // SAFETY: an anonymous private mapping with no address hint has no preconditions.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        let base = ptr.cast::<u8>();
        for i in (0..REGIONS_PER_MAP).rev() {
            // SAFETY: every region starts inside the mapping just made.
            let p = unsafe { base.add(i * self.size) };
            self.spare.push(Region {
                ptr: NonNull::new(p)?,
                len: self.size,
                cap: self.size,
            });
        }
        self.mapped += REGIONS_PER_MAP;
        Some(())
    }

    /// Takes a region back: warm while there are fewer than [`WARM`], otherwise its pages
    /// go back to the kernel (the next owner finds it zeroed); either way the region
    /// waits for the next connection.
    pub fn put(&mut self, region: Region) {
        if self.warm.len() < WARM {
            self.warm.push(Region {
                ptr: region.ptr,
                len: self.size,
                cap: self.size,
            });
            return;
        }
        let start = region.ptr.as_ptr();
        // SAFETY: the region is ours again (the caller dropped its borrower) and lies in
        // a mapping of `self.size` bytes.
        unsafe {
            libc::madvise(start.cast(), self.size, libc::MADV_DONTNEED);
        }
        if self.spare.len() < MAX_SPARE {
            self.spare.push(Region {
                ptr: region.ptr,
                len: self.size,
                cap: self.size,
            });
        } else {
            // SAFETY: unmapping part of a larger mapping is allowed; nobody uses it now.
            unsafe {
                libc::munmap(start.cast(), self.size);
            }
            self.mapped -= 1;
        }
    }

    /// Regions mapped so far and not unmapped (in use or spare).
    pub fn mapped(&self) -> usize {
        self.mapped
    }

    pub fn region_size(&self) -> usize {
        self.size
    }
}

impl Drop for Pool {
    /// The regions go back to the kernel with the pool: a process that makes and drops
    /// nodes (tests, `synack script`, the fuzzer's millions) would otherwise keep every
    /// node's address space and mappings until it runs out of them. Regions still lent
    /// out are not ours to unmap: their owners give them back first (the node does, in
    /// its `Drop`).
    fn drop(&mut self) {
        for region in self.warm.drain(..).chain(self.spare.drain(..)) {
            // SAFETY: a warm or spare region is ours alone and lies in a mapping of `self.size`
            // bytes; unmapping part of a larger mapping is allowed.
            unsafe {
                libc::munmap(region.ptr.as_ptr().cast(), self.size);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_resident_only_where_written_and_go_back_on_put() {
        let mut pool = Pool::new(256 * 1024);
        let region = pool.take(256 * 1024).unwrap();
        assert_eq!(region.resident(), 0, "nothing written, nothing resident");
        // SAFETY: one borrower, dropped before `put`.
        let buf = unsafe { region.lend() };
        buf[0] = 1;
        buf[5000] = 2;
        assert_eq!(region.resident(), 2 * page_size());
        let at = region.ptr;
        // Once the pool's warm places are full, a region given back loses its pages.
        let others: Vec<Region> = (0..WARM).map(|_| pool.take(256 * 1024).unwrap()).collect();
        for r in others {
            pool.put(r);
        }
        pool.put(region);
        let warm: Vec<Region> = (0..WARM).map(|_| pool.take(256 * 1024).unwrap()).collect();
        let again = pool.take(256 * 1024).unwrap();
        assert_eq!(again.ptr, at);
        assert_eq!(again.resident(), 0, "the pages went back to the kernel");
        // SAFETY: as above.
        let buf = unsafe { again.lend() };
        assert!(buf.iter().all(|b| *b == 0), "a reused region is zeroed");
        pool.put(again);
        for r in warm {
            pool.put(r);
        }
    }

    #[test]
    fn the_last_regions_given_back_keep_their_pages_and_go_out_first() {
        let mut pool = Pool::new(64 * 1024);
        let region = pool.take(64 * 1024).unwrap();
        let at = region.ptr;
        // SAFETY: one borrower, dropped before `put`.
        let buf = unsafe { region.lend() };
        buf[0] = 7;
        pool.put(region);
        let again = pool.take(64 * 1024).unwrap();
        assert_eq!(again.ptr, at, "the warm region goes out first");
        assert_eq!(again.resident(), page_size(), "with its page");
        pool.put(again);
    }

    /// Whether the page at `p` is mapped (mincore(2) says ENOMEM for an unmapped one).
    fn is_mapped(p: *const u8) -> bool {
        let mut v = [0u8; 1];
        // SAFETY: mincore only reads the mapping table; `p` is page-aligned.
        unsafe { libc::mincore(p as *mut libc::c_void, 1, v.as_mut_ptr()) == 0 }
    }

    /// Found by fuzz/node: pools were never unmapped, so every node made and dropped
    /// kept ~5 MB of address space and its mappings, until AddressSanitizer could map
    /// no more after about a million nodes (fuzz/regressions/node/).
    #[test]
    fn a_dropped_pool_unmaps_its_regions() {
        let mut pools = Pools::default();
        let a = pools.take(64 * 1024).unwrap();
        let b = pools.take(256 * 1024).unwrap();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        assert!(is_mapped(pa) && is_mapped(pb));
        pools.put(a);
        pools.put(b);
        drop(pools);
        assert!(!is_mapped(pa), "the 64 KiB region is unmapped");
        assert!(!is_mapped(pb), "the 256 KiB region is unmapped");
    }

    #[test]
    fn a_region_is_as_long_as_asked() {
        let mut pool = Pool::new(10_000);
        assert_eq!(pool.region_size() % page_size(), 0);
        let r = pool.take(10_000).unwrap();
        assert_eq!(r.len(), 10_000);
        pool.put(r);
    }
}
