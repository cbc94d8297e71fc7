//! SYN cookies (RFC 4987 §3.6), the ISNs of passive connections (RFC 6528), the keys of
//! both, and the one way to make smoltcp use an initial sequence number we chose.
//!
//! When a port's SYN queue is full, the node answers a SYN without keeping anything: the
//! SYN-ACK's sequence number is a cookie that encodes what the connection needs (the
//! peer's MSS, window scale and SACK-permitted) and a keyed hash of the connection, so
//! that the ACK completing the handshake proves the peer real and carries everything
//! back. Linux does this by default (`tcp_syncookies = 1`). Layout, like Linux's:
//!
//! ```text
//!  31     27 26         20 19                     0
//! | period  |    data     |   hash (20 bits)       |
//! ```
//!
//! `period` is the low 5 bits of a counter of 64 s periods, from which the check
//! rebuilds the whole counter (Linux's `tcp_cookie_time()`, whose periods are 60 s); a
//! cookie is good in the period it was made and the next, 64 to 128 s (Linux's
//! `MAX_SYNCOOKIE_AGE`). `data` is the MSS index (2 bits), the peer's window scale (4
//! bits, 15 = none) and SACK-permitted (1 bit); the hash is SipHash-2-4 of the 4-tuple,
//! the peer's ISN, the whole counter and the data under a secret key, so a cookie
//! captured once does not come back to life 32 periods later. Linux keeps 24 hash bits; 20 make a blind
//! forgery succeed once in a million tries, enough for a teaching tool (the README says so).
//!
//! A passive connection's ISN is RFC 6528's, a 4 µs clock plus a keyed hash of the
//! 4-tuple ([`Cookies::isn`]), never a draw from smoltcp's generator: that is one sPCG32
//! stream, whose state (and every later ISN) two consecutive ISNs give away.
//!
//! smoltcp picks a socket's ISN from its interface's generator and offers no way to set
//! it. Its generator is sPCG32 (smoltcp 0.14, `src/rand.rs`), which is invertible: for
//! any wanted ISN there is a seed such that an interface made with it draws that ISN on
//! the first SYN it answers. [`interface_seed_for_isn`] computes it; a unit test in the
//! node checks the SYN-ACK that comes out.

use std::net::SocketAddrV4;

use smoltcp::time::Instant;

use crate::observe::SynOptions;

/// Peer MSS values a cookie can say (Linux's `msstab`): the largest not above the
/// peer's goes into the cookie. A cookie connection never uses a bigger MSS.
pub const MSS_TABLE: [u16; 4] = [536, 1300, 1440, 1460];

/// A cookie's unit of time, in seconds.
const PERIOD_SECS: u64 = 64;

/// A cookie is good while the period counter has moved on by less than this since it
/// was made: in its own period and the next (Linux: `MAX_SYNCOOKIE_AGE` = 2, checked
/// `diff >= MAX_SYNCOOKIE_AGE`, refused).
const MAX_AGE: u32 = 2;

/// The period counter's low bits that a cookie carries.
const PERIOD_MASK: u32 = 0x1f;

const NO_WSCALE: u8 = 15;

/// What a cookie carries back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Carried {
    pub mss: u16,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
}

impl Carried {
    /// What a SYN offered, as a cookie can keep it.
    pub fn from_syn(options: &SynOptions) -> Carried {
        let mss = options.mss.unwrap_or(536);
        let idx = MSS_TABLE.iter().rposition(|&m| m <= mss).unwrap_or(0);
        Carried {
            mss: MSS_TABLE[idx],
            window_scale: options.window_scale.map(|w| w.min(14)),
            sack_permitted: options.sack_permitted,
        }
    }

    fn bits(&self) -> u32 {
        let idx = MSS_TABLE.iter().position(|&m| m == self.mss).unwrap_or(0) as u32;
        let ws = u32::from(self.window_scale.unwrap_or(NO_WSCALE));
        (idx << 5) | (ws << 1) | u32::from(self.sack_permitted)
    }

    fn from_bits(bits: u32) -> Carried {
        let ws = ((bits >> 1) & 0xf) as u8;
        Carried {
            mss: MSS_TABLE[((bits >> 5) & 3) as usize],
            window_scale: (ws != NO_WSCALE).then_some(ws),
            sack_permitted: bits & 1 != 0,
        }
    }
}

