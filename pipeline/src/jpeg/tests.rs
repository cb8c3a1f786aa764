use jpeg_encoder::{ColorType, Encoder, SamplingFactor};

use super::*;

/// Smooth colour with grain: every coefficient position gets used.
fn photo(width: u32, height: u32) -> Vec<u8> {
    let mut noise = crate::noise::Xorshift64::new(0x9E37_79B9_7F4A_7C15);
    let mut pixels = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            let grain = (noise.next_u64() >> 58) as i32 - 32;
            let base = [x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)];
            pixels.extend(base.map(|b| (b as i32 + grain).clamp(0, 255) as u8));
        }
    }
    pixels
}

fn encode(width: u32, height: u32, sampling: SamplingFactor, restart: u16, colour: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = Encoder::new(&mut out, 90);
    encoder.set_sampling_factor(sampling);
    encoder.set_restart_interval(restart);
    let pixels = photo(width, height);
    if colour {
        encoder.encode(&pixels, width as u16, height as u16, ColorType::Rgb).unwrap();
    } else {
        let grey: Vec<u8> = pixels.chunks_exact(3).map(|p| p[1]).collect();
        encoder.encode(&grey, width as u16, height as u16, ColorType::Luma).unwrap();
    }
    out
}

/// The whole image as the master decodes it.
fn whole(bytes: &[u8]) -> image::RgbImage {
    image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg).unwrap().into_rgb8()
}

/// Regions across the image: corners, edges, the middle, odd offsets.
fn regions(width: u32, height: u32) -> Vec<(i64, i64, i64, i64)> {
    let (w, h) = (i64::from(width), i64::from(height));
    let mut out =
        vec![(-25, -25, 70, 70), (w - 70, h - 50, w + 25, h + 25), (0, 0, w, h), (w / 3, h / 3, w / 2, h / 2)];
    for (i, step) in [37i64, 53, 91].into_iter().enumerate() {
        let (x, y) = (step * 2 + i as i64 * 5, step + 3);
        out.push((x, y, x + step, y + step * 2));
    }
    out
}

/// Crops of every region equal the whole image's pixels there.
fn check(bytes: &[u8]) {
    let (jpeg, scan) = Jpeg::parse(bytes).unwrap();
    let expected = whole(bytes);
    let (width, height) = (jpeg.width, jpeg.height);
    let wanted_regions = regions(width, height);
    let mut wanted: Vec<(McuRect, (i64, i64, i64, i64))> =
        wanted_regions.iter().map(|&r| (jpeg.covering(r), r)).collect();
    wanted.sort_by_key(|(m, _)| m.y1);
    let rects: Vec<McuRect> = wanted.iter().map(|(m, _)| *m).collect();
    let mut seen = 0;
    jpeg.split(scan, &rects, |i, crop| {
        seen += 1;
        let frame = decode(&crop.bytes, crop.width, crop.height).unwrap();
        let (x0, y0, x1, y1) = wanted[i].1;
        let (x0, y0) = (x0.max(0) as u32, y0.max(0) as u32);
        let (x1, y1) = (x1.min(i64::from(width)) as u32, y1.min(i64::from(height)) as u32);
        assert!(crop.x <= x0 && crop.y <= y0 && crop.x + crop.width >= x1 && crop.y + crop.height >= y1);
        for y in y0..y1 {
            for x in x0..x1 {
                let i = ((y - crop.y) * crop.width + (x - crop.x)) as usize * 3;
                let got = &frame.pixels[i..i + 3];
                assert_eq!(got, &expected.get_pixel(x, y).0, "pixel ({x}, {y}) of crop {:?}", (crop.x, crop.y));
            }
        }
        true
    })
    .unwrap();
    assert_eq!(seen, rects.len());
}

#[test]
fn crops_decode_to_the_whole_images_pixels_for_every_sampling() {
    use SamplingFactor::*;
    for sampling in [R_4_4_4, R_4_2_2, R_4_2_0, R_4_4_0] {
        for restart in [0, 3] {
            check(&encode(331, 203, sampling, restart, true));
        }
    }
    // jpeg-encoder writes these in one scan per component: they travel raw.
    for sampling in [R_4_1_1, R_4_2_1] {
        let refused = Jpeg::parse(&encode(331, 203, sampling, 0, true)).err();
        assert_eq!(refused, Some(JpegError::Unsupported("the components are in separate scans")));
    }
}

#[test]
fn grey_crops_decode_to_the_whole_images_pixels() {
    check(&encode(250, 190, SamplingFactor::R_4_4_4, 0, false));
    check(&encode(250, 190, SamplingFactor::R_4_4_4, 5, false));
}

