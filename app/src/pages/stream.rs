//! The task stream: a lane per worker and a bar per tile over time. Drawn
//! on a canvas (thousands of tiles, no element each); the bar under the
//! pointer is named, and a table of the lanes is there for screen readers.

use leptos::prelude::*;

use crate::live::Live;
use crate::pages::tiles::worker_hue;
use crate::timeline::{Axis, Bar, Failure, LaneSummary, bar_at, step, summarise};

/// What a bar's colour tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    /// The worker's colour, as on the tile map (one job's stream).
    ByWorker,
    /// The job's (the dashboard's stream of every job).
    ByJob,
}

/// How the axis is labelled: time since its start, or time before now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ticks {
    Elapsed,
    Ago,
}

/// The stream's rows for a `.timeline` grid (a name column and a plot
/// column): one row per lane, then the time axis.
#[component]
pub fn TaskStream(
    #[prop(into)] bars: Signal<Vec<Bar>>,
    #[prop(into)] failures: Signal<Vec<Failure>>,
    #[prop(into)] lanes: Signal<Vec<String>>,
    #[prop(into)] axis: Signal<Axis>,
    colour: Colour,
    ticks: Ticks,
    /// Pixels per lane.
    lane_height: f64,
) -> impl IntoView {
    let plot = Plot {
        bars,
        lanes,
        axis,
        colour,
        lane_height,
        live: Live::get(),
        canvas: NodeRef::new(),
        hovered: RwSignal::new(None),
        chosen: StoredValue::new(None),
    };
    let (canvas, hovered) = (plot.canvas, plot.hovered);
    let summaries = Memo::new(move |_| {
        lanes.with(|lanes| bars.with(|bars| failures.with(|failures| summarise(lanes, bars, failures))))
    });

    #[cfg(feature = "hydrate")]
    crate::pages::canvas::redraw_on_change(
        move || {
            bars.track();
            failures.track();
            lanes.track();
            axis.track();
        },
        move || {
            if let Some(canvas) = canvas.get_untracked() {
                bars.with_untracked(|bars| {
                    failures.with_untracked(|failures| {
                        lanes.with_untracked(|lanes| {
                            draw::plot(&canvas, bars, failures, lanes, axis.get_untracked(), colour, lane_height)
                        })
                    })
                });
            }
        },
    );

    let summary = move || {
        let lanes = summaries.get();
        let tiles: u32 = lanes.iter().map(|l| l.tiles).sum();
        format!(
            "Task stream: {} workers, {tiles} tiles shown as bars over time; the table that follows lists each worker",
            lanes.len()
        )
    };

    view! {
        <LaneNames summaries colour lane_height />
        <div class="plot lanes-plot">
            <canvas
                node_ref=canvas
                class="stream"
                role="img"
                tabindex="0"
                aria-label=summary
                aria-describedby="stream-keys"
                on:keydown=move |ev| plot.on_key(ev)
                on:blur=move |_| hovered.set(None)
                style:height=move || format!("{}px", lanes.with(|l| l.len().max(1)) as f64 * lane_height)
                on:mousemove=move |ev| plot.on_pointer(ev)
                on:mouseleave=move |_| hovered.set(None)
            ></canvas>
            {move || hovered.get().map(|(text, x, y)| view! {
                <div class="tip" style:left=format!("{x}px") style:top=format!("{}px", y + 14.0)>{text}</div>
            })}
            <p class="sr-only" id="stream-keys">"Arrow keys move from tile to tile in time order."</p>
            <p class="sr-only" role="status" aria-live="polite">{move || hovered.get().map(|(text, ..)| text)}</p>
            {move || lanes.with(Vec::is_empty).then(|| view! { <p class="empty-stream muted small">"No tiles yet."</p> })}
        </div>
        <span></span>
        <TimeAxis axis ticks />
        <LaneTable summaries />
    }
}

/// The plot's state, and what the pointer and the keyboard do to it: the
/// bar under the pointer, or the one the arrow keys reached, is named.
#[derive(Clone, Copy)]
struct Plot {
    bars: Signal<Vec<Bar>>,
    lanes: Signal<Vec<String>>,
    axis: Signal<Axis>,
    colour: Colour,
    lane_height: f64,
    live: Live,
    canvas: NodeRef<leptos::html::Canvas>,
    /// The named bar's words, and where to show them.
    hovered: RwSignal<Option<(String, f64, f64)>>,
    /// The bar the keyboard is on: its job and tile.
    chosen: StoredValue<Option<(String, u32)>>,
}

