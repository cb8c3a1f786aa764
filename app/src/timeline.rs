//! The task stream's geometry: one lane per worker, a bar per tile on a time
//! axis, what lies under the pointer, rates over time and the job's stages.
//! Pure, so it is unit-tested; pages/stream.rs draws it.

use crate::api::{Stages, Tile, TileDone, TileFailed, TileStatus};

/// A tile's time on a worker: from about when it started (its result's
/// arrival less the worker's own timing) to its result's arrival, by the
/// master's clock in milliseconds since the epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub job: String,
    pub tile: u32,
    pub worker: String,
    pub start: i64,
    pub end: i64,
    /// More than 1: the tile was sent again before this worker did it.
    pub attempts: u32,
    /// Its result's size on the wire.
    pub bytes: u64,
}

impl Bar {
    pub fn from_event(t: &TileDone) -> Self {
        Bar {
            job: t.job_id.clone(),
            tile: t.tile,
            worker: t.worker_id.clone(),
            start: t.done_at - t.elapsed_ms.max(0.0).round() as i64,
            end: t.done_at,
            attempts: t.attempts,
            bytes: t.result_bytes,
        }
    }

    /// A stored tile's bar; none for a tile not done (or done before the
    /// master recorded when).
    pub fn from_tile(job: &str, t: &Tile) -> Option<Self> {
        let (TileStatus::Done, Some(worker), Some(end)) = (t.status, t.worker_id.as_ref(), t.done_at) else {
            return None;
        };
        Some(Bar {
            job: job.to_owned(),
            tile: t.idx,
            worker: worker.clone(),
            start: end - t.elapsed_ms.unwrap_or(0.0).max(0.0).round() as i64,
            end,
            attempts: t.attempts,
            bytes: t.result_bytes.unwrap_or(0),
        })
    }
}

/// A worker's report that it could not do a tile.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub job: String,
    pub tile: u32,
    pub worker: String,
    pub error: String,
    pub at: i64,
}

impl From<&TileFailed> for Failure {
    fn from(f: &TileFailed) -> Self {
        Failure { job: f.job_id.clone(), tile: f.tile, worker: f.worker_id.clone(), error: f.error.clone(), at: f.at }
    }
}

/// The span of time drawn, in milliseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Axis {
    pub start: i64,
    pub end: i64,
}

impl Axis {
    pub fn span(self) -> i64 {
        (self.end - self.start).max(1)
    }

    /// Where `t` falls across `width` pixels.
    pub fn x(self, t: i64, width: f64) -> f64 {
        (t - self.start) as f64 / self.span() as f64 * width
    }

    /// Where `t` falls, in percent of the width (for HTML drawn on the axis).
    pub fn percent(self, t: i64) -> f64 {
        self.x(t, 100.0).clamp(0.0, 100.0)
    }

    /// About `count` evenly spaced round times to label the axis with, as
    /// offsets in milliseconds from its start.
    pub fn ticks(self, count: u32) -> Vec<i64> {
        const STEPS: [i64; 14] =
            [100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000];
        let wanted = self.span() / i64::from(count.max(1));
        let step = STEPS.iter().copied().find(|&s| s >= wanted).unwrap_or(3_600_000);
        (0..).map(|i| i * step).take_while(|&t| t <= self.span()).collect()
    }
}

/// One lane per worker, in id order: every worker with a bar or a failure,
/// and those in `also` (the live ones, so an idle worker shows as idle).
pub fn lanes<'a>(bars: &'a [Bar], failures: &'a [Failure], also: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut names: Vec<&str> =
        bars.iter().map(|b| b.worker.as_str()).chain(failures.iter().map(|f| f.worker.as_str())).chain(also).collect();
    names.sort_unstable();
    names.dedup();
    names.into_iter().map(str::to_owned).collect()
}

