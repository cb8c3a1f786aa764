//! A job served by a mixed group, tilepipe's Rust worker and the Python
//! reference worker (examples/python-worker), gives what docs/protocol.md
//! promises: the Rust worker's tiles equal whole-image processing exactly,
//! and every sample is within the chain's allowance.

use std::time::Duration;

use pipeline::Operation;
use pipeline::wire::Topics;
use testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_and_a_python_worker_share_a_job_within_the_protocols_accuracy() {
    let broker = Broker::start();
    let prefix = unique_prefix("mixed");
    let server = TestServer::start_with(&broker, &prefix, |c| c.tile_size = 256).await;
    let rust = TestWorker::start(&broker, &prefix, "rust-worker");
    let mut python = python_worker_process(&broker, &prefix, "python-worker");
    let group = Topics::new(&prefix).workers_group;
    // Both in the group (4 task partitions: two each).
    eventually("both workers to be in the group", Duration::from_secs(60), || async {
        (stable_group_members(&broker, group.clone()).await == 2).then_some(())
    })
    .await;

    let image = test_image(1536, 1280);
    let ops = [Operation::Grayscale, Operation::GaussianBlur { kernel: 51, sigma: None }, Operation::Invert];
    let api = server.api();
    let job = api.submit(&image, &ops).await;
    let job = api.finished(&job.id, Duration::from_secs(120)).await;
    assert_eq!(job.status, app::api::JobStatus::Done, "{:?}", job.error);

    let result = api.result(&job.id).await;
    let expected = pipeline::ops::process_whole(&ops, &image);
    let allowance = conformance::tolerance::of_chain(&ops);
    let worst = result.as_raw().iter().zip(&expected.pixels).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
    assert!(worst <= allowance, "a sample is {worst} from the whole-image result; the protocol allows {allowance}");

    let tiles = api.tiles(&job.id).await;
    let by = |id: &str| tiles.iter().filter(|t| t.worker_id.as_deref() == Some(id)).collect::<Vec<_>>();
    let (rust_tiles, python_tiles) = (by("rust-worker"), by("python-worker"));
    println!(
        "{} tiles by the Rust worker, {} by the Python one; worst sample {worst}",
        rust_tiles.len(),
        python_tiles.len()
    );
    assert!(!python_tiles.is_empty() && !rust_tiles.is_empty(), "both workers must have taken part");
    for t in rust_tiles {
        for y in t.y..t.y + t.height {
            let row = |pixels: &[u8]| {
                pixels[((y * image.width + t.x) * 3) as usize..((y * image.width + t.x + t.width) * 3) as usize]
                    .to_vec()
            };
            assert!(row(result.as_raw()) == row(&expected.pixels), "tile {} by the Rust worker is not exact", t.idx);
        }
    }

    assert!(python.terminate(Duration::from_secs(20)).await.success(), "the Python worker exits 0 on SIGTERM");
    rust.stop().await;
    server.stop().await;
}
