//! tilepipe's web UI (Leptos) and the API types it shares with the server.

pub mod api;
#[cfg(feature = "hydrate")]
mod client;
mod live;
mod pages;
mod timeline;

use leptos::prelude::*;
use leptos_meta::{MetaTags, Stylesheet, Title, provide_meta_context};
use leptos_router::components::{A, Route, Router, Routes};
use leptos_router::path;

/// The HTML document around the app, rendered by the server.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <meta name="color-scheme" content="light dark" />
                // Scripts run only with this response's nonce (the hydration
                // script, which then loads the wasm); must precede them.
                <meta http-equiv="Content-Security-Policy" content=content_security_policy() />
                <AutoReload options=options.clone() />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

/// The page's script policy, with the nonce the server generated for this
/// response (leptos_axum provides one per render).
fn content_security_policy() -> String {
    let scripts = match leptos::nonce::use_nonce() {
        Some(nonce) => format!("'nonce-{nonce}' 'strict-dynamic'"),
        None => "'self'".to_owned(),
    };
    format!(
        "default-src 'self'; script-src {scripts} 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' blob: data:; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'"
    )
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    let live = live::Live::provide();
    Effect::new(move || live.connect());

    view! {
        <Stylesheet id="leptos" href="/pkg/tilepipe.css" />
        <Title text="tilepipe" />
        <Router>
            <header class="top">
                <A href="/" attr:class="brand">"tilepipe"</A>
                <nav>
                    <A href="/">"Upload"</A>
                    <A href="/dashboard">"Dashboard"</A>
                </nav>
                <span class="conn" role="status" class:online=move || live.connected.get()>
                    {move || if live.connected.get() { "live" } else { "connecting…" }}
                </span>
            </header>
            <main>
                <Routes fallback=|| view! { <p class="empty">"Page not found."</p> }>
                    <Route path=path!("/") view=pages::upload::UploadPage />
                    <Route path=path!("/dashboard") view=pages::dashboard::Dashboard />
                    <Route path=path!("/jobs/:id") view=pages::job::JobPage />
                    <Route path=path!("/batches/:id") view=pages::batch::BatchPage />
                </Routes>
            </main>
        </Router>
    }
}

#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(App);
}
