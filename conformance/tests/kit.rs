//! The kit against real workers: tilepipe's own passes every check, and a
//! worker that never answers fails them, in bounded time.

use std::time::Duration;

use conformance::report::Outcome;

/// A workspace binary, beside this test's `deps/` directory.
fn binary(name: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    let dir = if dir.ends_with("deps") { dir.parent().unwrap() } else { dir };
    dir.join(name).display().to_string()
}

fn options(worker: String, deadline: Duration) -> conformance::Options {
    conformance::Options { worker, brokers: None, deadline }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_worker_conforms() {
    let report = conformance::run(options(binary("worker"), Duration::from_secs(60))).await.unwrap();
    println!("{report}");
    assert!(report.passed(), "{report}");
    // Every part of the corpus was judged.
    for part in ["on a JPEG task", "stopped on control", "sent again", "hostile", "dead", "heartbeats", "SIGTERM"] {
        let judged = report
            .checks
            .iter()
            .any(|c| c.name.contains(part) || matches!(&c.outcome, Outcome::Pass(d) if d.contains(part)));
        assert!(judged, "no check about {part:?}");
    }
}

/// The Python reference worker, written from docs/protocol.md alone, run
/// by the venv scripts/setup.sh makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_worker_conforms() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let command = format!("{root}/tools/venv/bin/python {root}/examples/python-worker/worker.py");
    let report = conformance::run(options(command, Duration::from_secs(60))).await.unwrap();
    println!("{report}");
    assert!(report.passed(), "{report}");
}

/// A worker that implements only some operations declines the others as
/// unsupported, and passes, with what it declined named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_worker_passes_with_its_declines_named() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let command = format!(
        "TILEPIPE_WORKER_OPS=invert,grayscale {root}/tools/venv/bin/python {root}/examples/python-worker/worker.py"
    );
    let report = conformance::run(options(command, Duration::from_secs(60))).await.unwrap();
    println!("{report}");
    assert!(report.passed(), "{report}");
    let implemented = report.checks.iter().find(|c| c.name == "operations implemented").unwrap();
    let expected = "all but box_blur, brightness_contrast, edge_detect, gaussian_blur, sharpen";
    assert!(matches!(&implemented.outcome, Outcome::Pass(d) if d.starts_with(expected)), "{implemented:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_never_answers_fails() {
    let report = conformance::run(options("sleep 600".into(), Duration::from_secs(3))).await.unwrap();
    println!("{report}");
    assert!(!report.passed());
    let failed =
        |name: &str| report.checks.iter().any(|c| c.name.contains(name) && matches!(c.outcome, Outcome::Fail(_)));
    assert!(failed("reads tasks queued before it joined"));
    assert!(failed("heartbeats"));
    assert!(failed("on RGB inside the image"));
    // `sleep` dies of SIGTERM at once: that check passes.
    assert!(!failed("exits on SIGTERM"));
}
