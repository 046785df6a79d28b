//! The standard process metrics (the names every Prometheus client library uses), read
//! from `/proc/self` on each scrape: `process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
//! `process_start_time_seconds`, `process_open_fds`, `process_max_fds`. Elsewhere than
//! Linux (no `/proc`), nothing is reported.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second in `/proc` times (`USER_HZ`): 100 on every Linux architecture
/// this worker is built for (the kernel fixes it for user space).
const TICKS_PER_SECOND: f64 = 100.0;

/// What `/proc/self/stat` says, in base units.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    cpu_seconds: f64,
    /// Seconds after boot.
    start_after_boot: f64,
    virtual_bytes: f64,
}

/// Parses `/proc/self/stat` (`pid (comm) state ...`; `comm` may hold spaces and parens).
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field n of proc(5) is at index n - 3 here (the state, field 3, comes first).
    let num = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
    Some(Stat {
        cpu_seconds: (num(14)? + num(15)?) / TICKS_PER_SECOND,
        start_after_boot: num(22)? / TICKS_PER_SECOND,
        virtual_bytes: num(23)?,
    })
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn parse_rss(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// `btime` of `/proc/stat`: the boot time, in Unix seconds.
fn parse_boot_time(stat: &str) -> Option<f64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft `Max open files` limit of `/proc/self/limits`.
fn parse_max_fds(limits: &str) -> Option<f64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[derive(Debug)]
pub(crate) struct ProcessCollector;

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let e = &mut encoder;
        let stat = read("/proc/self/stat").as_deref().and_then(parse_stat);
        if let Some(s) = stat {
            let c = ConstCounter::new(s.cpu_seconds);
            c.encode(e.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                c.metric_type(),
            )?)?;
            gauge(
                e,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                s.virtual_bytes,
            )?;
            if let Some(boot) = read("/proc/stat").as_deref().and_then(parse_boot_time) {
                gauge(
                    e,
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    boot + s.start_after_boot,
                )?;
            }
        }
        if let Some(rss) = read("/proc/self/status").as_deref().and_then(parse_rss) {
            gauge(
                e,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                rss,
            )?;
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                e,
                "process_open_fds",
                "Number of open file descriptors.",
                dir.count() as f64,
            )?;
        }
        if let Some(max) = read("/proc/self/limits").as_deref().and_then(parse_max_fds) {
            gauge(
                e,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                max,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let stat = "4242 (prefect (w) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 3 0 12345 104857600 2500 18446744073709551615";
        let s = parse_stat(stat).unwrap();
        assert!((s.cpu_seconds - 3.0).abs() < 1e-9);
        assert!((s.start_after_boot - 123.45).abs() < 1e-9);
        assert!((s.virtual_bytes - 104_857_600.0).abs() < 1e-9);
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(
            parse_rss("Name:\tw\nVmRSS:\t    9876 kB\n"),
            Some(9876.0 * 1024.0)
        );
        assert_eq!(parse_boot_time("cpu 1 2\nbtime 1700000000\n"), Some(1.7e9));
        assert_eq!(
            parse_max_fds(
                "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n"
            ),
            Some(1024.0)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_measured() {
        let m = crate::metrics::Metrics::new();
        let text = m.encode(crate::metrics::Format::PrometheusText);
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_start_time_seconds ",
            "process_open_fds ",
            "process_max_fds ",
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
    }
}
