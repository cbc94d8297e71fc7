//! The kernel's TCP as the stack under test, the way packetdrill runs it: a TUN device
//! whose far end is the script, in a network namespace made for the run.
//!
//! - The namespace has a unique name, IPv6 off (no router solicitations in the way), the
//!   sysctls of packetdrill's `defaults.sh` that are per namespace, and a `tun0` with
//!   10.77.0.1/24 (the kernel: packetdrill's 192.168.0.1); the script's packets come from
//!   10.77.0.2 (packetdrill's 192.0.2.1). [`Netns`] removes it on every path, panics
//!   included.
//! - Offloads as packetdrill sets them: the TUN is opened with a virtio-net header and
//!   `TUNSETOFFLOAD(CSUM | TSO4 | TSO6 | TSO_ECN)`, so the kernel hands over TSO
//!   super-segments and leaves TCP checksums partial. Here synack differs from
//!   packetdrill, which compares the super-segment itself: it cuts each one into the
//!   MSS-sized segments a NIC would send (by the virtio header's `gso_size`) and
//!   completes their checksums, so captures show the wire and a script can expect the
//!   real segments (`no-options.pkt`); the runner joins consecutive segments again when
//!   the script expects one larger segment, as packetdrill does, so scripts written for
//!   super-segments (`fr-4pkt.pkt`) still pass. Injected packets carry
//!   full checksums and no GSO (packetdrill's `--mss` GSO injection is not supported).
//! - The TUN's queueing discipline is pfifo, as `defaults.sh` sets, so that no fq pacing
//!   delays segments.
//! - Socket calls run on worker threads that entered the namespace (sockets belong to the
//!   namespace of the thread that makes them). A call counts as blocking when its thread
//!   sleeps in the kernel, as packetdrill judges it from `/proc/.../stat`.
//! - Timing: wall clock, waits with ppoll(2) to the microsecond, packets stamped when
//!   read off the TUN. Like packetdrill, the runner's thread and the call threads take the
//!   lowest real-time priority (SCHED_RR) while the backend lives, on machines with more
//!   than one CPU; packetdrill also pins its memory (mlockall), synack does not. On a
//!   busy machine timing errors remain possible, as with packetdrill. The kernel's own
//!   timers tick at CONFIG_HZ (250 here: 4 ms), which scripts written on 1000 Hz kernels
//!   can notice.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::backend::*;
use super::wire;

/// The kernel's address on the TUN (packetdrill's local 192.168.0.1).
pub const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The script's address (packetdrill's remote 192.0.2.1), routed into the TUN.
pub const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const DEVICE: &str = "tun0";
/// struct virtio_net_hdr (no mergeable buffers): what IFF_VNET_HDR puts before a packet.
const VNET_HDR_LEN: usize = 10;
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;
/// Room for the largest GSO super-segment and its header.
const READ_BUF: usize = 65_536 + VNET_HDR_LEN;

// <linux/if_tun.h>
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUN_F_CSUM: libc::c_ulong = 0x01;
const TUN_F_TSO4: libc::c_ulong = 0x02;
const TUN_F_TSO6: libc::c_ulong = 0x04;
const TUN_F_TSO_ECN: libc::c_ulong = 0x08;

/// The per-namespace sysctls of packetdrill's `gtests/net/common/defaults.sh`; keys this
/// kernel does not have (tcp_fack went in 4.18) are passed over.
pub const DEFAULT_SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv4.tcp_rmem", "4096 540000 15728640"),
    ("net.ipv4.tcp_wmem", "4096 262144 4194304"),
    ("net.ipv4.tcp_timestamps", "1"),
    ("net.ipv4.tcp_syn_retries", "5"),
    ("net.ipv4.tcp_synack_retries", "5"),
    ("net.ipv4.tcp_frto", "2"),
    ("net.ipv4.tcp_sack", "1"),
    ("net.ipv4.tcp_dsack", "1"),
    ("net.ipv4.tcp_fack", "0"),
    ("net.ipv4.tcp_reordering", "3"),
    ("net.ipv4.tcp_congestion_control", "cubic"),
    ("net.ipv4.tcp_slow_start_after_idle", "0"),
    ("net.ipv4.tcp_early_retrans", "4"),
    ("net.ipv4.tcp_recovery", "1"),
    ("net.ipv4.tcp_tso_win_divisor", "3"),
    ("net.ipv4.tcp_ecn", "0"),
    ("net.ipv4.tcp_ecn_option", "2"),
    ("net.ipv4.tcp_pacing_ss_ratio", "200"),
    ("net.ipv4.tcp_pacing_ca_ratio", "120"),
    ("net.ipv4.tcp_notsent_lowat", "4294967295"),
    ("net.ipv4.tcp_fastopen", "459779"),
    (
        "net.ipv4.tcp_fastopen_key",
        "a1a1a1a1-b2b2b2b2-c3c3c3c3-d4d4d4d4",
    ),
    ("net.ipv4.tcp_syncookies", "1"),
    // Not in defaults.sh, which predates it: since Linux 6.5 the first SYN
    // retransmissions back off linearly (1 s apart); packetdrill's scripts and RFC 6298
    // §5.5 double the timeout each time.
    ("net.ipv4.tcp_syn_linear_timeouts", "0"),
];