/// Makes and checks cookies, and picks passive ISNs, under two secret keys.
#[derive(Debug, Clone)]
pub struct Cookies {
    key: (u64, u64),
    isn_key: (u64, u64),
}

impl Cookies {
    /// The keys come from `secret` (the OS's random bytes) when there is one. Without
    /// one the run is to be reproducible, and they derive from `seed`: anyone who knows
    /// or recovers the seed (smoltcp's generator gives it away through our active ISNs
    /// and ports) can then forge cookies and predict ISNs.
    pub fn new(seed: u64, secret: Option<[u8; 32]>) -> Self {
        match secret {
            Some(b) => {
                let word = |i: usize| {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(&b[i..i + 8]);
                    u64::from_le_bytes(w)
                };
                Cookies {
                    key: (word(0), word(8)),
                    isn_key: (word(16), word(24)),
                }
            }
            None => {
                let mut s = seed ^ 0x5359_4e43_4f4f_4b49; // "SYNCOOKI"
                Cookies {
                    key: (splitmix(&mut s), splitmix(&mut s)),
                    isn_key: (splitmix(&mut s), splitmix(&mut s)),
                }
            }
        }
    }

    /// The ISN of a passive connection from `remote` to `local` at `now` (RFC 6528 §3,
    /// RFC 9293 §3.4.1): ISN = M + F(localip, localport, remoteip, remoteport, key), M a
    /// timer that ticks every 4 µs and F a keyed hash (SipHash-2-4, as Linux's
    /// `secure_tcp_seq`). Each 4-tuple gets its own sequence space, moving with the
    /// clock: an attacker who sees ours learns nothing of another connection's.
    pub fn isn(&self, local: SocketAddrV4, remote: SocketAddrV4, now: Instant) -> u32 {
        let m = (now.total_micros() / 4) as u32;
        let ips = u64::from(u32::from(*local.ip())) << 32 | u64::from(u32::from(*remote.ip()));
        let ports = u64::from(local.port()) << 16 | u64::from(remote.port());
        m.wrapping_add(siphash24(self.isn_key, &[ips, ports]) as u32)
    }

    #[cfg(test)]
    pub(super) fn cookie_key(&self) -> (u64, u64) {
        self.key
    }

    /// The cookie for a SYN from `remote` to `local` with ISN `peer_isn`, at `secs`
    /// seconds on the clock.
    pub fn make(
        &self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        peer_isn: u32,
        secs: u64,
        carried: Carried,
    ) -> u32 {
        let period = secs / PERIOD_SECS;
        let data = carried.bits();
        let hash = self.hash(local, remote, peer_isn, period, data);
        ((period as u32 & PERIOD_MASK) << 27) | (data << 20) | hash
    }

    /// What an ACK's cookie (its ACK number minus one) carries, if it is ours, fresh, and
    /// made for this connection (`peer_isn`: the ACK's sequence number minus one).
    pub fn check(
        &self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        peer_isn: u32,
        secs: u64,
        cookie: u32,
    ) -> Option<Carried> {
        let data = (cookie >> 20) & 0x7f;
        // The cookie's age from the low bits it carries, and so the whole counter it was
        // made with (Linux's `check_tcp_syn_cookie`).
        let now = secs / PERIOD_SECS;
        let age = (now as u32).wrapping_sub(cookie >> 27) & PERIOD_MASK;
        if age >= MAX_AGE {
            return None;
        }
        let period = now.wrapping_sub(u64::from(age));
        (self.hash(local, remote, peer_isn, period, data) == cookie & 0xf_ffff)
            .then(|| Carried::from_bits(data))
    }

    fn hash(
        &self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        peer_isn: u32,
        period: u64,
        data: u32,
    ) -> u32 {
        let a = u64::from(u32::from(*local.ip())) << 32 | u64::from(u32::from(*remote.ip()));
        let b =
            u64::from(local.port()) << 48 | u64::from(remote.port()) << 32 | u64::from(peer_isn);
        (siphash24(self.key, &[a, b, period, u64::from(data)]) & 0xf_ffff) as u32
    }
}

