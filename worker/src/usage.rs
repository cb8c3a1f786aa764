//! The worker's own CPU use and resident memory, for its heartbeats (read
//! from `/proc`: on other systems the heartbeat leaves them out).

use std::time::Instant;

/// CPU percent between two samples, and resident memory.
#[derive(Default)]
pub struct Usage {
    last: Option<(Instant, f64)>,
}

impl Usage {
    /// CPU use since the previous sample (none for the first), in percent of
    /// one core, and the resident memory now, in bytes.
    pub fn sample(&mut self) -> (Option<f32>, Option<u64>) {
        let now = Instant::now();
        let cpu = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| cpu_seconds(&s));
        let percent = match (self.last, cpu) {
            (Some((then, before)), Some(seconds)) => {
                let wall = now.duration_since(then).as_secs_f64();
                (wall > 0.0).then(|| (100.0 * (seconds - before).max(0.0) / wall) as f32)
            }
            _ => None,
        };
        self.last = cpu.map(|seconds| (now, seconds));
        let rss = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| resident_bytes(&s));
        (percent, rss)
    }
}

/// User plus system CPU seconds from a `/proc/<pid>/stat` line, whose clock
/// ticks are `USER_HZ`: 100 on every Linux architecture's ABI.
pub fn cpu_seconds(stat: &str) -> Option<f64> {
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let (user, system) = (fields.next()?.parse::<u64>().ok()?, fields.next()?.parse::<u64>().ok()?);
    Some((user + system) as f64 / 100.0)
}

/// `VmRSS` from a `/proc/<pid>/status` file, in bytes.
pub fn resident_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read() {
        let stat = "4242 (tile (pipe) w) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 9 0 1000 1 1";
        assert_eq!(cpu_seconds(stat), Some(3.25));
        assert_eq!(cpu_seconds("garbage"), None);
        let status = "Name:\tworker\nVmHWM:\t  60000 kB\nVmRSS:\t   51200 kB\nThreads:\t9\n";
        assert_eq!(resident_bytes(status), Some(51200 * 1024));
        assert_eq!(resident_bytes("Name:\tworker\n"), None);
    }

    #[test]
    fn this_process_is_measured_on_linux() {
        let mut usage = Usage::default();
        let (first, rss) = usage.sample();
        assert_eq!(first, None, "no interval yet");
        if cfg!(target_os = "linux") {
            assert!(rss.is_some_and(|b| b > 1 << 20), "{rss:?}");
            // Spin for a moment: the second sample sees CPU spent.
            let started = Instant::now();
            let mut x = 0u64;
            while started.elapsed().as_millis() < 50 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            let (cpu, _) = usage.sample();
            assert!(cpu.is_some_and(|c| c >= 0.0), "{cpu:?}");
        }
    }
}
