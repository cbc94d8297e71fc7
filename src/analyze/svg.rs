//! What the SVG pictures share: round tick values for an axis, and numbers written
//! the way a reader takes them in (50k, 1.5M, 0.25).

/// A round step for about `count` ticks over `range`: 1, 2 or 5 times a power of ten.
pub fn step(range: f64, count: f64) -> f64 {
    if !(range.is_finite() && range > 0.0) {
        return 1.0;
    }
    let raw = range / count.max(1.0);
    let power = 10f64.powf(raw.log10().floor());
    let m = raw / power;
    let nice = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * power
}

/// Round tick values from `lo` to `hi` (both included when they fall on a step).
pub fn ticks(lo: f64, hi: f64, count: f64) -> (Vec<f64>, f64) {
    let s = step(hi - lo, count);
    let mut v = Vec::new();
    let mut k = (lo / s).ceil();
    // Bounded: a step from `step` gives about `count` ticks; never more than 100.
    while k * s <= hi + s * 1e-9 && v.len() < 100 {
        // Rounded to the step's decimals (0.6, not 0.6000000000000001); -0 looks odd.
        let scale = 10f64.powi(decimals(s) as i32 + 3);
        v.push((k * s * scale).round() / scale + 0.0);
        k += 1.0;
    }
    (v, s)
}

/// Decimals that show a step of `step` exactly.
fn decimals(step: f64) -> usize {
    if step >= 1.0 || step <= 0.0 {
        0
    } else {
        (-step.log10() - 1e-9).ceil().clamp(0.0, 9.0) as usize
    }
}

/// A tick value with as many decimals as its axis's step needs.
pub fn number(v: f64, step: f64) -> String {
    format!("{v:.*}", decimals(step))
}

/// A byte count on an axis whose largest tick is `top`: 0, 50k, 1.5M (and 600, 1200 on
/// an axis that stays under 10 000, where plain numbers read better).
pub fn bytes(v: f64, step: f64, top: f64) -> String {
    let (unit, suffix) = if top >= 1e6 {
        (1e6, "M")
    } else if top >= 1e4 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    if v == 0.0 {
        return "0".into();
    }
    format!("{}{suffix}", number(v / unit, step / unit))
}

/// Ticks for a logarithmic axis from `lo` to `hi` (both > 0): the powers of ten, and
/// 2 and 5 times them when there are few decades.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let few = b - a <= 3;
    let mut v = Vec::new();
    for e in a.max(-9)..=b.min(9) {
        let p = 10f64.powi(e);
        for m in [1.0, 2.0, 5.0] {
            if (m == 1.0 || few) && (lo..=hi * (1.0 + 1e-9)).contains(&(m * p)) {
                v.push(m * p);
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(ticks(0.0, 1.0, 5.0).0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(ticks(0.0, 300_000.0, 6.0).0.len(), 7);
        assert_eq!(ticks(0.0, 300_000.0, 6.0).1, 50_000.0);
        let (t, s) = ticks(0.013, 4.056, 10.0);
        assert_eq!(s, 0.5);
        assert_eq!(t.first(), Some(&0.5));
        assert_eq!(number(0.25, 0.05), "0.25");
        assert_eq!(number(3.0, 0.5), "3.0");
        assert_eq!(number(1000.0, 200.0), "1000");
        assert_eq!(bytes(150_000.0, 50_000.0, 300_000.0), "150k");
        assert_eq!(bytes(1_500_000.0, 500_000.0, 2e6), "1.5M");
        assert_eq!(bytes(0.0, 500_000.0, 2e6), "0");
        assert_eq!(bytes(1200.0, 200.0, 1300.0), "1200");
        assert_eq!(log_ticks(0.5, 1000.0), [1.0, 10.0, 100.0, 1000.0]);
        assert_eq!(log_ticks(1.0, 20.0), [1.0, 2.0, 5.0, 10.0, 20.0]);
        // Degenerate ranges do not loop or panic.
        assert_eq!(ticks(1.0, 1.0, 5.0).0, [1.0]);
        assert!(ticks(f64::NAN, 1.0, 5.0).0.len() <= 100);
    }
}
