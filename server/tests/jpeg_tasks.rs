//! JPEG uploads travel as lossless crops of the file, not as raw pixels, and
//! the result is still exactly whole-image processing; JPEGs that cannot be
//! cropped travel raw.

use std::time::Duration;

use app::api::JobStatus;
use pipeline::codec::Encoding;
use pipeline::wire::{Task, Topics};
use pipeline::{Frame, Operation, ops};
use rdkafka::Message;
use testkit::*;

const DEADLINE: Duration = Duration::from_secs(120);

/// The image crate's own JPEG (4:2:0), as most uploads are.
fn image_crate_jpeg(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode(&frame.pixels, frame.width, frame.height, image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

fn other_jpeg(frame: &Frame, configure: impl FnOnce(&mut jpeg_encoder::Encoder<&mut Vec<u8>>)) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, 85);
    configure(&mut encoder);
    let (w, h) = (frame.width as u16, frame.height as u16);
    encoder.encode(&frame.pixels, w, h, jpeg_encoder::ColorType::Rgb).unwrap();
    out
}

/// Runs a job of `jpeg` through the system; returns the tasks it sent, with
/// each message's size.
async fn run(jpeg: Vec<u8>, chain: &[Operation]) -> Vec<(Task, usize)> {
    let broker = Broker::start();
    let prefix = unique_prefix("jpeg-tasks");
    let server = TestServer::start_with(&broker, &prefix, |c| c.tile_size = 256).await;
    let worker = TestWorker::start(&broker, &prefix, "w-jpeg");
    let api = server.api();
    let decoded = image::load_from_memory(&jpeg).unwrap().into_rgb8();
    let (width, height) = decoded.dimensions();
    let whole = Frame::new(width, height, decoded.into_raw());
    let ops_json = serde_json::to_string(chain).unwrap();
    let job = api.submit_with("photo.jpg", jpeg, &[("format", "png"), ("ops", &ops_json)]).await;
    let done = api.finished(&job.id, DEADLINE).await;
    assert_eq!(done.status, JobStatus::Done, "{:?}", done.error);
    let result = api.result(&job.id).await;
    let expected = ops::process_whole(chain, &whole);
    assert!(result.as_raw() == &expected.pixels, "the result differs from whole-image processing");

    let tiles = done.tiles_total as usize;
    let topics = Topics::new(&prefix);
    let messages = read_topic(&broker, &topics.tasks, DEADLINE, |m| m.len() >= tiles).await;
    worker.stop().await;
    server.stop().await;
    messages.iter().map(|m| (Task::decode(m.payload().unwrap()).unwrap(), m.payload().map_or(0, <[u8]>::len))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_jpeg_travels_as_lossless_crops_and_the_result_is_exact() {
    let image = test_image(1100, 1030);
    let uploads = [
        image_crate_jpeg(&image),
        other_jpeg(&image, |e| {
            e.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_4_4);
            e.set_restart_interval(7);
        }),
    ];
    for jpeg in uploads {
        let upload = jpeg.len();
        let tasks = run(jpeg, &[Operation::default()]).await;
        assert_eq!(tasks.len(), 5 * 5);
        assert!(tasks.iter().all(|(t, _)| t.header.encoding == Encoding::Jpeg), "a task travelled raw");
        let sent: usize = tasks.iter().map(|(_, size)| size).sum();
        let raw: usize = tasks.iter().map(|(t, _)| t.input.pixels.len()).sum();
        // Tiles of 256 px overlap by their halos and margins: 1.7 times the
        // image's area in all, at the upload's compression.
        assert!(sent < upload * 2 && sent * 2 < raw, "{sent} bytes sent for a {upload} byte upload, {raw} raw");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_progressive_jpeg_travels_raw_and_the_result_is_exact() {
    let image = test_image(1030, 1024);
    let jpeg = other_jpeg(&image, |e| e.set_progressive(true));
    let tasks = run(jpeg, &[Operation::Invert, Operation::default()]).await;
    assert!(tasks.iter().all(|(t, _)| t.header.encoding == Encoding::Raw));
}

/// The scan is read while the tiles are cut, after the job exists: a JPEG
/// whose header passes but whose data is cut short or corrupt still gets a
/// 4xx, and leaves no job behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_jpeg_with_a_corrupt_scan_is_refused_and_leaves_no_job() {
    let broker = Broker::start();
    let prefix = unique_prefix("jpeg-corrupt");
    let server = TestServer::start_with(&broker, &prefix, |c| c.tile_size = 256).await;
    let api = server.api();
    let jpeg = image_crate_jpeg(&test_image(1100, 1030));
    let mut cut_short = jpeg.clone();
    cut_short.truncate(jpeg.len() * 3 / 5);
    // A marker that is not a restart marker, two thirds into the scan.
    let mut garbled = jpeg.clone();
    let at = jpeg.len() * 2 / 3;
    garbled[at..at + 2].copy_from_slice(&[0xFF, 0xC4]);
    for (name, bytes) in [("cut.jpg", cut_short), ("garbled.jpg", garbled)] {
        let response = api.upload(name, bytes).await;
        assert_eq!(response.status(), 422, "{name}");
        let body: app::api::ApiError = response.json().await.unwrap();
        assert_eq!(body.error, "unreadable_image", "{name}: {}", body.message);
        assert!(body.message.contains("malformed JPEG"), "{name}: {}", body.message);
    }
    let jobs: Vec<app::api::Job> = reqwest::get(api.url("/api/jobs")).await.unwrap().json().await.unwrap();
    assert!(jobs.is_empty(), "refused uploads left jobs: {jobs:?}");
    let left = std::fs::read_dir(server.data.path().join("jobs")).map_or(0, |d| d.count());
    assert_eq!(left, 0, "refused uploads left files");
    // The whole file is accepted.
    let job = api.submit_with("photo.jpg", jpeg, &[]).await;
    assert_eq!(job.tiles_total, 25);
    server.stop().await;
}
