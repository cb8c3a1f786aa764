//! A job's live tile map: the image's grid, each tile queued, processing
//! (a worker's heartbeat names it), done (in its worker's colour) or retried.

use leptos::prelude::*;

use crate::api::{Tile, TileStatus};
use crate::live::Live;

/// What the map shows of one tile.
#[derive(Debug, Clone, Default, PartialEq)]
struct Cell {
    done_by: Option<(String, f64)>,
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
    let grid = Grid { width, height, tile_size };
    let (cols, rows) = grid.cells();
    let cells = Cells::new((cols * rows) as usize);
    Effect::new(move || {
        seeded.with(|tiles| cells.change(|cells| seed(cells, tiles.as_deref().unwrap_or_default())));
    });
    let latest_done_at = follow_results(live, id.clone(), cells);
    follow_heartbeats(live, id, cells);
    let Cells { store: cells, version } = cells;

    let counts = Memo::new(move |_| {
        version.track();
        cells.with_value(|cells| {
            cells.iter().fold((0u32, 0u32), |(d, p), c| {
                (d + u32::from(c.done_by.is_some()), p + u32::from(c.done_by.is_none() && c.processing.is_some()))
            })
        })
    });
    // What a screen reader hears instead of thousands of cells.
    let summary = move || {
        let (done, processing) = counts.get();
        format!("Tile map: {cols} by {rows} tiles, {done} done, {processing} processing")
    };

    let canvas = NodeRef::<leptos::html::Canvas>::new();
    #[cfg(feature = "hydrate")]
    crate::pages::canvas::redraw_on_change(
        move || version.track(),
        move || {
            if let Some(canvas) = canvas.get_untracked() {
                cells.with_value(|cells| draw::map(&canvas, grid, cells));
            }
        },
    );

    let hovered = RwSignal::new(None::<(String, f64, f64)>);
    let on_move = move |ev: leptos::ev::MouseEvent| {
        let Some(element) = canvas.get_untracked() else { return };
        let point = (f64::from(ev.offset_x()), f64::from(ev.offset_y()));
        let size = (f64::from(element.client_width()), f64::from(element.client_height()));
        let text = grid
            .at(size, point)
            .and_then(|idx| cells.with_value(|cells| cells.get(idx as usize).map(|c| c.describe(idx))));
        hovered.set(text.map(|text| (text, point.0, point.1)));
    };
    view! {
        <div class="tile-map-wrap">
            <canvas
                node_ref=canvas
                id="tile-map"
                class="tile-map"
                role="img"
                aria-label=summary
                data-tiles=cols * rows
                data-done=move || counts.get().0
                data-processing=move || counts.get().1
                data-done-at=move || latest_done_at.get()
                style:aspect-ratio=format!("{width} / {height}")
                on:mousemove=on_move
                on:mouseleave=move |_| hovered.set(None)
            ></canvas>
            {move || hovered.get().map(|(text, x, y)| view! {
                <div class="tip" style:left=format!("{x}px") style:top=format!("{}px", y + 14.0)>{text}</div>
            })}
        </div>
    }
}

/// Every cell of the map in one store, and a version that says it changed:
/// a signal per cell would cost more than the map for 16,000 tiles.
#[derive(Clone, Copy)]
struct Cells {
    store: StoredValue<Vec<Cell>>,
    version: RwSignal<u32>,
}

impl Cells {
    fn new(len: usize) -> Self {
        Cells { store: StoredValue::new(vec![Cell::default(); len]), version: RwSignal::new(0) }
    }

    fn change(self, apply: impl FnOnce(&mut Vec<Cell>)) {
        self.store.update_value(apply);
        self.version.update(|v| *v = v.wrapping_add(1));
    }
}

