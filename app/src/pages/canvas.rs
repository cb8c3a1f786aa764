//! What the views drawn on a canvas (the task stream, the tile map) share:
//! a redraw at most once a frame, whatever the number of events, and a 2D
//! context sized to the device's pixels.

use leptos::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement};

/// The colour of `--warn`, for tiles sent more than once, readable on both schemes.
pub const RETRIED: &str = "#c98a12";

/// Runs `draw` in the next animation frame after anything `track` reads
/// changes, or the window is resized: once, however many changes came.
pub fn redraw_on_change(track: impl Fn() + 'static, draw: impl Fn() + Copy + 'static) {
    let resized = RwSignal::new(0u32);
    let handle = window_event_listener(leptos::ev::resize, move |_| resized.update(|n| *n += 1));
    on_cleanup(move || handle.remove());
    let pending = StoredValue::new(false);
    Effect::new(move || {
        track();
        resized.track();
        if pending.get_value() {
            return;
        }
        pending.set_value(true);
        request_animation_frame(move || {
            pending.set_value(false);
            draw();
        });
    });
}

/// `canvas`'s 2D context with its bitmap sized to `size` CSS pixels on
/// this screen and cleared, and the device pixels per CSS pixel.
pub fn context(canvas: &HtmlCanvasElement, (width, height): (f64, f64)) -> Option<(CanvasRenderingContext2d, f64)> {
    let ctx = canvas.get_context("2d").ok().flatten()?.dyn_into::<CanvasRenderingContext2d>().ok()?;
    let ratio = window().device_pixel_ratio();
    canvas.set_width((width * ratio).round() as u32);
    canvas.set_height((height * ratio).round() as u32);
    ctx.clear_rect(0.0, 0.0, f64::from(canvas.width()), f64::from(canvas.height()));
    Some((ctx, ratio))
}

/// `canvas`'s CSS `color`, so that what is drawn in it suits both schemes.
pub fn css_colour(canvas: &HtmlCanvasElement) -> String {
    window()
        .get_computed_style(canvas)
        .ok()
        .flatten()
        .and_then(|s| s.get_property_value("color").ok())
        .unwrap_or_else(|| "#888".into())
}
