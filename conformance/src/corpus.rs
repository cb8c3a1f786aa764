//! The tasks the kit sends and what it expects back for each: every
//! operation on RGB and RGBA, tiles inside the image and at its edges,
//! 1-pixel tiles, a tile too large for librdkafka's default limits, JPEG
//! tasks, a JPEG result, malformed and hostile tasks, tiles of a stopped
//! job and a redelivered task.

use pipeline::codec::Encoding;
use pipeline::frame::{Channels, Frame};
use pipeline::geometry::Rect;
use pipeline::jpeg::Jpeg;
use pipeline::ops::{self, Operation};
use pipeline::wire::{Source, TASK_MAGIC, Task, TaskHeader, TileKey};

use crate::tolerance;

/// One task message and what a conforming worker does with it.
pub struct Case {
    pub name: String,
    pub job_id: String,
    pub tile: u32,
    pub payload: Vec<u8>,
    pub expect: Expect,
}

pub enum Expect {
    /// A result of `reference` (the tile processed by tilepipe's own
    /// pipeline), each sample within `tolerance`.
    Result { reference: Frame, tolerance: u8, jpeg_quality: Option<u8> },
    /// A failure report naming the task's job, tile and attempt.
    Failure { attempt: u32 },
    /// The message itself on the dead-letter topic, with an `error` header.
    DeadLetter,
    /// Nothing: the job was stopped on `control` before the task was sent.
    Skipped,
}

impl Case {
    pub fn key(&self) -> String {
        TileKey::new(&self.job_id, self.tile).to_string()
    }
}

/// The image tiles are cut from: smooth colour with grain, so that every
/// operation changes something, with alpha rising across it for RGBA.
pub fn image(width: u32, height: u32, channels: Channels) -> Frame {
    let mut noise = pipeline::noise::Xorshift64::new(0x2545_F491_4F6C_DD1D);
    let n = channels.count();
    let mut pixels = Vec::with_capacity((width * height) as usize * n);
    for y in 0..height {
        for x in 0..width {
            let grain = (noise.next_u64() >> 59) as i32 - 16;
            let base = [x * 255 / width, y * 255 / height, (x + 2 * y) * 85 / (width + height)];
            pixels.extend(base.map(|b| (b as i32 + grain).clamp(0, 255) as u8));
            if n == 4 {
                pixels.push((40 + x * 215 / width) as u8);
            }
        }
    }
    Frame::with_channels(width, height, channels, pixels)
}

/// Where a tile lies in the image.
#[derive(Clone, Copy)]
enum Place {
    Inside,
    /// The bottom-right corner, a partial tile: the halo is mirrored on two sides.
    Corner,
    OnePixel,
    /// 512 x 512 RGBA: its raw result is over librdkafka's default 1,000,000-byte message limit.
    Large,
}

impl Place {
    fn rect(self, image: &Frame) -> Rect {
        match self {
            Place::Inside => Rect::new(64, 48, 64, 48),
            Place::Corner => Rect::new(image.width - 37, image.height - 23, 37, 23),
            Place::OnePixel => Rect::new(0, 0, 1, 1),
            Place::Large => Rect::new(128, 0, 512, 512),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Place::Inside => "inside the image",
            Place::Corner => "at the bottom-right corner",
            Place::OnePixel => "1 pixel at the top-left corner",
            Place::Large => "512 px",
        }
    }
}

pub const WIDTH: u32 = 700;
pub const HEIGHT: u32 = 520;

/// Builds cases with job ids unique to one run.
pub struct Corpus {
    run: String,
    next_tile: u32,
    rgb: Frame,
    rgba: Frame,
}

impl Corpus {
    pub fn new(run: &str) -> Self {
        Corpus {
            run: run.to_owned(),
            next_tile: 0,
            rgb: image(WIDTH, HEIGHT, Channels::Rgb),
            rgba: image(WIDTH, HEIGHT, Channels::Rgba),
        }
    }

    fn job(&self, name: &str) -> String {
        format!("{}-{name}", self.run)
    }