/// Marks tiles done as the job's tile events come (only those not yet
/// applied); returns when the newest result reached the master, so that how
/// soon the page shows it can be measured.
fn follow_results(live: Live, id: String, cells: Cells) -> RwSignal<Option<i64>> {
    let latest_done_at = RwSignal::new(None::<i64>);
    let cursor = StoredValue::new(0usize);
    Effect::new(move || {
        live.tiles.with(|tiles| {
            let Some(done) = tiles.get(&id) else { return };
            let new = &done[cursor.get_value().min(done.len())..];
            if new.is_empty() {
                return;
            }
            cells.change(|cells| {
                for t in new {
                    if let Some(c) = cells.get_mut(t.tile as usize) {
                        c.done_by = Some((t.worker_id.clone(), t.elapsed_ms));
                        c.attempts = c.attempts.max(t.attempts);
                        c.processing = None;
                    }
                }
            });
            latest_done_at.set(new.last().map(|t| t.done_at));
            cursor.set_value(done.len());
        });
    });
    latest_done_at
}

/// Marks the tiles the workers' heartbeats say are in progress.
fn follow_heartbeats(live: Live, id: String, cells: Cells) {
    let busy = StoredValue::new(Vec::<u32>::new());
    Effect::new(move || {
        let now: Vec<(u32, String)> = live.workers.with(|workers| {
            workers
                .values()
                .filter_map(|w| {
                    let key = pipeline::wire::TileKey::parse(w.current_tile.as_deref()?)?;
                    (key.job_id == id && w.status == crate::api::WorkerStatus::Alive).then(|| (key.tile, w.id.clone()))
                })
                .collect()
        });
        cells.change(|cells| {
            for t in busy.get_value() {
                if let Some(c) = cells.get_mut(t as usize) {
                    c.processing = None;
                }
            }
            for (t, worker) in &now {
                if let Some(c) = cells.get_mut(*t as usize) {
                    c.processing = c.done_by.is_none().then(|| worker.clone());
                }
            }
        });
        busy.set_value(now.into_iter().map(|(t, _)| t).collect());
    });
}

impl Cell {
    /// What hovering the tile says.
    fn describe(&self, idx: u32) -> String {
        let mut text = match (&self.done_by, &self.processing) {
            (Some((w, ms)), _) => format!("tile {idx}: done by {w} in {ms:.1} ms"),
            (None, Some(w)) => format!("tile {idx}: {w} is processing it"),
            (None, None) => format!("tile {idx}: queued"),
        };
        if self.attempts > 1 {
            text.push_str(&format!(" (sent {} times)", self.attempts));
        }
        text
    }
}

/// A job's tile grid, and where its tiles lie on a map of some size.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Grid {
    width: u32,
    height: u32,
    tile_size: u32,
}

impl Grid {
    fn cells(self) -> (u32, u32) {
        (self.width.div_ceil(self.tile_size.max(1)), self.height.div_ceil(self.tile_size.max(1)))
    }

    /// Tile `idx`'s rectangle on a map of `size` pixels: x, y, w, h, its
    /// edges on whole pixels (so the lines between tiles are crisp).
    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
    fn rect(self, (w, h): (f64, f64), idx: u32) -> (f64, f64, f64, f64) {
        let (cols, _) = self.cells();
        let (sx, sy) = (w / f64::from(self.width), h / f64::from(self.height));
        let (col, row) = (idx % cols, idx / cols);
        let edge = |i: u32, limit: u32, scale: f64| (f64::from((i * self.tile_size).min(limit)) * scale).round();
        let (x0, x1) = (edge(col, self.width, sx), edge(col + 1, self.width, sx));
        let (y0, y1) = (edge(row, self.height, sy), edge(row + 1, self.height, sy));
        (x0, y0, x1 - x0, y1 - y0)
    }

    /// The tile under `point` on a map of `size`.
    fn at(self, (w, h): (f64, f64), (x, y): (f64, f64)) -> Option<u32> {
        if w <= 0.0 || h <= 0.0 || x < 0.0 || y < 0.0 || x >= w || y >= h {
            return None;
        }
        let (cols, rows) = self.cells();
        let col = ((x / w * f64::from(self.width)) as u32 / self.tile_size).min(cols - 1);
        let row = ((y / h * f64::from(self.height)) as u32 / self.tile_size).min(rows - 1);
        Some(row * cols + col)
    }
}

