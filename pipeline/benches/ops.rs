//! Throughput of every operation, single-threaded and tiled across all cores,
//! and the fast Gaussian blur against the `image` crate's blur.
//!
//! `cargo bench -p pipeline` (release). `BENCH_SIZE` changes the image edge
//! (default 8192). Prints Markdown tables, and OpenCV's GaussianBlur on the
//! same image when `scripts/setup.sh` has installed it (tools/venv).

use std::hint::black_box;

// As in the worker binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::{Duration, Instant};

use pipeline::ops::{self, Operation};
use pipeline::{Frame, TileGrid};

const TILE: u32 = 512;

fn noise(width: u32, height: u32) -> Frame {
    Frame::noise(width, height, pipeline::Channels::Rgb, 0x2545_F491_4F6C_DD1D)
}

/// Best of a few runs, at least `min_runs`, for about a second at most.
fn best(min_runs: u32, mut f: impl FnMut()) -> Duration {
    let (mut best, started, mut runs) = (Duration::MAX, Instant::now(), 0);
    while runs < min_runs || (started.elapsed() < Duration::from_secs(1) && runs < 50) {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
        runs += 1;
    }
    best
}

fn mp_per_s(pixels: u64, d: Duration) -> f64 {
    pixels as f64 / 1e6 / d.as_secs_f64()
}

/// The whole image as tiles with halos, spread over `threads` threads.
fn tiled(chain: &[Operation], image: &Frame, threads: usize) {
    let halo = ops::chain_halo(chain);
    let grid = TileGrid::new(image.width, image.height, TILE);
    let next = std::sync::atomic::AtomicU32::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(rect) = grid.tile(i) else { break };
                    black_box(ops::process_tile(chain, image.crop_with_halo(rect, halo), halo));
                }
            });
        }
    });
}

fn main() {
    let size: u32 = std::env::var("BENCH_SIZE").ok().and_then(|s| s.parse().ok()).unwrap_or(8192);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let image = noise(size, size);
    let pixels = u64::from(size) * u64::from(size);
    let tile_pixels = u64::from(TILE) * u64::from(TILE);

    let catalog = [
        ("gaussian_blur 51 (sigma 8)", Operation::default()),
        ("gaussian_blur 21", Operation::GaussianBlur { kernel: 21, sigma: None }),
        ("box_blur 51", Operation::BoxBlur { kernel: 51 }),
        ("sharpen r5 x1.5", Operation::Sharpen { radius: 5, amount: 1.5 }),
        ("edge_detect", Operation::EdgeDetect),
        ("grayscale", Operation::Grayscale),
        ("invert", Operation::Invert),
        ("brightness_contrast", Operation::BrightnessContrast { brightness: 10.0, contrast: 1.2 }),
    ];

    println!("image {size}x{size} RGB, tiles {TILE}x{TILE} with halos, {threads} threads\n");
    println!(
        "| operation | one tile, 1 thread (MP/s) | whole image, 1 thread (MP/s) | tiled, {threads} threads (MP/s) |"
    );
    println!("|---|---:|---:|---:|");
    let (mut blur_whole, mut blur_tile, mut blur_tiled) = (0.0, 0.0, 0.0);
    for (name, op) in catalog {
        let chain = [op];
        let halo = ops::chain_halo(&chain);
        let rect = pipeline::Rect::new(size / 2, size / 2, TILE, TILE);
        let tile = best(5, || {
            black_box(ops::process_tile(&chain, image.crop_with_halo(rect, halo), halo));
        });
        let whole = best(2, || {
            black_box(ops::process_whole(&chain, &image));
        });
        let spread = best(2, || tiled(&chain, &image, threads));
        let (t, w, p) = (mp_per_s(tile_pixels, tile), mp_per_s(pixels, whole), mp_per_s(pixels, spread));
        if blur_whole == 0.0 {
            (blur_whole, blur_tile, blur_tiled) = (w, t, p);
        }
        println!("| {name} | {t:.1} | {w:.1} | {p:.1} |");
    }

    // The same 51x51 sigma-8 blur with the image crate, whole image, 1 thread.
    let rgb = image::RgbImage::from_raw(size, size, image.pixels.clone()).expect("buffer size");
    let imageops = best(1, || {
        black_box(image::imageops::blur(&rgb, 8.0));
    });
    let dynamic = image::DynamicImage::ImageRgb8(rgb);
    let dynamic_blur = best(1, || {
        black_box(dynamic.blur(8.0));
    });
    let (a, b) = (mp_per_s(pixels, imageops), mp_per_s(pixels, dynamic_blur));
    println!("\n| Gaussian blur sigma 8, whole image, 1 thread | MP/s | tilepipe is |");
    println!("|---|---:|---:|");
    println!("| tilepipe (libblur fixed point, reflect-101 halo) | {blur_whole:.1} | 1.0x |");
    println!("| image `imageops::blur` | {a:.1} | {:.1}x faster |", blur_whole / a);
    println!("| image `DynamicImage::blur` | {b:.1} | {:.1}x faster |", blur_whole / b);

    chain_of_blurs(&image);
    encodings(&image);

    match opencv_blur(&image) {
        Some(opencv) => {
            let per_core = blur_tiled / threads as f64;
            println!("\n| 51x51 Gaussian blur, per core | MP/s | vs OpenCV |");
            println!("|---|---:|---:|");
            println!("| OpenCV `GaussianBlur`, whole image, 1 thread | {opencv:.1} | 1.0x |");
            println!("| tilepipe, one tile, 1 thread | {blur_tile:.1} | {:.1}x |", blur_tile / opencv);
            println!("| tilepipe, whole image, 1 thread | {blur_whole:.1} | {:.1}x |", blur_whole / opencv);
            println!("| tilepipe, tiled on {threads} threads, per core | {per_core:.1} | {:.1}x |", per_core / opencv);
        }
        None => println!("\nOpenCV is not installed (run scripts/setup.sh): no comparison."),
    }
}