    fn header(&mut self, job: &str, rect: Rect, chain: &[Operation], channels: Channels) -> TaskHeader {
        self.next_tile += 1;
        TaskHeader {
            job_id: self.job(job),
            tile: self.next_tile,
            rect,
            halo: ops::chain_halo(chain),
            ops: chain.to_vec(),
            channels,
            attempt: 1,
            encoding: Encoding::Raw,
            source: None,
            jpeg_tile_quality: None,
        }
    }

    /// A raw task of `chain` on a tile at `place`, and its reference result.
    fn raw(&mut self, chain: &[Operation], channels: Channels, place: Place) -> Case {
        let image = if channels == Channels::Rgb { &self.rgb } else { &self.rgba };
        let rect = place.rect(image);
        let input = image.crop_with_halo(rect, ops::chain_halo(chain));
        let header = self.header("ops", rect, chain, channels);
        let reference = ops::process_tile(chain, input.clone(), header.halo);
        let name = format!("{} on {} {}", describe(chain), channel_name(channels), place.name());
        let case = |header: TaskHeader, payload| Case {
            name,
            job_id: header.job_id,
            tile: header.tile,
            payload,
            expect: Expect::Result { reference, tolerance: tolerance::of_chain(chain), jpeg_quality: None },
        };
        let payload = Task { header: header.clone(), input }.encode();
        case(header, payload)
    }

    /// Every operation on RGB and RGBA, inside the image and at its corner,
    /// and the seed's chain on a 1-pixel tile and a large one.
    pub fn operations(&mut self) -> Vec<Case> {
        let mut cases = Vec::new();
        for op in operations() {
            let chain = [op];
            cases.push(self.raw(&chain, Channels::Rgb, Place::Inside));
            cases.push(self.raw(&chain, Channels::Rgba, Place::Corner));
        }
        let seed = seed_chain();
        cases.push(self.raw(&seed, Channels::Rgb, Place::OnePixel));
        cases.push(self.raw(&[Operation::Invert], Channels::Rgba, Place::OnePixel));
        cases.push(self.raw(&seed, Channels::Rgba, Place::Inside));
        cases.push(self.raw(&[Operation::GaussianBlur { kernel: 5, sigma: None }], Channels::Rgba, Place::Large));
        cases
    }

    /// Tasks carrying a lossless JPEG crop of a JPEG upload: the worker
    /// decodes the region and cuts the tile's input, mirrored at the
    /// image's borders, from it.
    pub fn jpeg_tasks(&mut self) -> Vec<Case> {
        let upload = jpeg_of(&self.rgb);
        let chains: [(&[Operation], Place); 3] = [
            (&[Operation::GaussianBlur { kernel: 9, sigma: None }], Place::Inside),
            (&[Operation::BoxBlur { kernel: 5 }], Place::OnePixel),
            (&[Operation::Grayscale], Place::Corner),
        ];
        chains
            .into_iter()
            .map(|(chain, place)| {
                let rect = place.rect(&self.rgb);
                let mut header = self.header("jpeg", rect, chain, Channels::Rgb);
                let (jpeg, scan) = Jpeg::parse(&upload).expect("the kit's JPEG parses");
                let layout = jpeg.layout();
                let halo = i64::from(header.halo);
                let (x, y) = (i64::from(rect.x), i64::from(rect.y));
                let region = (x - halo, y - halo, x + i64::from(rect.width) + halo, y + i64::from(rect.height) + halo);
                let mcus = layout.covering(region);
                let (sx, sy, width, height) = layout.bounds(mcus);
                let mut crop = Vec::new();
                jpeg.split(scan, &[mcus], |_, c| {
                    crop = c.bytes;
                    true
                })
                .expect("the kit's JPEG splits");
                header.encoding = Encoding::Jpeg;
                header.source = Some(Source { x: sx, y: sy, width, height, image_width: WIDTH, image_height: HEIGHT });
                let payload = Task::encode_jpeg(&header, &crop);
                let input = Task::decode(&payload).expect("the kit's JPEG task decodes").input;
                let reference = ops::process_tile(chain, input, header.halo);
                Case {
                    name: format!("{} on a JPEG task {}", describe(chain), place.name()),
                    job_id: header.job_id,
                    tile: header.tile,
                    payload,
                    expect: Expect::Result {
                        reference,
                        tolerance: tolerance::of_chain(chain).saturating_add(tolerance::JPEG_DECODE),
                        jpeg_quality: None,
                    },
                }
            })
            .collect()
    }