#[test]
fn crops_of_the_image_crates_own_jpegs_match() {
    // The benchmark and the tests encode with image's encoder.
    let (w, h) = (300, 170);
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
        .encode(&photo(w, h), w, h, image::ExtendedColorType::Rgb8)
        .unwrap();
    check(&bytes);
}

#[test]
fn a_crop_is_a_fraction_of_the_raw_pixels() {
    let bytes = encode(1024, 1024, SamplingFactor::R_4_2_0, 0, true);
    let (jpeg, scan) = Jpeg::parse(&bytes).unwrap();
    let rect = jpeg.covering((256, 256, 768, 768));
    let mut size = 0;
    jpeg.split(scan, &[rect], |_, crop| {
        size = crop.bytes.len();
        assert_eq!((crop.x, crop.y, crop.width, crop.height), (240, 240, 544, 544));
        true
    })
    .unwrap();
    assert!(size * 3 < 544 * 544 * 3, "{size} bytes");
}

#[test]
fn only_rows_still_needed_are_kept() {
    // Many small crops down a tall image: each is emitted as soon as its
    // rows are decoded, in order, and emitting can stop the split.
    let bytes = encode(64, 2048, SamplingFactor::R_4_2_0, 0, true);
    let (jpeg, scan) = Jpeg::parse(&bytes).unwrap();
    let rects: Vec<McuRect> = (0..16).map(|i| jpeg.covering((0, i * 128, 64, i * 128 + 128))).collect();
    let mut order = Vec::new();
    jpeg.split(scan, &rects, |i, _| {
        order.push(i);
        i < 9
    })
    .unwrap();
    assert_eq!(order, (0..10).collect::<Vec<_>>());
}

/// Hands out a byte at a time: every 0xFF, marker and restart straddles a read.
struct Trickle<'a>(&'a [u8]);

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some((&first, rest)) = self.0.split_first() else { return Ok(0) };
        if buf.is_empty() {
            return Ok(0);
        }
        buf[0] = first;
        self.0 = rest;
        Ok(1)
    }
}

#[test]
fn a_scan_read_a_byte_at_a_time_gives_the_same_crops() {
    let bytes = encode(200, 150, SamplingFactor::R_4_2_0, 2, true);
    let (jpeg, scan) = Jpeg::parse(&bytes).unwrap();
    let rects = [jpeg.covering((10, 10, 90, 60)), jpeg.covering((100, 70, 200, 150))];
    let collect = |source: &mut dyn std::io::Read| {
        let mut crops = Vec::new();
        jpeg.split(source, &rects, |_, crop| {
            crops.push(crop);
            true
        })
        .unwrap();
        crops
    };
    assert_eq!(collect(&mut Trickle(scan)), collect(&mut &scan[..]));
    let mut trickled = Trickle(&bytes);
    let header = Jpeg::read(&mut trickled).unwrap();
    assert_eq!(header.layout(), jpeg.layout());
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut trickled, &mut rest).unwrap();
    assert_eq!(TileIndex::read(&header, &rest), TileIndex::read(&jpeg, scan));
}

#[test]
fn progressive_and_truncated_files_are_refused() {
    let mut out = Vec::new();
    let mut encoder = Encoder::new(&mut out, 90);
    encoder.set_progressive(true);
    encoder.encode(&photo(64, 64), 64, 64, ColorType::Rgb).unwrap();
    assert!(matches!(Jpeg::parse(&out), Err(JpegError::Unsupported(_))));

    let bytes = encode(128, 128, SamplingFactor::R_4_2_0, 0, true);
    let truncated = &bytes[..bytes.len() * 2 / 3];
    let (jpeg, scan) = Jpeg::parse(truncated).unwrap();
    let all = jpeg.covering((0, 0, 128, 128));
    assert_eq!(jpeg.split(scan, &[all], |_, _| true), Err(JpegError::Malformed("the scan ends early")));
    assert_eq!(TileIndex::read(&jpeg, scan), Err(JpegError::Malformed("the scan ends early")));
    let (jpeg, scan) = Jpeg::parse(&bytes).unwrap();
    assert!(TileIndex::read(&jpeg, scan).is_ok());
    assert!(Jpeg::parse(b"\xFF\xD8\xFF").is_err());
    assert!(Jpeg::parse(b"GIF89a").is_err());
}

#[test]
fn flipped_bytes_never_panic() {
    let bytes = encode(96, 80, SamplingFactor::R_4_2_0, 2, true);
    let mut state = 0x1234_5678_u32;
    for _ in 0..400 {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let mut broken = bytes.clone();
        let at = state as usize % broken.len();
        broken[at] ^= 1 << (state >> 28 & 7);
        if let Ok((jpeg, scan)) = Jpeg::parse(&broken) {
            let all = jpeg.covering((0, 0, i64::from(jpeg.width), i64::from(jpeg.height)));
            let _ = jpeg.split(scan, &[all], |_, crop| {
                let _ = decode(&crop.bytes, crop.width, crop.height);
                true
            });
        }
    }
}

