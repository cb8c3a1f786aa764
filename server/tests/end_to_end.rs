//! A real broker, a real server with its SQLite file, two real workers: a
//! 1536x1100 image goes through the whole system and comes back equal, bit
//! for bit, to the same blur applied to the whole image at once.

use std::collections::HashSet;
use std::time::Duration;

use app::api::{Event, JobStatus, Output, Worker, WorkerStatus};
use pipeline::{Operation, ops};
use testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_process_an_image_seamlessly() {
    let broker = Broker::start();
    let prefix = unique_prefix("e2e");
    let server = TestServer::start(&broker, &prefix).await;
    let workers = [TestWorker::start(&broker, &prefix, "w-one"), TestWorker::start(&broker, &prefix, "w-two")];

    let events = record_events(&server, |e| matches!(e, Event::Job(j) if j.status.is_finished())).await;
    let image = test_image(1536, 1100);
    let response = server.upload("mountains.png", png(&image)).await;
    assert_eq!(response.status(), 201);
    let created: app::api::Job = response.json().await.unwrap();
    assert_eq!((created.width, created.height, created.tiles_total), (1536, 1100, 9));
    assert!(matches!(created.status, JobStatus::Queued | JobStatus::Running));

    let job = eventually("the job to finish", Duration::from_secs(120), || async {
        let job = server.job(&created.id).await;
        job.status.is_finished().then_some(job)
    })
    .await;
    assert_eq!(job.status, JobStatus::Done, "job failed: {:?}", job.error);
    assert_eq!(job.tiles_done, 9);
    let stages = job.stages.expect("a done job says where its time went");
    assert!(stages.decode_ms > 0.0 && stages.process_ms >= stages.collect_ms && stages.encode_ms > 0.0, "{stages:?}");
    // Timed from the upload's last byte: a fresh job's first task.
    let first = stages.first_task_ms.expect("a fresh upload's first task is timed");
    assert!(first.is_finite() && first >= 0.0, "{stages:?}");

    // Every tile is recorded as done, by one of our workers.
    let tiles: Vec<app::api::Tile> =
        reqwest::get(server.url(&format!("/api/jobs/{}/tiles", job.id))).await.unwrap().json().await.unwrap();
    assert_eq!(tiles.len(), 9);
    let names: HashSet<_> = ["w-one", "w-two"].into_iter().collect();
    for tile in &tiles {
        assert_eq!(tile.status, app::api::TileStatus::Done);
        assert!(names.contains(tile.worker_id.as_deref().unwrap_or("")), "tile {} by {:?}", tile.idx, tile.worker_id);
        assert!(tile.elapsed_ms.unwrap() > 0.0);
    }

    // The original is served back as it came, for the before/after view.
    let input = reqwest::get(server.url(&format!("/api/jobs/{}/input", job.id))).await.unwrap();
    assert_eq!((input.status().as_u16(), input.headers()["content-type"].to_str().unwrap()), (200, "image/png"));
    assert!(input.bytes().await.unwrap() == png(&image), "the input differs from the upload");

    // The result equals the whole-image blur exactly.
    let response = reqwest::get(server.url(&format!("/api/jobs/{}/result", job.id))).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    let bytes = response.bytes().await.unwrap();
    let result = image::load_from_memory(&bytes).unwrap().into_rgb8();
    let expected = ops::process_whole(&[Operation::default()], &image);
    assert_eq!(result.dimensions(), (1536, 1100));
    assert!(result.as_raw() == &expected.pixels, "distributed result differs from the whole-image blur");

    // Downloads stream from disk and resume: a byte range of the result and of the input.
    let client = reqwest::Client::new();
    for (path, whole) in [("result", bytes.to_vec()), ("input", png(&image))] {
        let url = server.url(&format!("/api/jobs/{}/{path}", job.id));
        let part = client.get(&url).header("Range", "bytes=100-1099").send().await.unwrap();
        assert_eq!(part.status(), 206, "{path}");
        assert_eq!(part.headers()["content-range"], format!("bytes 100-1099/{}", whole.len()), "{path}");
        assert!(part.bytes().await.unwrap() == whole[100..1100], "{path}: the range differs");
        let beyond = client.get(&url).header("Range", format!("bytes={}-", whole.len() + 10)).send().await.unwrap();
        assert_eq!(beyond.status(), 416, "{path}");
    }

    // The event stream told the story live: every tile once, progress that
    // only grows, and the end.
    let events = tokio::time::timeout(Duration::from_secs(30), events).await.unwrap().unwrap();
    let tiles: HashSet<u32> = events
        .iter()
        .filter_map(|e| match e {
            Event::Tile(t) if t.job_id == job.id => Some(t.tile),
            _ => None,
        })
        .collect();
    assert_eq!(tiles, (0..9).collect());
    // Each tile event says when its result reached the master (within the
    // job's life), its size and how often it was sent; the stored tiles say
    // the same (the task stream draws from both), and the stages are placed
    // on the same clock.
    let finished = job.finished_at.unwrap();
    let decoded = stages.decoded_at.expect("stages have a start");
    assert!((job.created_at..=finished).contains(&decoded), "{stages:?}");
    let stored = server.api().tiles(&job.id).await;
    for event in &events {
        let Event::Tile(t) = event else { continue };
        assert!((decoded..=finished).contains(&t.done_at), "tile {} done at {}", t.tile, t.done_at);
        assert!(t.result_bytes > 0 && t.attempts == 1, "{t:?}");
        let s = &stored[t.tile as usize];
        assert_eq!((s.done_at, s.result_bytes, s.attempts), (Some(t.done_at), Some(t.result_bytes), t.attempts));
    }
    let progress: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            Event::Job(j) if j.id == job.id => Some(j.tiles_done),
            _ => None,
        })
        .collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "progress went backwards: {progress:?}");
    assert!(matches!(events.last(), Some(Event::Job(j)) if j.status == JobStatus::Done && j.tiles_done == 9));

    // Both workers are known and alive.
    let listed: Vec<Worker> = eventually("both workers to report", Duration::from_secs(20), || async {
        let w: Vec<Worker> = reqwest::get(server.url("/api/workers")).await.unwrap().json().await.unwrap();
        (w.len() == 2).then_some(w)
    })
    .await;
    assert!(listed.iter().all(|w| w.status == WorkerStatus::Alive));

    let stats: app::api::Stats = reqwest::get(server.url("/api/stats")).await.unwrap().json().await.unwrap();
    assert_eq!((stats.jobs_done, stats.tiles_done, stats.workers_alive), (1, 9, 2));
    // The tasks topic's partitions, as the broker has them (the test kit's 4).
    assert_eq!(stats.task_partitions, 4);

    // A chain of operations runs through the same path, exactly too.
    let chain = vec![Operation::Grayscale, Operation::GaussianBlur { kernel: 9, sigma: None }, Operation::Invert];
    let small = test_image(1100, 1030);
    let part = reqwest::multipart::Part::bytes(png(&small)).file_name("chain.png");
    let form = reqwest::multipart::Form::new().text("ops", serde_json::to_string(&chain).unwrap()).part("image", part);
    let response = reqwest::Client::new().post(server.url("/api/jobs")).multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let created: app::api::Job = response.json().await.unwrap();
    assert_eq!(created.ops, chain);
    let job = eventually("the chain job to finish", Duration::from_secs(120), || async {
        let job = server.job(&created.id).await;
        job.status.is_finished().then_some(job)
    })
    .await;
    assert_eq!(job.status, JobStatus::Done, "job failed: {:?}", job.error);
    let bytes = reqwest::get(server.url(&format!("/api/jobs/{}/result", job.id))).await.unwrap().bytes().await.unwrap();
    let result = image::load_from_memory(&bytes).unwrap().into_rgb8();
    assert!(result.as_raw() == &ops::process_whole(&chain, &small).pixels, "chain result differs");

    for w in workers {
        w.stop().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn results_come_in_the_chosen_format() {
    let broker = Broker::start();
    let prefix = unique_prefix("formats");
    let server = TestServer::start(&broker, &prefix).await;
    let _worker = TestWorker::start(&broker, &prefix, "w-formats");
    let api = server.api();
    let image = test_image(1100, 1024);
    let expected = ops::process_whole(&[Operation::default()], &image);
    let mut jpeg_input = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg_input, 95)
        .encode(&image.pixels, image.width, image.height, image::ExtendedColorType::Rgb8)
        .unwrap();
    let mut tiff_input = Vec::new();
    image::RgbImage::from_raw(image.width, image.height, image.pixels.clone())
        .unwrap()
        .write_to(&mut std::io::Cursor::new(&mut tiff_input), image::ImageFormat::Tiff)
        .unwrap();

    let cases = [
        // (upload, fields, expected output, content type, file extension)
        ("a.png", png(&image), vec![("format", "webp")], Output::Webp, "image/webp", "webp"),
        (
            "b.png",
            png(&image),
            vec![("format", "jpeg"), ("quality", "95")],
            Output::Jpeg { quality: 95 },
            "image/jpeg",
            "jpg",
        ),
        ("c.jpg", jpeg_input.clone(), vec![], Output::Jpeg { quality: 90 }, "image/jpeg", "jpg"),
        ("d.png", png(&image), vec![("format", "same")], Output::Png, "image/png", "png"),
        ("e.png", png(&image), vec![("format", "tiff")], Output::Tiff, "image/tiff", "tif"),
        // A TIFF keeps its format.
        ("f.tif", tiff_input, vec![], Output::Tiff, "image/tiff", "tif"),
    ];
    for (name, bytes, fields, output, mime, extension) in cases {
        let created = api.submit_with(name, bytes, &fields).await;
        assert_eq!(created.output, output, "{name}");
        let job = api.finished(&created.id, Duration::from_secs(120)).await;
        assert_eq!(job.status, JobStatus::Done, "{name}: {:?}", job.error);
        let response = reqwest::get(server.url(&format!("/api/jobs/{}/result", job.id))).await.unwrap();
        assert_eq!(response.headers()["content-type"], mime, "{name}");
        let disposition = response.headers()["content-disposition"].to_str().unwrap().to_owned();
        assert!(disposition.ends_with(&format!("-tilepipe.{extension}\"")), "{disposition}");
        let bytes = response.bytes().await.unwrap();
        assert_eq!(image::guess_format(&bytes).unwrap().to_mime_type(), mime, "{name}");
        let result = image::load_from_memory(&bytes).unwrap().into_rgb8();
        assert_eq!(result.dimensions(), (1100, 1024), "{name}");
        if let Output::Jpeg { quality } = output {
            // Joined from the workers' JPEG tiles: the very file that coding
            // the whole processed image gives (of the JPEG's own pixels,
            // for a JPEG upload).
            let processed = if name.ends_with(".jpg") {
                let decoded = image::load_from_memory(&jpeg_input).unwrap().into_rgb8();
                let input = pipeline::Frame::new(decoded.width(), decoded.height(), decoded.into_raw());
                ops::process_whole(&[Operation::default()], &input)
            } else {
                expected.clone()
            };
            let whole = pipeline::jpeg::encode_tile(&processed, quality).unwrap();
            assert!(bytes == whole, "{name}: the JPEG differs from the whole image's");
        } else {
            assert!(result.as_raw() == &expected.pixels, "{name}: a lossless result differs");
        }
    }
    server.stop().await;
}

