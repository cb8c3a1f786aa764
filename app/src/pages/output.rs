//! The result's format, chosen next to the operations.

use leptos::prelude::*;

/// What the form sends as `format` and `quality`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChoice {
    /// `same`, `png`, `jpeg`, `webp` or `tiff`.
    pub format: String,
    pub quality: u8,
}

impl Default for OutputChoice {
    fn default() -> Self {
        Self { format: "same".into(), quality: crate::api::Output::JPEG_QUALITY }
    }
}

const FORMATS: [(&str, &str); 5] = [
    ("same", "Same as the input"),
    ("png", "PNG"),
    ("jpeg", "JPEG"),
    ("webp", "WebP (lossless)"),
    ("tiff", "TIFF (tiled, lossless)"),
];

#[component]
pub fn OutputPicker(choice: RwSignal<OutputChoice>) -> impl IntoView {
    // Quality matters for JPEG, and for "same" when the input is a JPEG.
    let lossy = move || choice.with(|c| c.format == "jpeg" || c.format == "same");
    view! {
        <fieldset class="output">
            <legend>"Result"</legend>
            <label>
                "Format "
                <select
                    id="output-format"
                    on:change=move |ev| choice.update(|c| c.format = event_target_value(&ev))
                >
                    {FORMATS
                        .iter()
                        .map(|(value, label)| view! { <option value=*value>{*label}</option> })
                        .collect_view()}
                </select>
            </label>
            <label class:hidden=move || !lossy()>
                "JPEG quality "
                <input
                    id="output-quality"
                    type="number"
                    min="1"
                    max="100"
                    prop:value=move || choice.with(|c| c.quality.to_string())
                    on:input=move |ev| {
                        if let Ok(q) = event_target_value(&ev).parse() {
                            choice.update(|c| c.quality = q);
                        }
                    }
                />
            </label>
        </fieldset>
    }
}