/// 32 bytes from the kernel's random generator: getrandom(2), or /dev/urandom where the
/// system call is missing.
pub fn os_secret() -> std::io::Result<[u8; 32]> {
    let mut buf = [0u8; 32];
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the pointer and length describe `rest`, which the call only writes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n > 0 {
            filled += n as usize;
            continue;
        }
        if n == 0 {
            return Err(std::io::Error::other("getrandom gave no bytes"));
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::ENOSYS) => {
                use std::io::Read;
                std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
                return Ok(buf);
            }
            _ => return Err(err),
        }
    }
    Ok(buf)
}

fn splitmix(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// SipHash-2-4 (Aumasson and Bernstein, 2012) of whole little-endian words: a keyed hash
/// that an attacker cannot steer without the key.
pub(super) fn siphash24(key: (u64, u64), words: &[u64]) -> u64 {
    let mut v = [
        key.0 ^ 0x736f_6d65_7073_6575,
        key.1 ^ 0x646f_7261_6e64_6f6d,
        key.0 ^ 0x6c79_6765_6e65_7261,
        key.1 ^ 0x7465_6462_7974_6573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let absorb = |m: u64, v: &mut [u64; 4]| {
        v[3] ^= m;
        round(v);
        round(v);
        v[0] ^= m;
    };
    for &w in words {
        absorb(w, &mut v);
    }
    // The final block holds the message length in bytes in its top byte.
    absorb(((words.len() as u64 * 8) & 0xff) << 56, &mut v);
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// smoltcp 0.14's generator (sPCG32): state' = state * M + A.
const PCG_M: u64 = 0xbb2e_fcec_3c39_611d;
const PCG_A: u64 = 0x7590_ef39;

fn pcg_output(state: u64) -> u32 {
    (state >> (29 - (state >> 61))) as u32
}

/// M's inverse modulo 2^64 (M is odd), by Newton's iteration.
const fn pcg_m_inverse() -> u64 {
    let mut x = PCG_M;
    let mut i = 0;
    while i < 6 {
        x = x.wrapping_mul(2u64.wrapping_sub(PCG_M.wrapping_mul(x)));
        i += 1;
    }
    x
}

/// The `random_seed` for an `Interface` whose first TCP ISN (the first SYN it answers
/// or sends) is `isn`. `Interface::new` draws once for the IPv4 identification (again if
/// that draw is 0); the seed is chosen so that draw is not 0, and the next is `isn`.
pub fn interface_seed_for_isn(isn: u32) -> u64 {
    let inv = pcg_m_inverse();
    let back = |s: u64| s.wrapping_sub(PCG_A).wrapping_mul(inv);
    // With the top three bits clear the output is bits 29..61 of the state; the low 29
    // bits are free, so try them until the identification draw before is not 0.
    for low in 0..1024u64 {
        let s2 = (u64::from(isn) << 29) | low;
        let s1 = back(s2);
        let n = pcg_output(s1);
        if (n ^ (n >> 16)) as u16 != 0 {
            return back(s1);
        }
    }
    // Unreachable in practice: 1024 tries with a 1 in 65536 chance each to fail.
    0
}

/// The ISNs smoltcp's own generator would give, seeded with `seed`: after
/// `Interface::new`'s IPv4 identification (drawn again while 0), its next `n` outputs.
#[cfg(test)]
pub(super) fn smoltcp_isn_draws(seed: u64, n: usize) -> Vec<u32> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_mul(PCG_M).wrapping_add(PCG_A);
        pcg_output(state)
    };
    while {
        let id = next();
        (id ^ (id >> 16)) as u16 == 0
    } {}
    (0..n).map(|_| next()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    #[test]
    fn siphash_matches_the_reference_vector() {
        // The paper's test key 00 01 .. 0f and the 16-byte message 00 01 .. 0f
        // (SipHash-2-4, 64-bit output: 0x3f2acc7f57c29bdb).
        let key = (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
        let words = [0x0706_0504_0302_0100u64, 0x0f0e_0d0c_0b0a_0908];
        assert_eq!(siphash24(key, &words), 0x3f2a_cc7f_57c2_9bdb);
    }

    #[test]
    fn a_cookie_carries_the_options_back_and_only_for_its_connection() {
        let c = Cookies::new(7, None);
        let (l, r) = (addr("10.77.0.2:80"), addr("10.77.0.50:1234"));
        let syn = SynOptions {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            timestamps: true,
        };
        let carried = Carried::from_syn(&syn);
        let cookie = c.make(l, r, 1000, 6400, carried);
        assert_eq!(c.check(l, r, 1000, 6400, cookie), Some(carried));
        assert_eq!(carried.mss, 1460);
        assert_eq!(carried.window_scale, Some(7));
        // Another port, another ISN, another secret: refused.
        assert!(
            c.check(l, addr("10.77.0.50:1235"), 1000, 6400, cookie)
                .is_none()
        );
        assert!(c.check(l, r, 1001, 6400, cookie).is_none());
        assert!(
            Cookies::new(8, None)
                .check(l, r, 1000, 6400, cookie)
                .is_none()
        );
        assert!(c.check(l, r, 1000, 6400, cookie ^ 1).is_none());
    }

    /// A cookie made at `secs` for the connection the tests use, and its check at `later`.
    fn good_at(c: &Cookies, secs: u64, later: u64) -> bool {
        let (l, r) = (addr("10.77.0.2:80"), addr("10.77.0.50:1234"));
        let carried = Carried::from_syn(&SynOptions::default());
        let cookie = c.make(l, r, 1000, secs, carried);
        c.check(l, r, 1000, later, cookie) == Some(carried)
    }

    #[test]
    fn a_cookie_is_good_in_its_period_and_the_next_and_never_after() {
        let c = Cookies::new(7, None);
        // Made at the start of period 100 and at its last second.
        for made in [100 * PERIOD_SECS, 101 * PERIOD_SECS - 1] {
            assert!(good_at(&c, made, made));
            assert!(good_at(&c, made, 101 * PERIOD_SECS), "1 period old");
            assert!(good_at(&c, made, 102 * PERIOD_SECS - 1), "1 period old");
            assert!(!good_at(&c, made, 102 * PERIOD_SECS), "2 periods old");
            assert!(!good_at(&c, made, 103 * PERIOD_SECS), "3 periods old");
            assert!(!good_at(&c, made, made - PERIOD_SECS), "from the future");
        }
    }

    #[test]
    fn a_cookie_replayed_when_the_carried_counter_comes_round_again_is_refused() {
        // The cookie carries the counter's low 5 bits: 32 periods later they match again,
        // and only the full counter in the hash tells the replay apart.
        let c = Cookies::new(7, None);
        let made = 100 * PERIOD_SECS + 5;
        for periods in [32, 33, 64, 32 * 1000] {
            let later = made + periods * PERIOD_SECS;
            assert!(!good_at(&c, made, later), "{periods} periods later");
        }
        // The same cookie, checked in time, is good: the refusals are the counter's.
        assert!(good_at(&c, made, made + PERIOD_SECS));
    }

    #[test]
    fn mss_rounds_down_to_the_table_and_no_wscale_survives() {
        let syn = SynOptions {
            mss: Some(1400),
            ..SynOptions::default()
        };
        let carried = Carried::from_syn(&syn);
        assert_eq!(carried.mss, 1300);
        assert_eq!(Carried::from_bits(carried.bits()), carried);
        assert_eq!(carried.window_scale, None);
        assert!(!carried.sack_permitted);
        let tiny = Carried::from_syn(&SynOptions {
            mss: Some(100),
            ..SynOptions::default()
        });
        assert_eq!(tiny.mss, 536);
    }

    #[test]
    fn the_seed_makes_the_generator_draw_the_isn_second() {
        for isn in [0u32, 1, 0xdead_beef, u32::MAX, 123_456_789] {
            let mut state = interface_seed_for_isn(isn);
            state = state.wrapping_mul(PCG_M).wrapping_add(PCG_A);
            let n = pcg_output(state);
            assert_ne!((n ^ (n >> 16)) as u16, 0, "the identification draw");
            state = state.wrapping_mul(PCG_M).wrapping_add(PCG_A);
            assert_eq!(pcg_output(state), isn);
        }
    }
}