impl Plot {
    /// Names the bar under the pointer, if any.
    fn on_pointer(self, ev: leptos::ev::MouseEvent) {
        let Some(element) = self.canvas.get_untracked() else { return };
        let point = (f64::from(ev.offset_x()), f64::from(ev.offset_y()));
        let size = (f64::from(element.client_width()), self.lane_height);
        let text = self.bars.with_untracked(|bars| {
            self.lanes.with_untracked(|lanes| {
                bar_at(bars, lanes, self.axis.get_untracked(), size, point)
                    .map(|bar| describe(self.live, bar, self.colour))
            })
        });
        self.hovered.set(text.map(|text| (text, point.0, point.1)));
    }

    /// Moves through the bars in time order with the arrow keys, naming each.
    fn on_key(self, ev: leptos::ev::KeyboardEvent) {
        let forward = match ev.key().as_str() {
            "ArrowRight" | "ArrowDown" => true,
            "ArrowLeft" | "ArrowUp" => false,
            "Escape" => {
                self.chosen.set_value(None);
                self.hovered.set(None);
                return;
            }
            _ => return,
        };
        ev.prevent_default();
        let Some(element) = self.canvas.get_untracked() else { return };
        let width = f64::from(element.client_width());
        let found = self.bars.with_untracked(|bars| {
            let current = self.chosen.with_value(|c| c.clone());
            let i = step(bars, current.as_ref().map(|(job, tile)| (job.as_str(), *tile)), forward)?;
            let bar = &bars[i];
            let lane = self.lanes.with_untracked(|l| l.iter().position(|w| *w == bar.worker))?;
            let x = self.axis.get_untracked().x((bar.start + bar.end) / 2, width);
            let text = describe(self.live, bar, self.colour);
            Some(((bar.job.clone(), bar.tile), text, x, lane as f64 * self.lane_height))
        });
        if let Some((key, text, x, y)) = found {
            self.chosen.set_value(Some(key));
            self.hovered.set(Some((text, x, y)));
        }
    }
}

/// The lanes' names beside the plot, with their tile counts.
#[component]
fn LaneNames(summaries: Memo<Vec<LaneSummary>>, colour: Colour, lane_height: f64) -> impl IntoView {
    let names = move || {
        summaries
            .get()
            .into_iter()
            .map(|LaneSummary { worker, tiles, .. }| {
                let hue = worker_hue(&worker);
                view! {
                    <li style:height=format!("{lane_height}px")>
                        {(colour == Colour::ByWorker).then(|| view! {
                            <span class="swatch" style:background-color=format!("hsl({hue} 65% 52%)")></span>
                        })}
                        <span class="mono">{worker}</span>
                        <span class="muted count">{tiles}</span>
                    </li>
                }
            })
            .collect_view()
    };
    view! { <ul class="lane-names" aria-hidden="true">{names}</ul> }
}

/// The time axis under the plot.
#[component]
fn TimeAxis(axis: Signal<Axis>, ticks: Ticks) -> impl IntoView {
    let tick_marks = move || {
        let axis = axis.get();
        axis.ticks(6)
            .into_iter()
            .map(|t| {
                let text = match ticks {
                    Ticks::Elapsed => clock(t),
                    Ticks::Ago if t == axis.span() => "now".to_owned(),
                    Ticks::Ago => format!("−{}", clock(axis.span() - t)),
                };
                view! { <span class="tick" style:left=format!("{:.2}%", axis.percent(axis.start + t))>{text}</span> }
            })
            .collect_view()
    };
    view! { <div class="axis" aria-hidden="true">{tick_marks}</div> }
}

/// The lanes as a table, for screen readers.
#[component]
fn LaneTable(summaries: Memo<Vec<LaneSummary>>) -> impl IntoView {
    let rows = move || {
        summaries
            .get()
            .into_iter()
            .map(|l| {
                view! {
                    <tr class="lane" data-worker=l.worker.clone() data-tiles=l.tiles>
                        <th scope="row">{l.worker.clone()}</th>
                        <td>{l.tiles}</td>
                        <td>{format!("{:.1} s", l.busy_ms as f64 / 1000.0)}</td>
                        <td>{l.retried}</td>
                        <td>{l.failed}</td>
                    </tr>
                }
            })
            .collect_view()
    };
    view! {
        <table class="sr-only stream-lanes">
            <caption>"Tiles per worker"</caption>
            <thead>
                <tr>
                    <th scope="col">"Worker"</th><th scope="col">"Tiles"</th><th scope="col">"Busy"</th>
                    <th scope="col">"Retried"</th><th scope="col">"Failed"</th>
                </tr>
            </thead>
            <tbody>{rows}</tbody>
        </table>
    }
}