/// The bar under the point (`x`, `y`) of a plot `width` pixels wide whose
/// lanes are `lane_height` apart: the one in that lane nearest in time,
/// within a few pixels (bars of fast tiles are thinner than a pointer).
pub fn bar_at<'a>(
    bars: &'a [Bar],
    lanes: &[String],
    axis: Axis,
    (width, lane_height): (f64, f64),
    (x, y): (f64, f64),
) -> Option<&'a Bar> {
    const SLOP_PX: f64 = 4.0;
    let lane = lanes.get((y / lane_height).floor().max(0.0) as usize)?;
    let distance = |b: &Bar| {
        let (left, right) = (axis.x(b.start, width), axis.x(b.end, width));
        if x < left { left - x } else { (x - right).max(0.0) }
    };
    bars.iter()
        .filter(|b| &b.worker == lane)
        .map(|b| (distance(b), b))
        .filter(|(d, _)| *d <= SLOP_PX)
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, b)| b)
}

/// The bar after (or before) `current` in time order, for moving through
/// the stream with the keyboard: the first (or last) when none is chosen.
pub fn step(bars: &[Bar], current: Option<(&str, u32)>, forward: bool) -> Option<usize> {
    let mut order: Vec<usize> = (0..bars.len()).collect();
    order.sort_by_key(|&i| (bars[i].start, bars[i].end, &bars[i].worker, &bars[i].job, bars[i].tile));
    let at = current.and_then(|(job, tile)| order.iter().position(|&i| bars[i].job == job && bars[i].tile == tile));
    let next = match (at, forward) {
        (None, true) => 0,
        (None, false) => order.len().checked_sub(1)?,
        (Some(at), true) => (at + 1).min(order.len() - 1),
        (Some(at), false) => at.saturating_sub(1),
    };
    order.get(next).copied()
}

/// What one lane did, in words and numbers (for screen readers and tests).
#[derive(Debug, Clone, PartialEq)]
pub struct LaneSummary {
    pub worker: String,
    pub tiles: u32,
    /// Summed bar lengths.
    pub busy_ms: i64,
    /// Tiles it did that had been sent before.
    pub retried: u32,
    pub failed: u32,
}

pub fn summarise(lanes: &[String], bars: &[Bar], failures: &[Failure]) -> Vec<LaneSummary> {
    lanes
        .iter()
        .map(|worker| {
            let mine = || bars.iter().filter(move |b| &b.worker == worker);
            LaneSummary {
                worker: worker.clone(),
                tiles: mine().count() as u32,
                busy_ms: mine().map(|b| b.end - b.start).sum(),
                retried: mine().filter(|b| b.attempts > 1).count() as u32,
                failed: failures.iter().filter(|f| &f.worker == worker).count() as u32,
            }
        })
        .collect()
}

/// Tiles per second and megabytes of results per second in `buckets` equal
/// slices of `axis`, each bar counted when its result arrived.
pub fn rates(bars: &[Bar], axis: Axis, buckets: usize) -> Vec<(f64, f64)> {
    let buckets = buckets.max(1);
    let mut counts = vec![(0u32, 0u64); buckets];
    for b in bars.iter().filter(|b| (axis.start..=axis.end).contains(&b.end)) {
        let i = ((b.end - axis.start) as f64 / axis.span() as f64 * buckets as f64) as usize;
        let slot = &mut counts[i.min(buckets - 1)];
        slot.0 += 1;
        slot.1 += b.bytes;
    }
    let seconds = axis.span() as f64 / 1000.0 / buckets as f64;
    counts.into_iter().map(|(n, bytes)| (f64::from(n) / seconds, bytes as f64 / 1e6 / seconds)).collect()
}

/// Tiles per second and MB per second over the `window_ms` before `now`, or
/// since `since` (the job's first tile started) when that is shorter: a
/// rate is right from the first second, not diluted by time before it.
pub fn recent_rate(bars: &[Bar], now: i64, since: i64, window_ms: i64) -> (f64, f64) {
    let window = window_ms.min(now - since).max(1_000);
    let recent = bars.iter().filter(|b| b.end > now - window && b.end <= now);
    let (n, bytes) = recent.fold((0u32, 0u64), |(n, bytes), b| (n + 1, bytes + b.bytes));
    let seconds = window as f64 / 1000.0;
    (f64::from(n) / seconds, bytes as f64 / 1e6 / seconds)
}