    /// A task of a job whose result is a JPEG: the worker may answer with a
    /// JPEG tile, which must be coded as the master splices.
    pub fn jpeg_result(&mut self) -> Case {
        let mut case = self.raw(&[Operation::Invert], Channels::Rgb, Place::Inside);
        let mut task = Task::decode(&case.payload).expect("the kit's task decodes");
        task.header.jpeg_tile_quality = Some(90);
        case.payload = task.encode();
        case.name = format!("{} (the job's result is a JPEG of quality 90)", case.name);
        if let Expect::Result { jpeg_quality, .. } = &mut case.expect {
            *jpeg_quality = Some(90);
        }
        case
    }

    /// The same task sent twice, as the master does when a result is late:
    /// both sendings are answered.
    pub fn redelivered(&mut self) -> [Case; 2] {
        let first = self.raw(&[Operation::BoxBlur { kernel: 3 }], Channels::Rgb, Place::Inside);
        let mut task = Task::decode(&first.payload).expect("the kit's task decodes");
        task.header.attempt = 2;
        let Expect::Result { reference, tolerance, .. } = &first.expect else { unreachable!("a result case") };
        let second = Case {
            name: format!("{} (sent again, attempt 2)", first.name),
            job_id: first.job_id.clone(),
            tile: first.tile,
            payload: task.encode(),
            expect: Expect::Result { reference: reference.clone(), tolerance: *tolerance, jpeg_quality: None },
        };
        [first, second]
    }

    /// The id of the job the kit stops on `control` before sending its tasks.
    pub fn stopped_job(&self) -> String {
        self.job("stopped")
    }

    /// Tasks of the stopped job: a conforming worker skips (and commits) them.
    pub fn of_stopped_job(&mut self) -> Vec<Case> {
        (0..3)
            .map(|_| {
                let mut case = self.raw(&[Operation::Invert], Channels::Rgb, Place::Inside);
                let mut task = Task::decode(&case.payload).expect("the kit's task decodes");
                task.header.job_id = self.stopped_job();
                case.job_id = task.header.job_id.clone();
                case.payload = task.encode();
                case.name = format!("a tile of a job stopped on control ({})", case.name);
                case.expect = Expect::Skipped;
                case
            })
            .collect()
    }

    /// Tasks that name their job and tile but cannot be processed: each
    /// gets a failure report, and the worker carries on.
    pub fn failing(&mut self) -> Vec<Case> {
        let valid = self.raw(&[Operation::Invert], Channels::Rgb, Place::Inside);
        let task = Task::decode(&valid.payload).expect("the kit's task decodes");
        // Pixels that fit a declared halo, so that only the operations are wrong.
        let with_halo = |halo: u32| self.rgb.crop_with_halo(task.header.rect, halo).pixels;
        let (halo2, halo3) = (with_halo(2), with_halo(3));
        let mut cases = Vec::new();
        let mut add = |name: &str, attempt: u32, header: serde_json::Value, pixels: &[u8]| {
            self.next_tile += 1;
            let mut header = header;
            header["job_id"] = self.job("failing").into();
            header["tile"] = self.next_tile.into();
            header["attempt"] = attempt.into();
            cases.push(Case {
                name: name.to_owned(),
                job_id: self.job("failing"),
                tile: self.next_tile,
                payload: message(&header, pixels),
                expect: Expect::Failure { attempt },
            });
        };
        let good = serde_json::to_value(&task.header).expect("a header serialises");
        let pixels = &task.input.pixels;
        let with = |patch: serde_json::Value| {
            let mut h = good.clone();
            h.as_object_mut().expect("an object").extend(patch.as_object().expect("an object").clone());
            h
        };
        add("pixels one row short", 3, good.clone(), &pixels[..pixels.len() - 64 * 3]);
        add("an unknown operation", 1, with(serde_json::json!({"ops": [{"op": "posterize", "levels": 4}]})), pixels);
        add(
            "an even blur kernel",
            1,
            with(serde_json::json!({"ops": [{"op": "box_blur", "kernel": 4}], "halo": 2})),
            &halo2,
        );
        add("a halo that does not match the operations", 2, with(serde_json::json!({"halo": 3})), &halo3);
        add(
            "a hostile rect of 1,000,000 x 1,000,000 pixels",
            1,
            with(serde_json::json!({"rect": {"x": 0, "y": 0, "width": 1_000_000, "height": 1_000_000}})),
            pixels,
        );
        add("a hostile halo of 4,000,000,000", 1, with(serde_json::json!({"halo": 4_000_000_000u32})), pixels);
        add("RGBA declared, RGB pixels sent", 1, with(serde_json::json!({"channels": 4})), pixels);
        add(
            "a JPEG task whose source is far outside the image",
            1,
            with(serde_json::json!({"encoding": "jpeg", "source":
                {"x": 4_000_000_000u32, "y": 0, "width": 2048, "height": 2048, "image_width": 700, "image_height": 520}})),
            &[0xFF, 0xD8, 0xFF, 0xD9],
        );
        cases
    }

