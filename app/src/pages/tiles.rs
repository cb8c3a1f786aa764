//! A job's live tile map: the image's grid, each tile queued, processing
//! (a worker's heartbeat names it), done (in its worker's colour) or retried.

use leptos::prelude::*;

use crate::api::{Tile, TileStatus};
use crate::live::Live;

/// What the map shows of one tile.
#[derive(Debug, Clone, Default, PartialEq)]
struct Cell {
    done_by: Option<(String, f64)>,
    /// When its result reached the master (for measuring how soon the page
    /// shows it).
    done_at: Option<i64>,
    attempts: u32,
    processing: Option<String>,
}

/// A stable colour per worker, so a glance shows who did what.
pub fn worker_hue(id: &str) -> u32 {
    id.bytes().fold(2166136261u32, |h, b| (h ^ u32::from(b)).wrapping_mul(16777619)) % 360
}

#[component]
pub fn TileMap(
    id: String,
    width: u32,
    height: u32,
    tile_size: u32,
    /// The job's tiles as stored when the page opened (done ones, and how
    /// often each was sent).
    seeded: ReadSignal<Option<Vec<Tile>>>,
) -> impl IntoView {
    let live = Live::get();
    let (cols, rows) = (width.div_ceil(tile_size), height.div_ceil(tile_size));
    let cells: Vec<RwSignal<Cell>> = (0..cols * rows).map(|_| RwSignal::new(Cell::default())).collect();

    Effect::new({
        let cells = cells.clone();
        move || seeded.with(|tiles| seed(&cells, tiles.as_deref().unwrap_or_default()))
    });
    // Tiles done since: only the events not yet applied.
    let cursor = StoredValue::new(0usize);
    Effect::new({
        let (id, cells) = (id.clone(), cells.clone());
        move || {
            live.tiles.with(|tiles| {
                let Some(done) = tiles.get(&id) else { return };
                for t in &done[cursor.get_value().min(done.len())..] {
                    if let Some(cell) = cells.get(t.tile as usize) {
                        cell.update(|c| {
                            c.done_by = Some((t.worker_id.clone(), t.elapsed_ms));
                            c.done_at = Some(t.done_at);
                            c.attempts = c.attempts.max(t.attempts);
                            c.processing = None;
                        });
                    }
                }
                cursor.set_value(done.len());
            });
        }
    });
    // Tiles in progress, from the workers' heartbeats.
    let busy = StoredValue::new(Vec::<u32>::new());
    Effect::new({
        let (id, cells) = (id.clone(), cells.clone());
        move || {
            let now: Vec<(u32, String)> = live.workers.with(|workers| {
                workers
                    .values()
                    .filter_map(|w| {
                        let key = pipeline::wire::TileKey::parse(w.current_tile.as_deref()?)?;
                        (key.job_id == id && w.status == crate::api::WorkerStatus::Alive)
                            .then(|| (key.tile, w.id.clone()))
                    })
                    .collect()
            });
            for t in busy.get_value() {
                if let Some(cell) = cells.get(t as usize) {
                    cell.update(|c| c.processing = None);
                }
            }
            for (t, worker) in &now {
                if let Some(cell) = cells.get(*t as usize) {
                    cell.update(|c| c.processing = c.done_by.is_none().then(|| worker.clone()));
                }
            }
            busy.set_value(now.into_iter().map(|(t, _)| t).collect());
        }
    });

    let track = |n: u32, total: u32| {
        (0..n)
            .map(|i| format!("{}fr", if i + 1 == n { total - i * tile_size } else { tile_size }))
            .collect::<Vec<_>>()
            .join(" ")
    };
    // What a screen reader hears instead of hundreds of cells.
    let summary = {
        let cells = cells.clone();
        move || {
            let (done, processing) = cells.iter().fold((0, 0), |(d, p), cell| {
                cell.with(|c| {
                    (
                        d + usize::from(c.done_by.is_some()),
                        p + usize::from(c.done_by.is_none() && c.processing.is_some()),
                    )
                })
            });
            format!("Tile map: {cols} by {rows} tiles, {done} done, {processing} processing")
        }
    };
    let view_cells = cells
        .into_iter()
        .enumerate()
        .map(|(idx, cell)| {
            let state = move || {
                cell.with(|c| match (&c.done_by, &c.processing) {
                    (Some(_), _) => "done",
                    (None, Some(_)) => "processing",
                    (None, None) => "queued",
                })
            };
            let colour = move || {
                cell.with(|c| {
                    let who = c.done_by.as_ref().map(|(w, _)| w).or(c.processing.as_ref())?;
                    Some(format!("hsl({} 65% 52%)", worker_hue(who)))
                })
            };
            let title = move || {
                cell.with(|c| {
                    let mut text = match (&c.done_by, &c.processing) {
                        (Some((w, ms)), _) => format!("tile {idx}: done by {w} in {ms:.1} ms"),
                        (None, Some(w)) => format!("tile {idx}: {w} is processing it"),
                        (None, None) => format!("tile {idx}: queued"),
                    };
                    if c.attempts > 1 {
                        text.push_str(&format!(" (sent {} times)", c.attempts));
                    }
                    text
                })
            };
            view! {
                <div
                    class="tile"
                    data-state=state
                    data-retried=move || cell.with(|c| c.attempts > 1).then_some("true")
                    data-done-at=move || cell.with(|c| c.done_at)
                    style:background-color=colour
                    title=title
                ></div>
            }
        })
        .collect_view();
    view! {
        <div
            id="tile-map"
            class="tile-map"
            role="img"
            aria-label=summary
            style:grid-template-columns=track(cols, width)
            style:grid-template-rows=track(rows, height)
            style:aspect-ratio=format!("{width} / {height}")
        >
            {view_cells}
        </div>
    }
}

fn seed(cells: &[RwSignal<Cell>], tiles: &[Tile]) {
    for t in tiles {
        if let Some(cell) = cells.get(t.idx as usize) {
            cell.update(|c| {
                c.attempts = t.attempts;
                if t.status == TileStatus::Done {
                    c.done_by = Some((t.worker_id.clone().unwrap_or_default(), t.elapsed_ms.unwrap_or_default()));
                    c.done_at = t.done_at;
                    c.processing = None;
                }
            });
        }
    }
}
