pub mod batch;
#[cfg(feature = "hydrate")]
mod canvas;
pub mod chain;
pub mod dashboard;
pub mod job;
mod job_timeline;
pub mod output;
pub mod stream;
pub mod tiles;
pub mod upload;
pub mod zoom;

/// "1.4 MB", "512 KB", "37 B".
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// "3.2 s", "2 min 05 s".
pub fn human_duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} min {:02} s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_bytes_and_durations() {
        assert_eq!(human_bytes(37), "37 B");
        assert_eq!(human_bytes(1_450_000), "1.4 MB");
        assert_eq!(human_duration(3_200), "3.2 s");
        assert_eq!(human_duration(125_000), "2 min 05 s");
    }
}