static NEXT_NS: AtomicU64 = AtomicU64::new(0);

/// A network namespace that exists while this value does.
pub struct Netns {
    name: String,
}

impl Netns {
    /// `ip netns add` with a name unique to this process and call.
    pub fn create() -> Result<Netns, BackendError> {
        let name = format!(
            "synack-script-{}-{}",
            std::process::id(),
            NEXT_NS.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .map_err(|e| {
                BackendError::Unavailable(format!(
                    "cannot run `ip` ({e}): install iproute2 to run scripts against Linux"
                ))
            })?;
        if !out.status.success() {
            return Err(BackendError::Unavailable(format!(
                "cannot make a network namespace ({}): run as root to use --against linux",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(Netns { name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS...`.
    fn ip(&self, args: &[&str]) -> Result<(), BackendError> {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .map_err(|e| BackendError::Failed(format!("ip {}: {e}", args.join(" "))))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(BackendError::Failed(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// Runs `f` on a thread that entered the namespace.
    pub fn run_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
    ) -> Result<T, BackendError> {
        let name = self.name.clone();
        std::thread::spawn(move || {
            enter(&name)?;
            f()
        })
        .join()
        .map_err(|_| BackendError::Failed("a thread in the namespace panicked".into()))?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// setns(2) into the named namespace, for the calling thread only.
fn enter(name: &str) -> Result<(), BackendError> {
    let f = File::open(format!("/var/run/netns/{name}"))
        .map_err(|e| BackendError::Failed(format!("open namespace {name}: {e}")))?;
    // SAFETY: setns on a file descriptor we own; it changes only this thread's namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(BackendError::Failed(format!(
            "setns into {name}: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Gives the calling thread the lowest real-time priority (SCHED_RR), as packetdrill does
/// on machines with more than one CPU, so that a loaded machine delays the script's
/// events less; returns the policy and priority to restore, if it changed anything.
fn realtime() -> Option<(libc::c_int, libc::sched_param)> {
    // SAFETY: sysconf, sched_* and pthread_* calls on the calling thread, with
    // structures that live across each call.
    unsafe {
        if libc::sysconf(libc::_SC_NPROCESSORS_ONLN) <= 1 {
            return None;
        }
        let mut policy = 0;
        let mut old = std::mem::zeroed::<libc::sched_param>();
        if libc::pthread_getschedparam(libc::pthread_self(), &mut policy, &mut old) != 0 {
            return None;
        }
        let param = libc::sched_param {
            sched_priority: libc::sched_get_priority_min(libc::SCHED_RR),
        };
        (libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_RR, &param) == 0)
            .then_some((policy, old))
    }
}

/// Writes a sysctl of the calling thread's namespace.
fn write_sysctl(key: &str, value: &str) -> io::Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(value.as_bytes())
}

/// Opens `tun0` with the virtio-net header and packetdrill's offloads, in the calling
/// thread's namespace.
fn open_tun() -> Result<OwnedFd, BackendError> {
    let fail = |what: &str| BackendError::Failed(format!("{what}: {}", io::Error::last_os_error()));
    // SAFETY: plain open(2) of a device path; the result is checked.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(BackendError::Unavailable(format!(
            "cannot open /dev/net/tun ({}): run as root on a kernel with TUN",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: fd was just opened and is owned by nothing else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // struct ifreq: the name, then the flags (a short) at offset 16.
    let mut ifr = [0u8; 40];
    ifr[..DEVICE.len()].copy_from_slice(DEVICE.as_bytes());
    ifr[16..18].copy_from_slice(&(IFF_TUN | IFF_NO_PI | IFF_VNET_HDR).to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq, which `ifr` is large enough for.
    if unsafe { libc::ioctl(fd, TUNSETIFF, ifr.as_mut_ptr()) } < 0 {
        return Err(fail("TUNSETIFF"));
    }
    let offload = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
    // SAFETY: TUNSETOFFLOAD takes its argument by value.
    if unsafe { libc::ioctl(fd, TUNSETOFFLOAD, offload) } < 0 {
        return Err(fail("TUNSETOFFLOAD"));
    }
    // SAFETY: F_GETFL/F_SETFL on our own descriptor.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(fail("fcntl O_NONBLOCK"));
        }
    }
    Ok(owned)
}

/// A job for a worker: a call and its id.
type Job = (CallId, Call);

/// A thread in the namespace that makes socket calls, one at a time.
struct Worker {
    jobs: Sender<Job>,
    /// The thread's id (gettid), to see whether it sleeps in the kernel.
    tid: Arc<AtomicI32>,
    /// The id of the call it is making (0: none).
    running: Arc<AtomicU64>,
}

/// Everything the workers report back.
struct Shared {
    finished: Receiver<(CallId, Instant, CallResult)>,
    finished_tx: Sender<(CallId, Instant, CallResult)>,
    /// Written by a worker when it finishes a call, to wake ppoll.
    wake_rx: OwnedFd,
    wake_tx: Arc<OwnedFd>,
}

pub struct LinuxBackend {
    // Field order is drop order: sockets and the device go before the namespace.
    sockets: Arc<Mutex<HashSet<i32>>>,
    tun: OwnedFd,
    workers: Vec<Worker>,
    idle: Vec<usize>,
    busy: HashMap<CallId, usize>,
    shared: Shared,
    emitted: VecDeque<Emitted>,
    finished: VecDeque<Finished>,
    next_call: CallId,
    start: Instant,
    epoch: Duration,
    buf: Vec<u8>,
    /// The calling thread's scheduling before [`realtime`], put back on drop.
    sched: Option<(libc::c_int, libc::sched_param)>,
    netns: Netns,
}

impl LinuxBackend {
    /// Makes the namespace, applies the sysctls, and brings up the TUN device.
    pub fn new() -> Result<LinuxBackend, BackendError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(BackendError::Unavailable(
                "--against linux needs root (a network namespace and a TUN device): run it with sudo"
                    .into(),
            ));
        }
        let netns = Netns::create()?;
        let tun = netns.run_in(|| {
            // No IPv6 in the namespace: the device must not send router solicitations.
            for key in [
                "net.ipv6.conf.all.disable_ipv6",
                "net.ipv6.conf.default.disable_ipv6",
            ] {
                let _ = write_sysctl(key, "1");
            }
            for (key, value) in DEFAULT_SYSCTLS {
                // Keys this kernel lacks are what defaults.sh's `sysctl -q` passes over too.
                let _ = write_sysctl(key, value);
            }
            open_tun()
        })?;
        netns.ip(&["link", "set", "lo", "up"])?;
        netns.ip(&["addr", "add", &format!("{LOCAL}/24"), "dev", DEVICE])?;
        netns.ip(&["link", "set", DEVICE, "up"])?;
        // defaults.sh: "Many tests fail with timing errors if the default is FQ".
        let _ = Command::new("tc")
            .args([
                "-n",
                netns.name(),
                "qdisc",
                "replace",
                "dev",
                DEVICE,
                "root",
                "pfifo",
            ])
            .output();
        let mut pipe = [0; 2];
        // SAFETY: pipe2 fills the two descriptors it is given.
        if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(BackendError::Failed(format!(
                "pipe: {}",
                io::Error::last_os_error()
            )));
        }
        // SAFETY: both descriptors were just made and belong to nothing else.
        let (wake_rx, wake_tx) =
            unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
        let (finished_tx, finished) = channel();
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Ok(LinuxBackend {
            sockets: Arc::new(Mutex::new(HashSet::new())),
            tun,
            workers: Vec::new(),
            idle: Vec::new(),
            busy: HashMap::new(),
            shared: Shared {
                finished,
                finished_tx,
                wake_rx,
                wake_tx: Arc::new(wake_tx),
            },
            emitted: VecDeque::new(),
            finished: VecDeque::new(),
            next_call: 1,
            start: Instant::now(),
            epoch,
            buf: vec![0; READ_BUF],
            sched: realtime(),
            netns,
        })
    }

    pub fn namespace(&self) -> &str {
        self.netns.name()
    }

    fn since_start(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.start)
    }

    fn spawn_worker(&mut self) -> Result<usize, BackendError> {
        let (jobs, rx) = channel::<Job>();
        let tid = Arc::new(AtomicI32::new(0));
        let running = Arc::new(AtomicU64::new(0));
        let name = self.netns.name().to_owned();
        let done = self.shared.finished_tx.clone();
        let wake = Arc::clone(&self.shared.wake_tx);
        let sockets = Arc::clone(&self.sockets);
        let (t, r) = (Arc::clone(&tid), Arc::clone(&running));
        let (ready_tx, ready_rx) = channel();
        std::thread::Builder::new()
            .name("synack-script-call".into())
            .spawn(move || {
                let _ = realtime();
                let entered = enter(&name);
                // SAFETY: gettid has no preconditions.
                t.store(unsafe { libc::gettid() }, Ordering::SeqCst);
                let ok = entered.is_ok();
                let _ = ready_tx.send(entered);
                if !ok {
                    return;
                }
                for (id, call) in rx {
                    r.store(id, Ordering::SeqCst);
                    let result = make_call(&call, &sockets);
                    let at = Instant::now();
                    r.store(0, Ordering::SeqCst);
                    if done.send((id, at, result)).is_err() {
                        return;
                    }
                    // SAFETY: a one-byte write to our pipe; a full pipe already wakes.
                    unsafe { libc::write(wake.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
                }
            })
            .map_err(|e| BackendError::Failed(format!("spawn a call thread: {e}")))?;
        ready_rx
            .recv()
            .map_err(|_| BackendError::Failed("the call thread died".into()))??;
        self.workers.push(Worker { jobs, tid, running });
        Ok(self.workers.len() - 1)
    }

    /// Moves what the workers finished into `finished`, and frees them.
    fn collect_finished(&mut self) {
        while let Ok((id, at, result)) = self.shared.finished.try_recv() {
            if let Some(w) = self.busy.remove(&id) {
                self.idle.push(w);
            }
            let at = self.since_start(at);
            self.finished.push_back(Finished { id, at, result });
        }
    }

    /// Reads every packet waiting on the TUN.
    fn read_tun(&mut self) -> Result<(), BackendError> {
        loop {
            // SAFETY: reading into our own buffer, of its length, from our descriptor.
            let n = unsafe {
                libc::read(
                    self.tun.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                )
            };
            let r = if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            };
            match r {
                Ok(n) if n > VNET_HDR_LEN => {
                    let at = self.since_start(Instant::now());
                    let needs_csum = self.buf[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0;
                    let gso_type = self.buf[1] & !VIRTIO_NET_HDR_GSO_ECN;
                    let gso_size = usize::from(u16::from_le_bytes([self.buf[4], self.buf[5]]));
                    let mut bytes = self.buf[VNET_HDR_LEN..n].to_vec();
                    if needs_csum {
                        wire::complete_checksum(&mut bytes);
                    }
                    if gso_type == VIRTIO_NET_HDR_GSO_TCPV4 {
                        // What the wire would carry; the runner joins the pieces again
                        // when a script expects the super-segment.
                        for piece in wire::split_tso(&bytes, gso_size) {
                            self.emitted.push_back(Emitted {
                                at,
                                bytes: piece,
                                note: String::new(),
                            });
                        }
                    } else {
                        self.emitted.push_back(Emitted {
                            at,
                            bytes,
                            note: String::new(),
                        });
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(BackendError::Failed(format!("read from {DEVICE}: {e}"))),
            }
        }
    }
}

impl Drop for LinuxBackend {
    fn drop(&mut self) {
        if let Some((policy, param)) = self.sched.take() {
            // SAFETY: restores the calling thread's own scheduling parameters.
            unsafe { libc::pthread_setschedparam(libc::pthread_self(), policy, &param) };
        }
        // Wake calls still blocked (an accept that never got its connection) and close
        // every socket; the namespace goes after (field order).
        if let Ok(set) = self.sockets.lock() {
            for &fd in set.iter() {
                // SAFETY: these are sockets the workers made and nobody else closes.
                unsafe {
                    libc::shutdown(fd, libc::SHUT_RDWR);
                    libc::close(fd);
                }
            }
        }
    }
}

/// Whether a thread of this process sleeps in the kernel (state S or D).
fn sleeping(tid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rfind(')')?;
            s[after + 1..]
                .split_whitespace()
                .next()
                .map(|st| st == "S" || st == "D")
        })
        .unwrap_or(false)
}

impl Backend for LinuxBackend {
    fn name(&self) -> &str {
        "linux"
    }

    fn local_addr(&self) -> Ipv4Addr {
        LOCAL
    }

    fn remote_addr(&self) -> Ipv4Addr {
        REMOTE
    }

    fn epoch(&self) -> Duration {
        self.epoch
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn wait(&mut self, deadline: Duration) -> Result<(), BackendError> {
        self.read_tun()?;
        self.collect_finished();
        if !self.emitted.is_empty() || !self.finished.is_empty() {
            return Ok(());
        }
        let left = deadline.saturating_sub(self.now());
        let ts = libc::timespec {
            tv_sec: left.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(left.subsec_nanos() as i32),
        };
        let mut fds = [
            libc::pollfd {
                fd: self.tun.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.shared.wake_rx.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds and a timespec that live across the call.
        let n = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &ts, std::ptr::null()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(BackendError::Failed(format!("ppoll: {e}")));
            }
        }
        let mut sink = [0u8; 64];
        // SAFETY: reading into a local buffer from our non-blocking pipe.
        while unsafe {
            libc::read(
                self.shared.wake_rx.as_raw_fd(),
                sink.as_mut_ptr().cast(),
                sink.len(),
            )
        } > 0
        {}
        self.read_tun()?;
        self.collect_finished();
        Ok(())
    }

    fn inject(&mut self, packet: &[u8]) -> Result<(), BackendError> {
        let mut frame = vec![0u8; VNET_HDR_LEN + packet.len()];
        frame[VNET_HDR_LEN..].copy_from_slice(packet);
        // SAFETY: writing our own buffer, of its length, to our descriptor.
        let n = unsafe { libc::write(self.tun.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        if n < 0 {
            return Err(BackendError::Failed(format!(
                "write to {DEVICE}: {}",
                io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    fn take_emitted(&mut self) -> Option<Emitted> {
        if self.emitted.is_empty() {
            let _ = self.read_tun();
        }
        self.emitted.pop_front()
    }

    fn start_call(&mut self, call: &Call) -> Result<Started, BackendError> {
        let w = match self.idle.pop() {
            Some(w) => w,
            None => self.spawn_worker()?,
        };
        let id = self.next_call;
        self.next_call += 1;
        self.busy.insert(id, w);
        let worker = &self.workers[w];
        worker
            .jobs
            .send((id, call.clone()))
            .map_err(|_| BackendError::Failed("a call thread is gone".into()))?;
        let (tid, running) = (
            worker.tid.load(Ordering::SeqCst),
            Arc::clone(&worker.running),
        );
        // Wait until the call returns or its thread sleeps in the kernel (packetdrill's
        // is_thread_sleeping), whichever comes first.
        loop {
            self.collect_finished();
            if let Some(i) = self.finished.iter().position(|f| f.id == id) {
                let f = self.finished.remove(i).expect("found above");
                return Ok(Started::Done(f.result));
            }
            if running.load(Ordering::SeqCst) == id && sleeping(tid) {
                // Sleeping may be a lock taken briefly: look once more before saying so.
                std::thread::yield_now();
                self.collect_finished();
                if let Some(i) = self.finished.iter().position(|f| f.id == id) {
                    let f = self.finished.remove(i).expect("found above");
                    return Ok(Started::Done(f.result));
                }
                if running.load(Ordering::SeqCst) == id && sleeping(tid) {
                    return Ok(Started::Blocked(id));
                }
            }
            std::thread::yield_now();
        }
    }

    fn take_finished(&mut self) -> Option<Finished> {
        self.collect_finished();
        self.finished.pop_front()
    }

    fn set_sysctl(&mut self, key: &str, value: &str) -> Result<(), BackendError> {
        let (k, v) = (key.to_owned(), value.to_owned());
        self.netns.run_in(move || {
            write_sysctl(&k, &v).map_err(|e| BackendError::Failed(format!("sysctl {k}={v}: {e}")))
        })
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn ret(r: libc::c_long) -> CallResult {
    if r < 0 {
        CallResult::err(errno())
    } else {
        CallResult::ok(r)
    }
}

fn sockaddr(a: &SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Makes one call on the kernel's sockets (on a thread in the namespace).
fn make_call(call: &Call, sockets: &Mutex<HashSet<i32>>) -> CallResult {
    let track = |r: CallResult| {
        if r.ret >= 0
            && let Ok(mut s) = sockets.lock()
        {
            s.insert(r.ret as i32);
        }
        r
    };
    let len_in = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY (all arms): plain socket system calls on descriptors the script names, with
    // buffers and structures that live across each call and lengths that match them.
    unsafe {
        match call {
            Call::Socket {
                domain,
                ty,
                protocol,
            } => track(ret(libc::socket(*domain, *ty, *protocol) as libc::c_long)),
            Call::Bind { fd, addr } => {
                let sa = sockaddr(addr);
                ret(
                    libc::bind(*fd, (&sa as *const libc::sockaddr_in).cast(), len_in)
                        as libc::c_long,
                )
            }
            Call::Listen { fd, backlog } => ret(libc::listen(*fd, *backlog) as libc::c_long),
            Call::Accept { fd } => {
                track(ret(
                    libc::accept(*fd, std::ptr::null_mut(), std::ptr::null_mut()) as libc::c_long,
                ))
            }
            Call::Connect { fd, addr } => {
                let sa = sockaddr(addr);
                ret(
                    libc::connect(*fd, (&sa as *const libc::sockaddr_in).cast(), len_in)
                        as libc::c_long,
                )
            }
            Call::Recv { fd, len, flags } => {
                let mut buf = vec![0u8; *len];
                ret(libc::recv(*fd, buf.as_mut_ptr().cast(), *len, *flags) as libc::c_long)
            }
            Call::Send { fd, len, flags } => {
                let buf = vec![0u8; *len];
                // MSG_NOSIGNAL: EPIPE comes back as an error, as packetdrill's SIG_IGN.
                ret(
                    libc::send(*fd, buf.as_ptr().cast(), *len, *flags | libc::MSG_NOSIGNAL)
                        as libc::c_long,
                )
            }
            Call::Shutdown { fd, how } => ret(libc::shutdown(*fd, *how) as libc::c_long),
            Call::Close { fd } => {
                let r = ret(libc::close(*fd) as libc::c_long);
                if r.ret == 0
                    && let Ok(mut s) = sockets.lock()
                {
                    s.remove(fd);
                }
                r
            }
            Call::Fcntl { fd, cmd, arg } => ret(match arg {
                Some(a) => libc::fcntl(*fd, *cmd, *a as libc::c_long),
                None => libc::fcntl(*fd, *cmd),
            } as libc::c_long),
            Call::SetSockOpt {
                fd,
                level,
                name,
                value,
            } => match value {
                OptValue::Int(v) => ret(libc::setsockopt(
                    *fd,
                    *level,
                    *name,
                    (v as *const i32).cast(),
                    std::mem::size_of::<i32>() as libc::socklen_t,
                ) as libc::c_long),
                OptValue::Linger { onoff, linger } => {
                    let l = libc::linger {
                        l_onoff: *onoff,
                        l_linger: *linger,
                    };
                    ret(libc::setsockopt(
                        *fd,
                        *level,
                        *name,
                        (&l as *const libc::linger).cast(),
                        std::mem::size_of::<libc::linger>() as libc::socklen_t,
                    ) as libc::c_long)
                }
            },
            Call::GetSockOpt { fd, level, name } => {
                let mut v: i32 = 0;
                let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
                let r =
                    ret(
                        libc::getsockopt(*fd, *level, *name, (&mut v as *mut i32).cast(), &mut len)
                            as libc::c_long,
                    );
                CallResult {
                    value: (r.ret == 0).then_some(i64::from(v)),
                    ..r
                }
            }
        }
    }
}