/// OpenCV's single-thread GaussianBlur(51x51, sigma 0) on the same pixels, in MP/s.
fn opencv_blur(image: &Frame) -> Option<f64> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = std::env::var_os("TILEPIPE_PYTHON").map_or_else(|| root.join("tools/venv/bin/python"), Into::into);
    if !python.exists() {
        return None;
    }
    let raw = std::env::temp_dir().join(format!("tilepipe-bench-{}.rgb", std::process::id()));
    std::fs::write(&raw, &image.pixels).ok()?;
    let output = std::process::Command::new(python)
        .arg(root.join("tools/opencv_reference.py"))
        .args(["bench", &image.width.to_string(), &image.height.to_string()])
        .arg(&raw)
        .output();
    let _ = std::fs::remove_file(&raw);
    String::from_utf8(output.ok()?.stdout).ok()?.trim().parse().ok()
}

/// A chain of three 51x51 blurs on one tile: each step on what the steps
/// after it read (as `process_tile` runs it), against every step on the
/// whole cut (the tile and the chain's halo).
fn chain_of_blurs(image: &Frame) {
    let chain = [Operation::default(), Operation::default(), Operation::default()];
    let halo = ops::chain_halo(&chain);
    let rect = pipeline::Rect::new(image.width / 2, image.height / 2, TILE, TILE);
    // Interleaved, so that both see the same machine.
    let (mut trimmed, mut whole_cut) = (Duration::MAX, Duration::MAX);
    for _ in 0..40 {
        let t = Instant::now();
        black_box(ops::process_tile(&chain, image.crop_with_halo(rect, halo), halo));
        trimmed = trimmed.min(t.elapsed());
        let t = Instant::now();
        let out = chain.iter().fold(image.crop_with_halo(rect, halo), |frame, op| op.apply(frame));
        black_box(out.crop(pipeline::Rect::new(halo, halo, TILE, TILE)));
        whole_cut = whole_cut.min(t.elapsed());
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "
| three 51x51 blurs, one {TILE} px tile, 1 thread | ms | ratio |"
    );
    println!("|---|---:|---:|");
    println!("| every step on the whole cut ({} px) | {:.1} | 1.0x |", TILE + 2 * halo, ms(whole_cut));
    println!(
        "| each step on what the next steps read (as `process_tile`) | {:.1} | {:.2}x faster |",
        ms(trimmed),
        whole_cut.as_secs_f64() / trimmed.as_secs_f64()
    );
}

/// What a result tile costs on the wire, raw and as PNG, for an input tile
/// (noise) and for the same tile blurred.
fn encodings(image: &Frame) {
    use pipeline::codec::{self, Encoding};
    let rect = pipeline::Rect::new(image.width / 2, image.height / 2, TILE, TILE);
    let blurred = ops::process_tile(&[Operation::default()], image.crop_with_halo(rect, 25), 25);
    println!("\n| {TILE} px tile | raw bytes | PNG bytes | PNG encode ms | PNG decode ms |");
    println!("|---|---:|---:|---:|---:|");
    for (name, tile) in [("input (noise)", image.crop(rect)), ("blurred result", blurred)] {
        let png = codec::encode(&tile, Encoding::Png);
        let encode = best(5, || {
            black_box(codec::encode(&tile, Encoding::Png));
        });
        let shape = (tile.width, tile.height, tile.channels);
        let decode = best(5, || {
            black_box(codec::decode(&png, Encoding::Png, shape).expect("its own PNG"));
        });
        let share = 100.0 * png.len() as f64 / tile.pixels.len() as f64;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {name} | {} | {} ({share:.0}%) | {:.2} | {:.2} |",
            tile.pixels.len(),
            png.len(),
            ms(encode),
            ms(decode)
        );
    }
}