/// Workers that send their tiles as JPEG and workers that send them raw (a
/// worker in another language, or from before JPEG tiles) make the same
/// JPEG: the master codes a raw tile as a worker would have.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_jpeg_result_is_the_same_whether_tiles_come_as_jpeg_or_raw() {
    use pipeline::codec::Encoding;
    let broker = Broker::start();
    let prefix = unique_prefix("mixed");
    let server = TestServer::start_with(&broker, &prefix, |c| c.tile_size = 256).await;
    let api = server.api();
    // Odd tiles come back as JPEG tiles of the quality the task asks for,
    // even ones raw.
    let mixed = FakeWorker::start(&broker, &prefix, |task| {
        let (tile, quality) = (task.header.tile, task.header.jpeg_tile_quality);
        let raw = answer(task.clone(), "mixed", None);
        let (Some(quality), 1) = (quality, tile % 2) else { return Some(raw) };
        let pipeline::wire::Reply::Done(result) = pipeline::wire::Reply::decode(&raw).unwrap() else { unreachable!() };
        let jpeg = pipeline::jpeg::encode_tile(&result.output, quality).unwrap();
        Some(pipeline::wire::ResultHeader { encoding: Encoding::Jpeg, ..result.header }.encode(&jpeg))
    });
    let image = test_image(1100, 1024);
    let created = api.submit_with("mixed.png", png(&image), &[("format", "jpeg"), ("quality", "85")]).await;
    assert_eq!(created.tiles_total, 20);
    let job = api.finished(&created.id, Duration::from_secs(120)).await;
    assert_eq!(job.status, JobStatus::Done, "{:?}", job.error);
    let bytes = reqwest::get(server.url(&format!("/api/jobs/{}/result", job.id))).await.unwrap().bytes().await.unwrap();
    let expected = ops::process_whole(&[Operation::default()], &image);
    assert!(bytes == pipeline::jpeg::encode_tile(&expected, 85).unwrap(), "the JPEG differs from the whole image's");
    mixed.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alpha_goes_through_the_pipeline() {
    let broker = Broker::start();
    let prefix = unique_prefix("alpha");
    let server = TestServer::start(&broker, &prefix).await;
    let _worker = TestWorker::start(&broker, &prefix, "w-alpha");
    let api = server.api();
    // The test image with a diagonal gradient of transparency.
    let rgb = test_image(1030, 1024);
    let pixels = rgb
        .pixels
        .chunks_exact(3)
        .enumerate()
        .flat_map(|(i, p)| [p[0], p[1], p[2], ((i % 1030 + i / 1030) / 8) as u8])
        .collect();
    let image = pipeline::Frame::with_channels(1030, 1024, pipeline::Channels::Rgba, pixels);
    let chain = [Operation::Grayscale, Operation::default(), Operation::Invert];
    let expected = ops::process_whole(&chain, &image);

    for format in ["png", "webp"] {
        let ops_json = serde_json::to_string(&chain).unwrap();
        let created = api.submit_with("alpha.png", png(&image), &[("ops", &ops_json), ("format", format)]).await;
        let job = api.finished(&created.id, Duration::from_secs(120)).await;
        assert_eq!(job.status, JobStatus::Done, "{format}: {:?}", job.error);
        let bytes =
            reqwest::get(server.url(&format!("/api/jobs/{}/result", job.id))).await.unwrap().bytes().await.unwrap();
        let result = image::load_from_memory(&bytes).unwrap();
        assert!(result.color().has_alpha(), "{format}: alpha was dropped");
        assert!(result.into_rgba8().as_raw() == &expected.pixels, "{format}: differs from the whole-image result");
    }
    server.stop().await;
}