#[cfg(feature = "hydrate")]
mod draw {
    use web_sys::HtmlCanvasElement;

    use super::{Cell, Grid, worker_hue};
    use crate::pages::canvas::{RETRIED, context, css_colour};

    pub fn map(canvas: &HtmlCanvasElement, grid: Grid, cells: &[Cell]) {
        let css = (f64::from(canvas.client_width()), f64::from(canvas.client_height()));
        let Some((ctx, ratio)) = context(canvas, css) else { return };
        // Drawn in device pixels, so every edge falls on one.
        let size = (f64::from(canvas.width()), f64::from(canvas.height()));
        // Queued tiles in the canvas's CSS colour, so both schemes look right.
        let queued = css_colour(canvas);
        // A line between tiles (their right and bottom pixel) while they
        // are large enough to show it.
        let (_, _, tile_w, tile_h) = grid.rect(size, 0);
        let gap = if tile_w.min(tile_h) >= 4.0 * ratio { 1.0 } else { 0.0 };
        ctx.set_line_width(2.0 * ratio);
        ctx.set_stroke_style_str(RETRIED);
        let mut fills = std::collections::HashMap::new();
        for (idx, cell) in cells.iter().enumerate() {
            let (x, y, w, h) = grid.rect(size, idx as u32);
            let (w, h) = ((w - gap).max(1.0), (h - gap).max(1.0));
            match (&cell.done_by, &cell.processing) {
                (Some((worker, _)), _) => {
                    let hue = worker_hue(worker);
                    ctx.set_fill_style_str(fills.entry((hue, 1)).or_insert_with(|| format!("hsl({hue} 65% 52%)")))
                }
                (None, Some(worker)) => {
                    let hue = worker_hue(worker);
                    ctx.set_fill_style_str(
                        fills.entry((hue, 0)).or_insert_with(|| format!("hsl({hue} 65% 52% / 0.45)")),
                    )
                }
                (None, None) => ctx.set_fill_style_str(&queued),
            }
            ctx.fill_rect(x, y, w, h);
            if cell.attempts > 1 {
                ctx.stroke_rect(x + ratio, y + ratio, (w - 2.0 * ratio).max(1.0), (h - 2.0 * ratio).max(1.0));
            }
        }
    }
}

fn seed(cells: &mut [Cell], tiles: &[Tile]) {
    for t in tiles {
        if let Some(c) = cells.get_mut(t.idx as usize) {
            c.attempts = t.attempts;
            if t.status == TileStatus::Done {
                c.done_by = Some((t.worker_id.clone().unwrap_or_default(), t.elapsed_ms.unwrap_or_default()));
                c.processing = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Grid;

    /// Edge tiles are smaller, and a point finds the tile drawn under it.
    #[test]
    fn tiles_are_placed_like_the_image_and_found_under_the_pointer() {
        let grid = Grid { width: 1100, height: 600, tile_size: 512 };
        assert_eq!(grid.cells(), (3, 2));
        let size = (550.0, 300.0);
        assert_eq!(grid.rect(size, 0), (0.0, 0.0, 256.0, 256.0));
        assert_eq!(grid.rect(size, 2), (512.0, 0.0, 38.0, 256.0));
        assert_eq!(grid.rect(size, 5), (512.0, 256.0, 38.0, 44.0));
        assert_eq!(grid.at(size, (0.0, 0.0)), Some(0));
        assert_eq!(grid.at(size, (520.0, 290.0)), Some(5));
        assert_eq!(grid.at(size, (255.9, 256.1)), Some(3));
        assert_eq!(grid.at(size, (550.0, 10.0)), None);
        assert_eq!(grid.at(size, (-1.0, 10.0)), None);
    }
}
