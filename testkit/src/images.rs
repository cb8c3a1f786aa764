//! Test images: structured ones, and PNGs crafted to be hostile.

/// A deterministic test image with structure at every scale (gradients plus
/// noise), so any misplaced or missing tile changes the blurred output.
pub fn test_image(width: u32, height: u32) -> pipeline::Frame {
    let mut noise = pipeline::noise::Xorshift64::new(0x9E37_79B9_7F4A_7C15);
    let mut pixels = Vec::with_capacity(pipeline::Frame::byte_len(width, height));
    for y in 0..height {
        for x in 0..width {
            let grain = (noise.next_u64() >> 56) as u32;
            pixels.push(((x * 255 / width + grain) / 2) as u8);
            pixels.push(((y * 255 / height + grain) / 2) as u8);
            pixels.push((((x ^ y) & 0xff) + grain) as u8 / 2);
        }
    }
    pipeline::Frame::new(width, height, pixels)
}

/// A PNG that declares `width` x `height` and holds no pixels: a decompression
/// bomb's calling card, under a hundred bytes long.
pub fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    png_header_with(width, height, &[])
}

/// A PNG header as [`png_header_only`] with `chunks` (kind, data) between
/// the IHDR and the IDAT.
pub fn png_header_with(width: u32, height: u32, chunks: &[(&[u8; 4], &[u8])]) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    chunk(&mut out, b"IHDR", &ihdr);
    for (kind, data) in chunks {
        chunk(&mut out, kind, data);
    }
    // An IDAT holding an empty zlib stream: decoders read up to here for the header.
    chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// An iCCP chunk's data: a profile of `size` zero bytes, deflated (a few
/// hundred KB for hundreds of MB).
pub fn icc_profile(size: usize) -> Vec<u8> {
    // Streamed, so that making a bomb does not cost what it would.
    let mut deflate = fdeflate::Compressor::new(b"bomb\0\0".to_vec()).unwrap();
    let zeros = vec![0; 1 << 20];
    for start in (0..size).step_by(zeros.len()) {
        deflate.write_data(&zeros[..zeros.len().min(size - start)]).unwrap();
    }
    deflate.finish().unwrap()
}

pub fn png(frame: &pipeline::Frame) -> Vec<u8> {
    pipeline::codec::encode_png(frame)
}
