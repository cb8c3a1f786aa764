//! The operations editor: the chain a job applies, in order.

use leptos::prelude::*;
use pipeline::Operation;

/// How a step reads in the UI.
pub fn describe(op: &Operation) -> String {
    match op {
        Operation::GaussianBlur { kernel, sigma: None } => format!("Gaussian blur {kernel}×{kernel}"),
        Operation::GaussianBlur { kernel, sigma: Some(s) } => format!("Gaussian blur {kernel}×{kernel}, σ {s}"),
        Operation::BoxBlur { kernel } => format!("Box blur {kernel}×{kernel}"),
        Operation::Sharpen { radius, amount } => format!("Sharpen r{radius} ×{amount}"),
        Operation::EdgeDetect => "Edge detect".into(),
        Operation::Grayscale => "Grayscale".into(),
        Operation::Invert => "Invert".into(),
        Operation::BrightnessContrast { brightness, contrast } => {
            format!("Brightness {brightness:+}, contrast ×{contrast}")
        }
    }
}

/// The step the "Add" controls describe; the server validates the numbers.
fn step(kind: &str, size: u32) -> Operation {
    match kind {
        "box_blur" => Operation::BoxBlur { kernel: size },
        "sharpen" => Operation::Sharpen { radius: size, amount: 1.5 },
        "edge_detect" => Operation::EdgeDetect,
        "grayscale" => Operation::Grayscale,
        "invert" => Operation::Invert,
        "brighten" => Operation::BrightnessContrast { brightness: 20.0, contrast: 1.2 },
        _ => Operation::GaussianBlur { kernel: size, sigma: None },
    }
}

const KINDS: [(&str, &str); 7] = [
    ("gaussian_blur", "Gaussian blur (kernel)"),
    ("box_blur", "Box blur (kernel)"),
    ("sharpen", "Sharpen (radius)"),
    ("edge_detect", "Edge detect"),
    ("grayscale", "Grayscale"),
    ("invert", "Invert"),
    ("brighten", "Brighten (+20, ×1.2)"),
];

#[component]
pub fn ChainEditor(chain: RwSignal<Vec<Operation>>) -> impl IntoView {
    let kind = RwSignal::new("gaussian_blur".to_owned());
    let size = RwSignal::new(51u32);
    let sized = move || matches!(kind.get().as_str(), "gaussian_blur" | "box_blur" | "sharpen");

    view! {
        <fieldset class="chain">
            <legend>"Operations, applied in order"</legend>
            <ol id="chain">
                {move || {
                    chain
                        .get()
                        .into_iter()
                        .enumerate()
                        .map(|(i, op)| {
                            view! {
                                <li class="step">
                                    <span>{describe(&op)}</span>
                                    <button
                                        type="button"
                                        class="icon"
                                        aria-label=format!("Remove {}", describe(&op))
                                        on:click=move |_| chain.update(|c| {
                                            c.remove(i);
                                        })
                                    >
                                        "×"
                                    </button>
                                </li>
                            }
                        })
                        .collect_view()
                }}
            </ol>
            <div class="add-step">
                <label>
                    "Step "
                    <select id="op-kind" on:change=move |ev| kind.set(event_target_value(&ev))>
                        {KINDS
                            .iter()
                            .map(|(value, label)| view! { <option value=*value>{*label}</option> })
                            .collect_view()}
                    </select>
                </label>
                <label class:hidden=move || !sized()>
                    "Size "
                    <input
                        id="op-size"
                        type="number"
                        min="1"
                        max="255"
                        step="2"
                        prop:value=move || size.get().to_string()
                        on:input=move |ev| {
                            if let Ok(v) = event_target_value(&ev).parse() {
                                size.set(v);
                            }
                        }
                    />
                </label>
                <button
                    id="op-add"
                    type="button"
                    on:click=move |_| chain.update(|c| c.push(step(&kind.get_untracked(), size.get_untracked())))
                >
                    "Add step"
                </button>
            </div>
            {move || {
                chain.with(|c| c.is_empty()).then(|| view! { <p class="hint">"Add at least one step."</p> })
            }}
        </fieldset>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_descriptions() {
        assert_eq!(step("gaussian_blur", 51), Operation::default());
        assert_eq!(describe(&step("box_blur", 9)), "Box blur 9×9");
        assert_eq!(describe(&step("sharpen", 3)), "Sharpen r3 ×1.5");
        assert_eq!(describe(&step("invert", 0)), "Invert");
        assert!(KINDS.iter().all(|(k, _)| *k == "gaussian_blur" || step(k, 5) != Operation::default()));
    }
}