/// Pages show a job through previews at most 2048 px on the long side, made
/// from the files in one pass: the input's from the upload (a large JPEG's
/// from its DC coefficients), the result's once it is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn previews_are_the_images_shrunk_to_fit_a_page() {
    let broker = Broker::start();
    let prefix = unique_prefix("previews");
    let server = TestServer::start(&broker, &prefix).await;
    let api = server.api();
    let decoded =
        |bytes: &[u8]| image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg).unwrap().into_rgb8();
    // The mean difference from `expected` shrunk by `factor` as a preview
    // is, and that of the shrunk image's own JPEG (q85, as previews are).
    let distance = |preview: &image::RgbImage, expected: &pipeline::Frame, factor: u32| {
        let side = expected.width.max(expected.height).div_ceil(factor);
        let mut shrinker = pipeline::shrink::Shrinker::new((expected.width, expected.height), expected.channels, side);
        expected.pixels.chunks_exact(expected.width as usize * 3).for_each(|row| shrinker.push(row));
        let shrunk = shrinker.finish();
        assert_eq!((shrunk.width, shrunk.height), (expected.width.div_ceil(factor), expected.height.div_ceil(factor)));
        assert_eq!(preview.dimensions(), (shrunk.width, shrunk.height));
        let from = |pixels: &[u8]| {
            let total: u64 = pixels.iter().zip(&shrunk.pixels).map(|(&a, &b)| u64::from(a.abs_diff(b))).sum();
            total as f64 / shrunk.pixels.len() as f64
        };
        let mut own = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut own, 85)
            .encode(&shrunk.pixels, shrunk.width, shrunk.height, image::ExtendedColorType::Rgb8)
            .unwrap();
        (from(preview.as_raw()), from(decoded(&own).as_raw()))
    };

    // No worker yet: the job waits, its input can be previewed, its result not.
    let image = test_image(4100, 1100);
    let job = api.submit_with("wide.png", png(&image), &[]).await;
    let input = api.get(&format!("/api/jobs/{}/preview/input", job.id)).await;
    assert_eq!(input.status(), 200);
    assert_eq!(input.headers()["content-type"], "image/jpeg");
    let preview = decoded(&input.bytes().await.unwrap());
    let (d, jpeg) = distance(&preview, &image, 3);
    assert!(d <= jpeg + 0.5, "the input preview is {d} from the image shrunk (its JPEG: {jpeg})");
    let early = api.get(&format!("/api/jobs/{}/preview/result", job.id)).await;
    assert_eq!(early.status(), 409);
    assert_eq!(api.get(&format!("/api/jobs/{}/preview/other", job.id)).await.status(), 404);

    let _worker = TestWorker::start(&broker, &prefix, "w-previews");
    let done = api.finished(&job.id, Duration::from_secs(120)).await;
    assert_eq!(done.status, JobStatus::Done, "{:?}", done.error);
    let result = api.get(&format!("/api/jobs/{}/preview/result", job.id)).await;
    assert_eq!(result.status(), 200);
    let preview = decoded(&result.bytes().await.unwrap());
    let expected = ops::process_whole(&[Operation::default()], &image);
    let (d, jpeg) = distance(&preview, &expected, 3);
    assert!(d <= jpeg + 0.5, "the result preview is {d} from the result shrunk (its JPEG: {jpeg})");

    // A large JPEG's preview is its eighth, from the DC coefficients.
    let wide = test_image(8192, 1024);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
        .encode(&wide.pixels, wide.width, wide.height, image::ExtendedColorType::Rgb8)
        .unwrap();
    let job = api.submit_with("wide.jpg", jpeg, &[]).await;
    let input = api.get(&format!("/api/jobs/{}/preview/input", job.id)).await;
    assert_eq!(input.status(), 200);
    let preview = decoded(&input.bytes().await.unwrap());
    let (d, jpeg) = distance(&preview, &wide, 8);
    assert!(d <= jpeg + 4.0, "the DC preview is {d} from the image shrunk (its JPEG: {jpeg})");
    server.stop().await;
}

