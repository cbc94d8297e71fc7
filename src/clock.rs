//! Time: the stack's clock and the calendar arithmetic the journey and HTTP need.
//!
//! Every function that needs the time takes it as an argument (as smoltcp does); this
//! module is where real runs read it.

use std::cell::Cell;
use std::rc::Rc;

use smoltcp::time::Instant;

/// Where a virtual clock starts: 2026-01-01 00:00:00 UTC, so that HTTP `Date` headers and
/// capture timestamps of simulated runs read as a plausible date, the same on every run.
pub const VIRTUAL_EPOCH: Instant = Instant::from_millis_const(1_767_225_600_000);

/// The clock a stack reads. Real runs read the wall clock; the in-process simulation
/// (`synack demo`) shares one virtual clock between its stacks and moves it itself, which
/// is what makes its captures reproducible byte for byte.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    Real,
    Virtual(Rc<Cell<Instant>>),
}

impl Clock {
    /// A virtual clock standing at [`VIRTUAL_EPOCH`].
    pub fn virtual_time() -> Self {
        Clock::Virtual(Rc::new(Cell::new(VIRTUAL_EPOCH)))
    }

    /// Microseconds since the Unix epoch, as smoltcp counts.
    pub fn now(&self) -> Instant {
        match self {
            Clock::Real => Instant::now(),
            Clock::Virtual(t) => t.get(),
        }
    }

    /// Moves a virtual clock forward to `t` (never back); the real clock moves itself.
    pub fn advance_to(&self, t: Instant) {
        if let Clock::Virtual(cell) = self
            && t > cell.get()
        {
            cell.set(t);
        }
    }
}

/// The real clock: microseconds since the Unix epoch, as smoltcp counts.
pub fn now() -> Instant {
    Instant::now()
}

/// UTC calendar date and time of a Unix timestamp (Howard Hinnant's civil-from-days), so
/// dates need no extra crate: (year, month, day, hour, minute, second).
pub fn civil_from_unix(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

/// An IMF-fixdate for the HTTP `Date` header (RFC 9110 §5.6.7).
pub fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s) = civil_from_unix(secs);
    let weekday = DAYS[((secs / 86_400) % 7) as usize];
    format!(
        "{weekday}, {d:02} {} {y:04} {h:02}:{mi:02}:{s:02} GMT",
        MONTHS[(mo - 1) as usize]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_unix(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil_from_unix(1_795_000_000), (2026, 11, 18, 11, 6, 40));
        assert_eq!(civil_from_unix(951_782_400), (2000, 2, 29, 0, 0, 0));
    }

    #[test]
    fn http_dates() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