/// A job's stages as spans on the wall clock, in the order they begin:
/// (name, start, end). Dispatch and processing overlap; collecting is the
/// tail of processing after the last tile went out.
pub fn stage_spans(stages: &Stages) -> Option<Vec<(&'static str, i64, i64)>> {
    let decoded = stages.decoded_at?;
    let at = |ms: f64| decoded + ms.round() as i64;
    let processed = at(stages.process_ms);
    Some(vec![
        ("decode", at(-stages.decode_ms), decoded),
        ("dispatch", decoded, at(stages.dispatch_ms)),
        ("processing", decoded, processed),
        ("collect", processed - stages.collect_ms.round() as i64, processed),
        ("encode", processed, processed + stages.encode_ms.round() as i64),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(worker: &str, tile: u32, start: i64, end: i64) -> Bar {
        Bar { job: "j".into(), tile, worker: worker.into(), start, end, attempts: 1, bytes: 1_000_000 }
    }

    #[test]
    fn a_bar_spans_the_workers_time_up_to_its_results_arrival() {
        let event = TileDone {
            job_id: "j".into(),
            tile: 7,
            worker_id: "w".into(),
            elapsed_ms: 41.6,
            done_at: 10_000,
            attempts: 2,
            result_bytes: 512,
        };
        assert_eq!(Bar::from_event(&event), Bar { attempts: 2, bytes: 512, ..bar("w", 7, 9_958, 10_000) });
        let stored = Tile {
            idx: 7,
            x: 0,
            y: 0,
            width: 16,
            height: 16,
            status: TileStatus::Done,
            worker_id: Some("w".into()),
            elapsed_ms: Some(41.6),
            done_at: Some(10_000),
            attempts: 2,
            result_bytes: Some(512),
        };
        assert_eq!(Bar::from_tile("j", &stored), Some(Bar::from_event(&event)));
        let queued = Tile { status: TileStatus::Queued, worker_id: None, done_at: None, ..stored };
        assert_eq!(Bar::from_tile("j", &queued), None);
    }

    #[test]
    fn lanes_are_every_worker_seen_or_alive_once_in_order() {
        let bars = [bar("w2", 0, 0, 1), bar("w1", 1, 0, 1), bar("w2", 2, 1, 2)];
        let failures = [Failure { job: "j".into(), tile: 3, worker: "w3".into(), error: "no".into(), at: 1 }];
        assert_eq!(lanes(&bars, &failures, ["w0", "w1"]), ["w0", "w1", "w2", "w3"]);
        assert_eq!(lanes(&[], &[], []), Vec::<String>::new());
    }

    #[test]
    fn the_pointer_finds_the_nearest_bar_in_its_lane() {
        let axis = Axis { start: 0, end: 1_000 };
        let bars = [bar("a", 0, 100, 200), bar("a", 1, 300, 310), bar("b", 2, 100, 900)];
        let lanes = lanes(&bars, &[], []);
        let at = |x, y| bar_at(&bars, &lanes, axis, (1_000.0, 10.0), (x, y)).map(|b| b.tile);
        assert_eq!(at(150.0, 5.0), Some(0));
        assert_eq!(at(150.0, 15.0), Some(2)); // the second lane
        assert_eq!(at(312.0, 5.0), Some(1)); // a thin bar, within the slop
        assert_eq!(at(250.0, 5.0), None); // between bars
        assert_eq!(at(150.0, 25.0), None); // below the last lane
    }

    #[test]
    fn the_keyboard_moves_through_bars_in_time_order_and_stops_at_the_ends() {
        let bars = [bar("b", 0, 300, 400), bar("a", 1, 100, 200), bar("a", 2, 200, 250)];
        assert_eq!(step(&bars, None, true), Some(1));
        assert_eq!(step(&bars, None, false), Some(0));
        assert_eq!(step(&bars, Some(("j", 1)), true), Some(2));
        assert_eq!(step(&bars, Some(("j", 2)), true), Some(0));
        assert_eq!(step(&bars, Some(("j", 0)), true), Some(0));
        assert_eq!(step(&bars, Some(("j", 1)), false), Some(1));
        // A bar gone from view: start again from the first.
        assert_eq!(step(&bars, Some(("j", 9)), true), Some(1));
        assert_eq!(step(&[], None, true), None);
    }

    #[test]
    fn lanes_sum_their_tiles_time_retries_and_failures() {
        let mut retried = bar("a", 1, 50, 60);
        retried.attempts = 2;
        let bars = [bar("a", 0, 0, 40), retried, bar("b", 2, 0, 5)];
        let failures = [Failure { job: "j".into(), tile: 9, worker: "b".into(), error: "x".into(), at: 3 }];
        let summary = summarise(&lanes(&bars, &failures, []), &bars, &failures);
        assert_eq!(
            summary,
            [
                LaneSummary { worker: "a".into(), tiles: 2, busy_ms: 50, retried: 1, failed: 0 },
                LaneSummary { worker: "b".into(), tiles: 1, busy_ms: 5, retried: 0, failed: 1 },
            ]
        );
    }

    #[test]
    fn rates_count_results_per_second_in_each_slice() {
        // Four seconds in two slices: 3 results in the first, 1 in the second.
        let axis = Axis { start: 0, end: 4_000 };
        let bars = [bar("a", 0, 0, 500), bar("a", 1, 0, 1_000), bar("b", 2, 0, 1_999), bar("a", 3, 0, 4_000)];
        assert_eq!(rates(&bars, axis, 2), [(1.5, 1.5), (0.5, 0.5)]);
        // Outside the axis: not counted.
        assert_eq!(rates(&[bar("a", 0, 0, 5_000)], axis, 2), [(0.0, 0.0), (0.0, 0.0)]);
    }

    #[test]
    fn a_recent_rate_averages_over_the_time_there_was_work_at_most_the_window() {
        // 20 results a second from second 100 on.
        let bars: Vec<Bar> = (0..100).map(|i| bar("a", i, 100_000, 100_000 + i64::from(i) * 50 + 50)).collect();
        // Two seconds in: 40 results over 2 s, not 40 over 10 s.
        assert_eq!(recent_rate(&bars, 102_000, 100_000, 10_000).0, 20.0);
        // Five seconds in, all 100 over 5 s; later the window slides.
        assert_eq!(recent_rate(&bars, 105_000, 100_000, 10_000).0, 20.0);
        assert_eq!(recent_rate(&bars, 110_000, 100_000, 10_000).0, 10.0);
    }

    #[test]
    fn ticks_are_round_and_within_the_axis() {
        assert_eq!(Axis { start: 5, end: 10_005 }.ticks(5), [0, 2_000, 4_000, 6_000, 8_000, 10_000]);
        assert_eq!(Axis { start: 0, end: 120_000 }.ticks(4), [0, 30_000, 60_000, 90_000, 120_000]);
        assert_eq!(Axis { start: 0, end: 0 }.ticks(4), [0]);
    }

    #[test]
    fn stages_become_overlapping_spans_from_the_end_of_decoding() {
        let stages = Stages {
            decoded_at: Some(10_000),
            decode_ms: 500.0,
            dispatch_ms: 1_000.0,
            process_ms: 3_000.0,
            collect_ms: 2_000.0,
            encode_ms: 250.0,
            first_task_ms: None,
        };
        assert_eq!(
            stage_spans(&stages).unwrap(),
            [
                ("decode", 9_500, 10_000),
                ("dispatch", 10_000, 11_000),
                ("processing", 10_000, 13_000),
                ("collect", 11_000, 13_000),
                ("encode", 13_000, 13_250),
            ]
        );
        assert_eq!(stage_spans(&Stages { decoded_at: None, ..stages }), None);
    }
}
