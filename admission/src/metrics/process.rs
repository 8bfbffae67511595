//! The standard `process_*` metrics, read from `/proc/self` at each scrape.
//!
//! Written here because prometheus-client has no process collector of its own, and the crates
//! on crates.io that add one pull in a second metrics stack or `libc`/`procfs` for six numbers.
//! The names and meanings follow the Go and Python clients, so dashboards built for them work.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Clock ticks a second in `/proc/<pid>/stat`: the kernel reports CPU times and the start time
/// in USER_HZ, which is 100 on every Linux architecture (sysconf would need `libc`).
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug)]
pub struct Process;

/// What one read of `/proc/self` found; a value that could not be read is left out.
#[derive(Debug, Default, PartialEq)]
struct Sample {
    cpu_seconds: Option<f64>,
    start_time_seconds: Option<f64>,
    resident_memory_bytes: Option<f64>,
    virtual_memory_bytes: Option<f64>,
    open_fds: Option<f64>,
    max_fds: Option<f64>,
    threads: Option<f64>,
}

impl Sample {
    fn read() -> Sample {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let boot = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as f64);
        let mut sample = parse(&stat, &status, &boot, &limits);
        sample.open_fds = open_fds;
        sample
    }
}

/// The sample from the text of `/proc/self/stat`, `/proc/self/status`, `/proc/stat` and
/// `/proc/self/limits`.
fn parse(stat: &str, status: &str, boot: &str, limits: &str) -> Sample {
    // The command name in parentheses may hold spaces: the fields follow the last ')'. The first
    // of them is field 3 of proc(5), the state.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    let boot_time = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|v| v * 1024.0)
    };
    let max_fds = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok());
    Sample {
        cpu_seconds: field(14)
            .zip(field(15))
            .map(|(user, system)| (user + system) / TICKS_PER_SECOND),
        start_time_seconds: field(22)
            .zip(boot_time)
            .map(|(ticks, boot)| boot + ticks / TICKS_PER_SECOND),
        resident_memory_bytes: kib("VmRSS:"),
        virtual_memory_bytes: field(23),
        open_fds: None,
        max_fds,
        threads: field(20),
    }
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sample = Sample::read();
        if let Some(cpu) = sample.cpu_seconds {
            let metric = ConstCounter::new(cpu);
            metric.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                MetricType::Counter,
            )?)?;
        }
        for (name, help, unit, value) in [
            (
                "process_start_time",
                "Start time of the process since unix epoch in seconds.",
                Some(Unit::Seconds),
                sample.start_time_seconds,
            ),
            (
                "process_resident_memory",
                "Resident memory size in bytes.",
                Some(Unit::Bytes),
                sample.resident_memory_bytes,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes.",
                Some(Unit::Bytes),
                sample.virtual_memory_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                None,
                sample.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                None,
                sample.max_fds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process.",
                None,
                sample.threads,
            ),
        ] {
            if let Some(value) = value {
                let metric = ConstGauge::new(value);
                metric.encode(encoder.encode_descriptor(
                    name,
                    help,
                    unit.as_ref(),
                    MetricType::Gauge,
                )?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_with_spaces_in_the_name_parses() {
        let stat = "4242 (admission (x) y) S 1 4242 4242 0 -1 4194560 5000 0 0 0 250 50 0 0 20 0 \
                    7 0 12345 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        let status = "Name:\tadmission\nVmRSS:\t   10240 kB\nThreads:\t7\n";
        let boot = "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        let sample = parse(stat, status, boot, limits);
        assert_eq!(sample.cpu_seconds, Some(3.0));
        let start = sample.start_time_seconds.expect("a start time");
        assert!((start - 1_700_000_123.45).abs() < 1e-3, "{start}");
        assert_eq!(sample.resident_memory_bytes, Some(10_485_760.0));
        assert_eq!(sample.virtual_memory_bytes, Some(104_857_600.0));
        assert_eq!(sample.max_fds, Some(1024.0));
        assert_eq!(sample.threads, Some(7.0));
    }

    #[test]
    fn this_process_reads_as_running_with_memory_and_files() {
        let sample = Sample::read();
        assert!(
            sample.resident_memory_bytes.is_some_and(|b| b > 0.0),
            "{sample:?}"
        );
        assert!(sample.open_fds.is_some_and(|n| n >= 3.0), "{sample:?}");
        assert!(
            sample.start_time_seconds.is_some_and(|t| t > 1.6e9),
            "{sample:?}"
        );
        assert!(sample.cpu_seconds.is_some(), "{sample:?}");
    }
}