/// A done job's result can be explored at full resolution: its Deep Zoom
/// pyramid is built on the first request (202 with progress until then),
/// its full-size tiles are the result's pixels, and its smallest level is
/// one pixel. A JPEG result is read by bands, a PNG one by rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_results_pyramid_is_built_on_request_and_served_by_tile() {
    let broker = Broker::start();
    let prefix = unique_prefix("zoom");
    let server = TestServer::start(&broker, &prefix).await;
    let api = server.api();
    let image = test_image(1100, 1030);
    let blur = serde_json::to_string(&[Operation::default()]).unwrap();

    // Not before the job is done.
    let png_job = api.submit_with("a.png", png(&image), &[("ops", &blur)]).await;
    assert_eq!(api.get(&format!("/api/jobs/{}/zoom", png_job.id)).await.status(), 409);
    let jpeg_job = api.submit_with("a.png", png(&image), &[("ops", &blur), ("format", "jpeg")]).await;
    let _worker = TestWorker::start(&broker, &prefix, "w-zoom");
    let expected = ops::process_whole(&[Operation::default()], &image);

    for (job, tolerance) in [(png_job, 2.0), (jpeg_job, 4.0)] {
        let done = api.finished(&job.id, Duration::from_secs(120)).await;
        assert_eq!(done.status, JobStatus::Done, "{:?}", done.error);
        let zoom = eventually("the pyramid to be built", Duration::from_secs(60), || async {
            let response = api.get(&format!("/api/jobs/{}/zoom", job.id)).await;
            let status = response.status().as_u16();
            match response.json::<app::api::Zoom>().await.unwrap() {
                app::api::Zoom::Building { progress } => {
                    assert!(status == 202 && (0.0..=1.0).contains(&progress), "{status} {progress}");
                    None
                }
                ready => {
                    assert_eq!(status, 200);
                    Some(ready)
                }
            }
        })
        .await;
        let app::api::Zoom::Ready { width, height, tile_size, overlap, format } = zoom else { unreachable!() };
        assert_eq!((width, height, tile_size, overlap, format.as_str()), (1100, 1030, 254, 1, "jpg"));

        // Level 11 is the full size (2^11 >= 1100): its second tile starts
        // a pixel left of x = 254 and ends a pixel right of 508.
        let tile = api.get(&format!("/api/jobs/{}/zoom/11/1_0.jpg", job.id)).await;
        assert_eq!((tile.status().as_u16(), tile.headers()["content-type"].to_str().unwrap()), (200, "image/jpeg"));
        let tile = image::load_from_memory(&tile.bytes().await.unwrap()).unwrap().into_rgb8();
        assert_eq!(tile.dimensions(), (256, 255));
        let region = expected.crop(pipeline::Rect { x: 253, y: 0, width: 256, height: 255 });
        let total: u64 = tile.as_raw().iter().zip(&region.pixels).map(|(&a, &b)| u64::from(a.abs_diff(b))).sum();
        let mean = total as f64 / region.pixels.len() as f64;
        assert!(mean <= tolerance, "the tile is {mean} from the result's pixels");
        let smallest = api.get(&format!("/api/jobs/{}/zoom/0/0_0.jpg", job.id)).await;
        let smallest = image::load_from_memory(&smallest.bytes().await.unwrap()).unwrap();
        assert_eq!((smallest.width(), smallest.height()), (1, 1));
        for wrong in ["12/0_0.jpg", "11/5_0.jpg", "x/0_0.jpg", "11/0_0.gif", "11/0-0.jpg", "11/..%2F0_0.jpg"] {
            let response = api.get(&format!("/api/jobs/{}/zoom/{wrong}", job.id)).await;
            assert_eq!(response.status(), 404, "{wrong}");
        }
    }
    server.stop().await;
}
