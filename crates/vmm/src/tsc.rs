//! The host's TSC frequency, which a TCG guest must be told.
//!
//! Under TCG, QEMU's guest TSC is the host's TSC (less its value when the
//! VM started): it counts at the host's rate. A Linux guest cannot
//! calibrate it under emulation (it hangs), so the kernel command line
//! says the rate (`tsc_early_khz`). A wrong rate makes every guest clock
//! and timer wrong by the ratio: a constant 2 GHz on a 2.6 GHz host ran
//! guests 23% fast. So the rate is measured here, once per process,
//! against the host's own clock, which is exactly what the guest needs to
//! agree with.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Serialize;

/// What guests were told before the rate was measured; used only when it
/// cannot be (a host whose TSC does not tick at a constant rate).
pub const FALLBACK_KHZ: u32 = 2_000_000;
/// How long each measurement counts ticks.
const WINDOW: Duration = Duration::from_millis(100);
/// Measurements taken; their spread says whether the TSC is steady.
const SAMPLES: usize = 3;
/// The most the measurements may disagree (relative) to be trusted.
const MAX_SPREAD: f64 = 1e-3;

/// The rate a TCG guest is told, and where it came from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TscRate {
    pub khz: u32,
    /// `None` when measured; else why [`FALLBACK_KHZ`] is used.
    pub fallback: Option<String>,
}

impl TscRate {
    /// For `doctor`: "2596125 kHz (measured)".
    pub fn describe(&self) -> String {
        match &self.fallback {
            None => format!("{} kHz (measured on this host)", self.khz),
            Some(why) => format!("{} kHz (a guess: {why})", self.khz),
        }
    }
}

/// The host's TSC rate, measured the first time it is asked for.
pub fn host_rate() -> &'static TscRate {
    static RATE: OnceLock<TscRate> = OnceLock::new();
    RATE.get_or_init(|| {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let rate = measure(&cpuinfo);
        tracing::info!(khz = rate.khz, fallback = ?rate.fallback, "host TSC rate for TCG guests");
        rate
    })
}

fn measure(cpuinfo: &str) -> TscRate {
    let fallback = |why: String| TscRate {
        khz: FALLBACK_KHZ,
        fallback: Some(why),
    };
    if let Some(missing) = missing_flag(cpuinfo) {
        return fallback(format!(
            "the host CPU has no {missing}, so its TSC does not tick at one rate"
        ));
    }
    let mut rates: Vec<f64> = (0..SAMPLES).map(|_| sample(WINDOW)).collect();
    rates.sort_by(f64::total_cmp);
    match steady_khz(&rates) {
        Some(khz) => TscRate {
            khz,
            fallback: None,
        },
        None => fallback(format!(
            "measurements disagree ({:.0} to {:.0} kHz)",
            rates[0],
            rates[rates.len() - 1]
        )),
    }
}

/// The flag of `/proc/cpuinfo` a constant, never-stopping TSC needs that
/// this host lacks.
fn missing_flag(cpuinfo: &str) -> Option<&'static str> {
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.split_whitespace().collect())
        .unwrap_or_default();
    ["tsc", "constant_tsc", "nonstop_tsc"]
        .into_iter()
        .find(|f| !flags.contains(f))
}

/// The median of sorted measurements (kHz), if they agree.
fn steady_khz(sorted: &[f64]) -> Option<u32> {
    let (low, high) = (*sorted.first()?, *sorted.last()?);
    let median = sorted[sorted.len() / 2];
    let plausible = (100_000.0..20_000_000.0).contains(&median);
    (plausible && (high - low) / median <= MAX_SPREAD).then(|| median.round() as u32)
}

/// Ticks per millisecond of the host's monotonic clock over `window`.
fn sample(window: Duration) -> f64 {
    let (t0, i0) = pair();
    std::thread::sleep(window);
    let (t1, i1) = pair();
    let nanos = i1.duration_since(i0).as_nanos() as f64;
    (t1 - t0) as f64 / nanos * 1e6
}

/// A TSC reading and the clock reading taken with it: of a few tries, the
/// one whose two TSC reads around the clock read are closest (the least
/// disturbed by an interrupt or preemption), at their midpoint.
fn pair() -> (u64, Instant) {
    let mut best = (u64::MAX, 0, Instant::now());
    for _ in 0..32 {
        let before = rdtsc();
        let now = Instant::now();
        let after = rdtsc();
        let width = after.wrapping_sub(before);
        if width < best.0 {
            best = (width, before + width / 2, now);
        }
    }
    (best.1, best.2)
}

#[allow(unsafe_code)]
fn rdtsc() -> u64 {
    // SAFETY: RDTSC reads a counter; it touches no memory, and every
    // x86_64 CPU has it (the caller checked the `tsc` flag anyway).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The TCG part of the kernel command line for a host whose TSC ticks at
/// `khz`: the rate (the kernel would hang calibrating it), `tsc=reliable`
/// (the kernel's synchronisation checks see emulated vCPUs as skewed and
/// would drop to jiffies, which inherit any error), and no timer check
/// (the emulated timer interrupt is too slow for it), and the delay
/// loop's `lpj` from the same rate: the boot vCPU would derive it, but
/// the others calibrate it again, which under TCG fails slowly ("failed
/// to get a good estimate"). `lpj` is TSC ticks per jiffy, so it needs the
/// kernel's `HZ`: [`GUEST_HZ`].
pub fn tcg_cmdline(khz: u32) -> String {
    let lpj = u64::from(khz) * 1000 / GUEST_HZ;
    format!("tsc_early_khz={khz} tsc=reliable no_timer_check lpj={lpj}")
}

/// `CONFIG_HZ` of the kernels banger boots: Debian's (the default image's
/// and OCI images' kernel) use 250. A kernel with a higher `HZ` gets
/// longer delays than asked for, never shorter ones, unless its HZ is
/// below 250.
pub const GUEST_HZ: u64 = 250;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_carries_the_rate_given() {
        assert_eq!(
            tcg_cmdline(2_596_125),
            "tsc_early_khz=2596125 tsc=reliable no_timer_check lpj=10384500"
        );
    }

    #[test]
    fn only_a_constant_nonstop_tsc_is_measured() {
        let good = "processor\t: 0\nflags\t\t: fpu tsc msr constant_tsc nonstop_tsc\n";
        assert_eq!(missing_flag(good), None);
        let stops = "flags\t\t: fpu tsc constant_tsc\n";
        assert_eq!(missing_flag(stops), Some("nonstop_tsc"));
        let rate = measure(stops);
        assert_eq!(rate.khz, FALLBACK_KHZ);
        assert!(rate.fallback.unwrap().contains("no nonstop_tsc"));
    }

    #[test]
    fn measurements_must_agree() {
        assert_eq!(
            steady_khz(&[2_596_100.0, 2_596_125.0, 2_596_130.0]),
            Some(2_596_125)
        );
        assert_eq!(steady_khz(&[2_000_000.0, 2_596_125.0, 2_600_000.0]), None);
        assert_eq!(steady_khz(&[5.0, 5.0, 5.0]), None, "implausible");
    }

    #[test]
    fn this_host_s_rate_is_measured_steadily() {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
        if missing_flag(&cpuinfo).is_some() {
            banger_testkit::skip_beyond_ci("this CPU's TSC is not constant");
            return;
        }
        let a = measure(&cpuinfo);
        let b = measure(&cpuinfo);
        assert_eq!(a.fallback, None, "{a:?}");
        let diff = (a.khz as f64 - b.khz as f64).abs() / a.khz as f64;
        assert!(diff < 1e-3, "{a:?} vs {b:?}");
    }
}
