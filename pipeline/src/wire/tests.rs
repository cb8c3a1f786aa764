//! Round trips and hostile bytes across the message kinds.

use super::*;
use crate::codec::Encoding;
use crate::ops::Operation;

fn task() -> Task {
    let header = TaskHeader {
        job_id: "j1".into(),
        tile: 4,
        rect: Rect::new(512, 0, 3, 2),
        halo: 1,
        ops: vec![Operation::default()],
        channels: Channels::Rgb,
        attempt: 2,
        encoding: Encoding::Raw,
        source: None,
        jpeg_tile_quality: None,
    };
    let input = Frame::new(5, 4, (0..60).collect());
    Task { header, input }
}

#[test]
fn rgba_tasks_round_trip_and_rgb_is_the_default() {
    let mut t = task();
    t.header.channels = Channels::Rgba;
    t.input = Frame::with_channels(5, 4, Channels::Rgba, (0..80).collect());
    let bytes = t.encode();
    assert!(String::from_utf8_lossy(&bytes).contains(r#""channels":4"#));
    assert_eq!(Task::decode(&bytes).unwrap(), t);
    // An RGBA payload under a header without "channels" is read as RGB: a size mismatch.
    let json = br#"{"job_id":"j1","tile":4,"rect":{"x":512,"y":0,"width":3,"height":2},"halo":1,"ops":[]}"#;
    let mut old = b"TPT1".to_vec();
    old.extend_from_slice(&(json.len() as u32).to_le_bytes());
    old.extend_from_slice(json);
    old.extend_from_slice(&t.input.pixels);
    assert!(matches!(Task::decode(&old), Err(WireError::Pixels { expected: 60, got: 80 })));
    old.truncate(old.len() - 20);
    assert_eq!(Task::decode(&old).unwrap().header.channels, Channels::Rgb);
}

#[test]
fn task_round_trips() {
    let t = task();
    let bytes = t.encode();
    assert_eq!(&bytes[..4], b"TPT1");
    assert_eq!(Task::decode(&bytes).unwrap(), t);
}

#[test]
fn a_task_may_ask_for_a_jpeg_result_of_a_valid_quality() {
    let mut t = task();
    assert!(!String::from_utf8_lossy(&t.encode()).contains("jpeg_tile_quality"), "absent when not asked");
    t.header.jpeg_tile_quality = Some(90);
    let bytes = t.encode();
    assert!(String::from_utf8_lossy(&bytes).contains(r#""jpeg_tile_quality":90"#));
    assert_eq!(Task::decode(&bytes).unwrap(), t);
    for bad in [0, 101] {
        t.header.jpeg_tile_quality = Some(bad);
        let error = Task::decode(&t.encode()).unwrap_err().to_string();
        assert!(error.contains("jpeg_tile_quality must be 1..=100"), "{error}");
    }
}

#[test]
fn the_old_jpeg_quality_field_asks_for_no_jpeg_tile() {
    // A master before 4:2:0 tiles sent `jpeg_quality`: today's worker then
    // answers PNG rather than a tile that master would refuse.
    let t = task();
    let header = serde_json::to_string(&t.header).unwrap().replacen('{', r#"{"jpeg_quality":90,"#, 1);
    let decoded = Task::decode(&message(b"TPT1", &header, &t.input.pixels)).unwrap();
    assert_eq!(decoded.header.jpeg_tile_quality, None);
    assert_eq!(decoded.input, t.input);
}

fn result(encoding: Encoding) -> TileResult {
    TileResult {
        header: ResultHeader {
            job_id: "j1".into(),
            tile: 4,
            rect: Rect::new(512, 0, 3, 2),
            worker_id: "w".into(),
            elapsed_ms: 1.5,
            channels: Channels::Rgb,
            encoding,
        },
        output: Frame::new(3, 2, vec![9; 18]),
    }
}

#[test]
fn result_round_trips() {
    let r = result(Encoding::Raw);
    let raw = r.encode();
    let header_len = u32::from_le_bytes(raw[4..8].try_into().unwrap()) as usize;
    assert_eq!(raw.len() - 8 - header_len, 18, "raw pixels follow the header");
    assert_eq!(TileResult::decode(&raw).unwrap(), r);
    let png = TileResult { header: ResultHeader { encoding: Encoding::Png, ..r.header.clone() }, ..r.clone() };
    let bytes = png.encode();
    assert!(String::from_utf8_lossy(&bytes).contains(r#""encoding":"png""#));
    assert_eq!(TileResult::decode(&bytes).unwrap(), png);
    // PNG pixels under a header that says raw are the wrong size.
    let mislabelled = String::from_utf8_lossy(&bytes).replace(r#""encoding":"png""#, r#""encoding":"raw""#);
    assert!(TileResult::decode(mislabelled.as_bytes()).is_err());
}

#[test]
fn replies_are_results_or_failures() {
    let failure = TileFailure {
        job_id: "j1".into(),
        tile: 7,
        worker_id: "w".into(),
        error: "boom".into(),
        attempt: 2,
        unsupported: None,
    };
    let bytes = failure.encode();
    assert_eq!(&bytes[..4], b"TPF1");
    assert_eq!(Reply::decode(&bytes).unwrap(), Reply::Failed(failure));
    assert!(matches!(Reply::decode(b"TPX1\0\0\0\0"), Err(WireError::Magic(_))));
}

#[test]
fn control_messages_are_tagged_json() {
    let stop = Control::JobStopped { job_id: "j1".into() };
    assert_eq!(stop.encode(), br#"{"type":"job_stopped","job_id":"j1"}"#);
    assert_eq!(Control::decode(&stop.encode()).unwrap(), stop);
    let long = Control::JobStopped { job_id: "j".repeat(MAX_ID_BYTES + 1) };
    assert!(matches!(Control::decode(&long.encode()), Err(WireError::Invalid(_))));
}

#[test]
fn a_task_with_bad_pixels_still_names_its_tile() {
    let bytes = task().encode();
    let ids = TaskIds { job_id: "j1".into(), tile: 4, attempt: 2 };
    assert_eq!(TaskHeader::peek(&bytes[..bytes.len() - 3]), Some(ids));
    assert_eq!(TaskHeader::peek(b"garbage"), None);
}

#[test]
fn malformed_messages_are_errors_not_panics() {
    let bytes = task().encode();
    assert!(matches!(Task::decode(&bytes[..5]), Err(WireError::Truncated(5))));
    assert!(matches!(Task::decode(&bytes[..bytes.len() - 1]), Err(WireError::Pixels { .. })));
    assert!(matches!(TileResult::decode(&bytes), Err(WireError::Magic(_))));
    let mut bad_len = bytes.clone();
    bad_len[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(Task::decode(&bad_len), Err(WireError::Truncated(_))));
    let mut bad_json = bytes;
    bad_json[8] = b'x';
    assert!(matches!(Task::decode(&bad_json), Err(WireError::Header(_))));
}

/// A message with `header` (JSON) and `pixels` after `magic`.
fn message(magic: &[u8; 4], header: &str, pixels: &[u8]) -> Vec<u8> {
    let mut out = magic.to_vec();
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(pixels);
    out
}

#[test]
fn a_rect_that_wraps_around_u32_is_refused_before_any_allocation() {
    // width + 2 * halo wraps to 2 and height + 2 * halo to 3: 18 bytes of
    // pixels would match the wrapped size.
    let w = u32::MAX - 48 + 3;
    let header = format!(
        r#"{{"job_id":"j","tile":0,"rect":{{"x":0,"y":0,"width":{w},"height":{}}},"halo":24,"ops":[]}}"#,
        u32::MAX - 48 + 4
    );
    let bytes = message(TASK_MAGIC, &header, &[0; 18]);
    assert!(matches!(Task::decode(&bytes), Err(WireError::Invalid(_))), "{:?}", Task::decode(&bytes));
    // Still reported by its ids.
    assert_eq!(TaskHeader::peek(&bytes).map(|ids| ids.tile), Some(0));
    for (rect, halo) in [
        ("\"x\":0,\"y\":0,\"width\":0,\"height\":4", 0),
        ("\"x\":0,\"y\":0,\"width\":2049,\"height\":4", 0),
        ("\"x\":4294967295,\"y\":0,\"width\":2,\"height\":4", 0),
        ("\"x\":0,\"y\":0,\"width\":4,\"height\":4", 513),
    ] {
        let header = format!(r#"{{"job_id":"j","tile":0,"rect":{{{rect}}},"halo":{halo},"ops":[]}}"#);
        assert!(matches!(Task::decode(&message(TASK_MAGIC, &header, &[])), Err(WireError::Invalid(_))), "{rect}");
    }
}

#[test]
fn a_result_claiming_a_huge_tile_is_refused_from_its_header() {
    let header = r#"{"job_id":"j","tile":0,"rect":{"x":0,"y":0,"width":100000,"height":100000},"worker_id":"w","elapsed_ms":1,"encoding":"png"}"#;
    let bytes = message(RESULT_MAGIC, header, &[0; 1000]);
    assert!(matches!(RawReply::parse(&bytes), Err(WireError::Invalid(_))));
    assert!(matches!(Reply::decode(&bytes), Err(WireError::Invalid(_))));
    let nan = header.replace("100000", "4").replace(r#""elapsed_ms":1"#, r#""elapsed_ms":-1"#);
    assert!(matches!(RawReply::parse(&message(RESULT_MAGIC, &nan, &[])), Err(WireError::Invalid(_))));
}

#[test]
fn ids_are_bounded_and_failure_reasons_cut() {
    let long = "x".repeat(MAX_ID_BYTES + 1);
    let failure = TileFailure {
        job_id: long.clone(),
        tile: 0,
        worker_id: "w".into(),
        error: "e".into(),
        attempt: 0,
        unsupported: None,
    };
    assert!(matches!(RawReply::parse(&failure.encode()), Err(WireError::Invalid(_))));
    let chatty = TileFailure { job_id: "j".into(), error: "é".repeat(MAX_ERROR_BYTES), ..failure };
    let Ok(RawReply::Failed(parsed)) = RawReply::parse(&chatty.encode()) else { panic!("a failure") };
    assert_eq!(parsed.error.len(), MAX_ERROR_BYTES);
    let mut t = task();
    t.header.job_id = long;
    assert!(matches!(Task::decode(&t.encode()), Err(WireError::Invalid(_))));
    assert_eq!(TaskHeader::peek(&t.encode()), None);
    assert_eq!(truncate("aé", 2), "a");
}

#[test]
fn heartbeats_have_bounded_names() {
    let beat = Heartbeat {
        worker_id: "w".into(),
        host: "h".into(),
        pid: 1,
        current_tile: Some("j/1".into()),
        tiles_done: 0,
        sent_at_ms: 0,
        cpu_percent: Some(87.5),
        rss_bytes: Some(48 << 20),
        runtime: Some("tilepipe-worker 0.1.0 (Rust)".into()),
    };
    assert_eq!(Heartbeat::decode(&beat.encode()).unwrap(), beat);
    // The resources are optional: an older worker's heartbeat still reads.
    let old = br#"{"worker_id":"w","host":"h","pid":1,"current_tile":null,"tiles_done":3,"sent_at_ms":5}"#;
    let read = Heartbeat::decode(old).unwrap();
    assert_eq!((read.cpu_percent, read.rss_bytes, read.runtime), (None, None, None));
    for bad in [
        Heartbeat { worker_id: String::new(), ..beat.clone() },
        Heartbeat { host: "h".repeat(MAX_HOST_BYTES + 1), ..beat.clone() },
        Heartbeat { current_tile: Some("t".repeat(1000)), ..beat.clone() },
        Heartbeat { cpu_percent: Some(MAX_CPU_PERCENT * 2.0), ..beat.clone() },
        Heartbeat { cpu_percent: Some(-1.0), ..beat.clone() },
        Heartbeat { runtime: Some("r".repeat(MAX_RUNTIME_BYTES + 1)), ..beat.clone() },
    ] {
        assert!(matches!(Heartbeat::decode(&bad.encode()), Err(WireError::Invalid(_))), "{bad:?}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// Any numbers in a header and any pixels: an error or a consistent
    /// task, never a panic or a frame larger than the limits allow.
    #[test]
    fn hostile_task_headers_never_panic(
        x in proptest::prelude::any::<u32>(), y in proptest::prelude::any::<u32>(),
        width in proptest::prelude::any::<u32>(), height in proptest::prelude::any::<u32>(),
        halo in proptest::prelude::any::<u32>(), channels in 0u8..6,
        small in 0u32..8, pixels in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
    ) {
        // Small sizes often, so some decode.
        let (width, height) = if small > 3 { (width % 5, height % 5) } else { (width, height) };
        let halo = if small > 5 { halo % 3 } else { halo };
        let header = format!(
            r#"{{"job_id":"j","tile":1,"rect":{{"x":{x},"y":{y},"width":{width},"height":{height}}},"halo":{halo},"ops":[],"channels":{channels}}}"#
        );
        if let Ok(task) = Task::decode(&message(TASK_MAGIC, &header, &pixels)) {
            proptest::prop_assert_eq!(task.input.pixels.len(), pixels.len());
            proptest::prop_assert_eq!(task.input.width, width + 2 * halo);
        }
        let result = header.replace(r#""halo""#, r#""worker_id":"w","elapsed_ms":0,"h""#);
        for encoding in ["raw", "png"] {
            let result = result.replace(r#""ops":[]"#, &format!(r#""encoding":"{encoding}""#));
            if let Ok(Reply::Done(r)) = Reply::decode(&message(RESULT_MAGIC, &result, &pixels)) {
                proptest::prop_assert_eq!(r.output.width, width);
            }
        }
    }

    /// Any byte of a valid task or result flipped: an error or a message
    /// that is still consistent.
    #[test]
    fn corrupted_messages_never_panic(at in 0usize..400, value in proptest::prelude::any::<u8>()) {
        for mut bytes in [task().encode(), result(Encoding::Png).encode()] {
            let at = at % bytes.len();
            bytes[at] = value;
            if let Ok(t) = Task::decode(&bytes) {
                proptest::prop_assert_eq!(t.input.pixels.len(), Frame::len_of(t.input.width, t.input.height, t.input.channels));
            }
            if let Ok(Reply::Done(r)) = Reply::decode(&bytes) {
                proptest::prop_assert_eq!(r.output.width, r.header.rect.width);
            }
            let _ = TaskHeader::peek(&bytes);
        }
    }
}

/// A JPEG of `frame`'s pixels, as an upload would be.
fn jpeg_of(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    let (w, h) = (frame.width as u16, frame.height as u16);
    jpeg_encoder::Encoder::new(&mut out, 90).encode(&frame.pixels, w, h, jpeg_encoder::ColorType::Rgb).unwrap();
    out
}

#[test]
fn a_jpeg_task_carries_its_tiles_input_exactly() {
    let pixels = (0..200u32 * 120 * 3).map(|i| (i * 7 % 251) as u8).collect();
    let upload = jpeg_of(&Frame::new(200, 120, pixels));
    let whole = image::load_from_memory(&upload).unwrap().into_rgb8();
    let whole = Frame::new(200, 120, whole.into_raw());
    let (jpeg, scan) = crate::jpeg::Jpeg::parse(&upload).unwrap();
    let layout = jpeg.layout();
    let (rect, halo) = (Rect { x: 0, y: 64, width: 64, height: 56 }, 25);
    let region = (-25, 39, 89, 145);
    let mcus = layout.covering(region);
    let (x, y, width, height) = layout.bounds(mcus);
    let mut crop = None;
    jpeg.split(scan, &[mcus], |_, c| {
        crop = Some(c.bytes);
        true
    })
    .unwrap();
    let source = Source { x, y, width, height, image_width: 200, image_height: 120 };
    let header = TaskHeader { encoding: Encoding::Jpeg, source: Some(source), rect, halo, ..task().header };
    let bytes = Task::encode_jpeg(&header, &crop.unwrap());
    assert!(bytes.len() < Frame::len_of(114, 106, Channels::Rgb) / 2, "{} bytes", bytes.len());
    let decoded = Task::decode(&bytes).unwrap();
    assert!(decoded.input == whole.crop_with_halo(rect, halo), "the tile's input differs from the whole image's");

    // A region that misses part of the halo, or lies outside the image, is refused.
    let short = TaskHeader { source: Some(Source { height: height - 16, ..source }), ..header.clone() };
    assert!(Task::decode(&Task::encode_jpeg(&short, &[0xFF, 0xD8])).is_err());
    let outside = TaskHeader { source: Some(Source { image_height: 60, ..source }), ..header.clone() };
    let refused = Task::decode(&Task::encode_jpeg(&outside, &[0xFF, 0xD8])).unwrap_err();
    assert!(refused.to_string().contains("outside the image"), "{refused}");
    let huge = TaskHeader { source: Some(Source { width: 1 << 20, ..source }), ..header };
    assert!(Task::decode(&Task::encode_jpeg(&huge, &[0xFF, 0xD8])).is_err());
}
