//! The `tilepipe` binary against a real server, broker and worker: a folder
//! with a file that is not an image, then the same folder again.

use std::path::Path;
use std::process::Output;

use pipeline::Operation;
use testkit::*;

/// Runs `tilepipe` with `args` against `server` (off the async threads).
async fn tilepipe(server: &str, args: Vec<String>) -> Output {
    let server = server.to_owned();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tilepipe"))
            .args(args)
            .env("TILEPIPE_SERVER", server)
            .env_remove("TILEPIPE_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn decoded(path: &Path) -> Vec<u8> {
    image::open(path).unwrap().into_rgb8().into_raw()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_writes_results_reports_refusals_and_skips_what_is_done() {
    let broker = Broker::start();
    let prefix = unique_prefix("cli");
    let server = TestServer::start(&broker, &prefix).await;
    let worker = TestWorker::start(&broker, &prefix, "cli-worker");
    let base = server.url("");

    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(photos.join("more")).unwrap();
    let (a, b) = (test_image(1024, 1024), test_image(1100, 1030));
    std::fs::write(photos.join("a.png"), png(&a)).unwrap();
    std::fs::write(photos.join("more/b.png"), png(&b)).unwrap();
    std::fs::write(photos.join("notes.txt"), b"not an image at all").unwrap();
    let out = dir.path().join("results");
    let submit = |json: bool| {
        let mut args: Vec<String> =
            ["submit", photos.to_str().unwrap(), "--out", out.to_str().unwrap()].map(str::to_owned).into();
        args.extend(["--ops".into(), r#"[{"op":"invert"}]"#.into(), "--jobs".into(), "2".into()]);
        if json {
            args.push("--json".into());
        }
        args
    };

    let first = tilepipe(&base, submit(true)).await;
    assert_eq!(first.status.code(), Some(1), "a refused file fails the run: {}", text(&first.stderr));
    let lines: Vec<serde_json::Value> =
        text(&first.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON lines")).collect();
    let about = |name: &str| lines.iter().find(|l| l["file"].as_str().is_some_and(|f| f.ends_with(name))).unwrap();
    assert_eq!(about("notes.txt")["status"], "failed");
    assert!(about("notes.txt")["error"].as_str().unwrap().contains("unsupported_format"), "{lines:?}");
    assert_eq!(about("a.png")["status"], "done");
    assert_eq!(about("b.png")["status"], "done");
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!((&summary["done"], &summary["skipped"], &summary["failed"]), (&2.into(), &0.into(), &1.into()));
    // The run's uploads are one batch.
    let batch = summary["batch"].as_str().expect("a batch id");
    let batch: app::api::Batch =
        reqwest::get(server.url(&format!("/api/batches/{batch}"))).await.unwrap().json().await.unwrap();
    assert_eq!((batch.images_total, batch.images_done), (2, 2));
    let ops = [Operation::Invert];
    assert!(decoded(&out.join("a.png")) == pipeline::ops::process_whole(&ops, &a).pixels, "a.png's result");
    assert!(decoded(&out.join("b.png")) == pipeline::ops::process_whole(&ops, &b).pixels, "b.png's result");
    assert!(std::fs::read_dir(&out).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".part")));

    // Again: what is done is skipped, and nothing new reaches the server.
    let second = tilepipe(&base, submit(false)).await;
    assert_eq!(second.status.code(), Some(1));
    let stdout = text(&second.stdout);
    assert!(stdout.contains("0 done, 2 skipped, 1 failed"), "{stdout}");
    assert!(stdout.contains("notes.txt") && stdout.contains("unsupported_format"), "{stdout}");
    let jobs = tilepipe(&base, vec!["jobs".into(), "--json".into()]).await;
    let jobs: Vec<app::api::Job> = serde_json::from_slice(&jobs.stdout).unwrap();
    assert_eq!(jobs.len(), 2, "the second run uploaded nothing");

    // The other commands: workers, and a cancel the server refuses, in its words.
    // The master hears of workers through their heartbeats, within seconds.
    let workers = eventually("the worker to be listed", std::time::Duration::from_secs(30), || async {
        let listed = text(&tilepipe(&base, vec!["workers".into()]).await.stdout);
        listed.contains("cli-worker").then_some(listed)
    })
    .await;
    assert!(workers.contains("alive"), "{workers}");
    let cancel = tilepipe(&base, vec!["cancel".into(), jobs[0].id.clone()]).await;
    assert_eq!(cancel.status.code(), Some(1));
    assert!(text(&cancel.stderr).contains("already_finished"), "{}", text(&cancel.stderr));

    worker.stop().await;
    server.stop().await;
}