    /// Messages on the tasks topic that do not even name a job: they go,
    /// unchanged, to the dead-letter topic.
    pub fn dead_letters(&mut self) -> Vec<Case> {
        let mut huge_length = TASK_MAGIC.to_vec();
        huge_length.extend_from_slice(&u32::MAX.to_le_bytes());
        huge_length.extend_from_slice(b"{}");
        let mut not_json = TASK_MAGIC.to_vec();
        not_json.extend_from_slice(&7u32.to_le_bytes());
        not_json.extend_from_slice(b"{nope!}");
        let payloads: [(&str, Vec<u8>); 4] = [
            ("bytes that are not a task", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
            ("an empty message", Vec::new()),
            ("a header length of 4 GiB in a 10-byte message", huge_length),
            ("a header that is not JSON", not_json),
        ];
        payloads
            .into_iter()
            .map(|(name, payload)| {
                self.next_tile += 1;
                Case {
                    name: name.to_owned(),
                    job_id: self.job("dead"),
                    tile: self.next_tile,
                    payload,
                    expect: Expect::DeadLetter,
                }
            })
            .collect()
    }
}

/// A task message from a header given as JSON (which may be one no honest
/// master would write).
fn message(header: &serde_json::Value, pixels: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(header).expect("JSON serialises");
    let mut out = TASK_MAGIC.to_vec();
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(pixels);
    out
}

/// Each operation with parameters that exercise its formula: OpenCV's
/// fixed small-kernel tables differ from the sigma rule at kernel 3, and
/// contrast 0.5 rounds halves.
pub fn operations() -> Vec<Operation> {
    vec![
        Operation::GaussianBlur { kernel: 51, sigma: None },
        Operation::GaussianBlur { kernel: 3, sigma: None },
        Operation::GaussianBlur { kernel: 9, sigma: Some(2.5) },
        Operation::BoxBlur { kernel: 5 },
        Operation::Sharpen { radius: 2, amount: 1.5 },
        Operation::EdgeDetect,
        Operation::Grayscale,
        Operation::Invert,
        Operation::BrightnessContrast { brightness: -20.5, contrast: 1.3 },
        Operation::BrightnessContrast { brightness: 0.0, contrast: 0.5 },
    ]
}

/// The seed system's chain.
pub fn seed_chain() -> Vec<Operation> {
    vec![Operation::Grayscale, Operation::GaussianBlur { kernel: 51, sigma: None }, Operation::Invert]
}

pub fn describe(chain: &[Operation]) -> String {
    chain.iter().map(|op| serde_json::to_string(op).expect("an operation serialises")).collect::<Vec<_>>().join(", ")
}

fn channel_name(channels: Channels) -> &'static str {
    match channels {
        Channels::Rgb => "RGB",
        Channels::Rgba => "RGBA",
    }
}

/// A baseline 4:2:0 JPEG of `frame`, as a camera would write it.
fn jpeg_of(frame: &Frame) -> Vec<u8> {
    pipeline::jpeg::encode_tile(frame, 85).expect("the kit's image encodes")
}