/// A bar in words: the tile, who did it, how long, and which job.
fn describe(live: Live, bar: &Bar, colour: Colour) -> String {
    let mut text = format!("tile {} · {} · {} ms", bar.tile, bar.worker, bar.end - bar.start);
    if bar.attempts > 1 {
        text.push_str(&format!(" · sent {} times", bar.attempts));
    }
    if colour == Colour::ByJob {
        let name = live.jobs.with_untracked(|jobs| jobs.get(&bar.job).map(|j| j.filename.clone()));
        text = format!("{} · {text}", name.unwrap_or_else(|| bar.job.chars().take(8).collect()));
    }
    text
}

/// "0 s", "2.5 s", "1 min", "1 min 30 s".
pub fn clock(ms: i64) -> String {
    match ms {
        ms if ms >= 60_000 && ms % 60_000 == 0 => format!("{} min", ms / 60_000),
        ms if ms >= 60_000 => format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000),
        ms if ms % 1000 == 0 => format!("{} s", ms / 1000),
        ms => format!("{:.1} s", ms as f64 / 1000.0),
    }
}

#[cfg(feature = "hydrate")]
mod draw {
    use std::collections::HashMap;

    use web_sys::HtmlCanvasElement;

    use super::Colour;
    use crate::pages::canvas::{RETRIED, context, css_colour};
    use crate::pages::tiles::worker_hue;
    use crate::timeline::{Axis, Bar, Failure};

    /// The colour of `--bad`, readable on both schemes.
    const FAILED: &str = "#d64545";

    pub fn plot(
        canvas: &HtmlCanvasElement,
        bars: &[Bar],
        failures: &[Failure],
        lanes: &[String],
        axis: Axis,
        colour: Colour,
        lane_height: f64,
    ) {
        let width = f64::from(canvas.client_width());
        let height = lanes.len().max(1) as f64 * lane_height;
        let Some((ctx, ratio)) = context(canvas, (width, height)) else { return };
        let _ = ctx.set_transform(ratio, 0.0, 0.0, ratio, 0.0, 0.0);

        // Lane lines in the canvas's CSS colour, so both schemes look right.
        ctx.set_fill_style_str(&css_colour(canvas));
        for lane in 1..lanes.len() {
            ctx.fill_rect(0.0, lane as f64 * lane_height - 0.5, width, 1.0);
        }

        let lane_of: HashMap<&str, usize> = lanes.iter().enumerate().map(|(i, w)| (w.as_str(), i)).collect();
        let mut fills: HashMap<u32, String> = HashMap::new();
        let pad = (lane_height * 0.15).max(1.0);
        ctx.set_line_width(1.5);
        ctx.set_stroke_style_str(RETRIED);
        for bar in bars.iter().filter(|b| b.end >= axis.start && b.start <= axis.end) {
            let Some(&lane) = lane_of.get(bar.worker.as_str()) else { continue };
            let hue = worker_hue(match colour {
                Colour::ByWorker => &bar.worker,
                Colour::ByJob => &bar.job,
            });
            let fill = fills.entry(hue).or_insert_with(|| format!("hsl({hue} 65% 52%)"));
            ctx.set_fill_style_str(fill);
            let left = axis.x(bar.start, width);
            let right = axis.x(bar.end, width).max(left + 1.0);
            let top = lane as f64 * lane_height + pad;
            ctx.fill_rect(left, top, right - left, lane_height - 2.0 * pad);
            if bar.attempts > 1 {
                ctx.stroke_rect(left, top, right - left, lane_height - 2.0 * pad);
            }
        }
        ctx.set_fill_style_str(FAILED);
        for failure in failures.iter().filter(|f| (axis.start..=axis.end).contains(&f.at)) {
            let Some(&lane) = lane_of.get(failure.worker.as_str()) else { continue };
            let x = axis.x(failure.at, width);
            ctx.fill_rect(x - 1.5, lane as f64 * lane_height, 3.0, lane_height);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::clock;

    #[test]
    fn axis_labels_are_short() {
        assert_eq!(clock(0), "0 s");
        assert_eq!(clock(2_500), "2.5 s");
        assert_eq!(clock(30_000), "30 s");
        assert_eq!(clock(120_000), "2 min");
        assert_eq!(clock(90_000), "1 min 30 s");
    }
}