#[test]
fn headers_repeated_in_every_crop_are_bounded() {
    // Five hundred 64 KiB JFIF segments before the frame: 32 MB per crop.
    let bytes = encode(64, 48, SamplingFactor::R_4_2_0, 0, true);
    let mut padded = bytes[..2].to_vec();
    for _ in 0..500 {
        padded.extend_from_slice(&[0xFF, 0xE0, 0xFF, 0xFF]);
        padded.extend(std::iter::repeat_n(0, 0xFFFF - 2));
    }
    padded.extend_from_slice(&bytes[2..]);
    assert!(matches!(Jpeg::parse(&padded), Err(JpegError::Unsupported(_))));
}

#[test]
fn a_dc_beyond_eight_bit_range_is_refused() {
    // A scan whose every block adds the largest DC difference: the sum
    // leaves the range in a few blocks.
    let bytes = encode(64, 64, SamplingFactor::R_4_4_4, 0, false);
    let (jpeg, _) = Jpeg::parse(&bytes).unwrap();
    let encoders = HuffmanEncoder::standard();
    let mut w = BitWriter::new(Vec::new());
    for _ in 0..64 {
        encoders[0].put_with(&mut w, 11, 0x7FF);
        encoders[1].put_with(&mut w, 0x00, 0);
    }
    let scan = w.finish();
    assert_eq!(TileIndex::read(&jpeg, &scan), Err(JpegError::Malformed("a DC coefficient out of range")));
}

#[test]
fn a_crop_of_another_size_than_declared_is_refused() {
    let bytes = encode(64, 48, SamplingFactor::R_4_2_0, 0, true);
    assert!(decode(&bytes, 64, 48).is_ok());
    assert_eq!(decode(&bytes, 64, 49).unwrap_err(), JpegError::Malformed("the crop's size is not the task's"));
    assert!(decode(&bytes, 64, 47).is_err(), "larger than declared: refused before decoding");
    assert!(decode(b"not a jpeg", 64, 48).is_err());
}

#[test]
fn copied_bits_give_the_same_crops_as_coding_the_coefficients_again() {
    use SamplingFactor::*;
    let mut image_crates = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut image_crates, 90)
        .encode(&photo(300, 170), 300, 170, image::ExtendedColorType::Rgb8)
        .unwrap();
    let uploads = [
        encode(331, 203, R_4_2_0, 0, true),
        encode(331, 203, R_4_4_4, 0, true),
        encode(250, 190, R_4_4_4, 0, false),
        image_crates,
    ];
    for bytes in uploads {
        let (jpeg, scan) = Jpeg::parse(&bytes).unwrap();
        assert!(jpeg.bits_copy(), "standard tables, no restarts");
        let mut rects: Vec<McuRect> = regions(jpeg.width, jpeg.height).into_iter().map(|r| jpeg.covering(r)).collect();
        rects.sort_by_key(|r| r.y1);
        let crops = |copy| {
            let mut crops = Vec::new();
            jpeg.split_as(scan, &rects, copy, |_, crop| {
                crops.push(crop);
                true
            })
            .unwrap();
            crops
        };
        assert_eq!(crops(true), crops(false));
    }
}

#[test]
fn other_tables_and_restarts_are_coded_again() {
    let (mut jpeg, _) = Jpeg::parse(&encode(331, 203, SamplingFactor::R_4_2_0, 0, true)).unwrap();
    assert!(jpeg.bits_copy());
    // Coded with other tables (as libjpeg's -optimize writes): its crops
    // cannot carry the standard tables over copied bits.
    let [luma, chroma, ..] = &mut jpeg.ac;
    std::mem::swap(luma, chroma);
    assert!(!jpeg.bits_copy());
    let restarts = encode(331, 203, SamplingFactor::R_4_2_0, 4, true);
    assert!(!Jpeg::parse(&restarts).unwrap().0.bits_copy());
}

#[test]
fn a_tiles_crop_holds_its_halo_within_the_image() {
    let layout = Layout { width: 100, height: 60, mcu_width: 16, mcu_height: 16 };
    let grid = crate::TileGrid::new(100, 60, 32);
    for (_, rect) in grid.tiles() {
        let (x, y, width, height) = layout.bounds(layout.covering_tile(rect, 5));
        let (left, top) = (rect.x.saturating_sub(5), rect.y.saturating_sub(5));
        let (right, bottom) = ((rect.x + rect.width + 5).min(100), (rect.y + rect.height + 5).min(60));
        assert!(x <= left && y <= top && x + width >= right && y + height >= bottom, "{rect:?}");
    }
}
