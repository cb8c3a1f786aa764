//! Huffman tables: decoding the original's, encoding with the standard ones
//! (T.81 Annex K.3).

use std::sync::{Arc, OnceLock};

use super::JpegError;
use super::bits::{BitReader, BitWriter};

/// Codes up to this long are found with one table lookup.
const FAST_BITS: u32 = 11;

pub struct Decoder {
    /// By the next `FAST_BITS` bits: the code's length (0: longer) and value.
    fast: Vec<(u8, u8)>,
    /// By the same bits, for an AC table read past (see [`Decoder::skip`]).
    skip: Vec<(u8, u8)>,
    /// Per code length 1..=16: the largest code (-1: none) and where its
    /// values start in `values`, less the smallest code.
    max_code: [i32; 17],
    offset: [i32; 17],
    counts: [u8; 16],
    values: Vec<u8>,
}

impl Decoder {
    pub fn new(counts: &[u8; 16], values: &[u8]) -> Result<Self, JpegError> {
        let mut fast = vec![(0u8, 0u8); 1 << FAST_BITS];
        let (mut max_code, mut offset) = ([-1i32; 17], [0i32; 17]);
        let (mut code, mut k) = (0u32, 0usize);
        for length in 1..=16u32 {
            let n = usize::from(counts[length as usize - 1]);
            if n > 0 {
                offset[length as usize] = k as i32 - code as i32;
                for _ in 0..n {
                    if code >= 1 << length {
                        return Err(JpegError::Malformed("a Huffman table with too many codes"));
                    }
                    if length <= FAST_BITS {
                        let shift = FAST_BITS - length;
                        for low in 0..1u32 << shift {
                            fast[((code << shift) | low) as usize] = (length as u8, values[k]);
                        }
                    }
                    code += 1;
                    k += 1;
                }
                max_code[length as usize] = code as i32 - 1;
            }
            code <<= 1;
        }
        let skip = fast.iter().map(|&(length, rs)| skip_entry(length, rs)).collect();
        Ok(Self { fast, skip, max_code, offset, counts: *counts, values: values.to_vec() })
    }

    /// For an AC coefficient read past without its value, from `peek` (the
    /// next bits, left-aligned): how many bits its code and extra bits take
    /// together and how far it moves the position in the block ([`END`]:
    /// the end of the block); `None` for a code longer than `FAST_BITS` or
    /// a coefficient too large (the slow path decides). One lookup and one
    /// shift a coefficient.
    #[inline]
    pub fn skip(&self, peek: u32) -> Option<(u32, u32)> {
        let (bits, advance) = self.skip[(peek >> (32 - FAST_BITS)) as usize];
        (bits > 0).then_some((u32::from(bits), u32::from(advance)))
    }

    /// The decoder of a DHT table: one of the standard tables' (every tile a
    /// worker codes, and most encoders' files) is made once and shared, so
    /// checking a small result tile does not build its lookup tables anew.
    pub fn shared(counts: &[u8; 16], values: &[u8]) -> Result<Arc<Self>, JpegError> {
        static STANDARD: OnceLock<Vec<Arc<Decoder>>> = OnceLock::new();
        let standard = STANDARD.get_or_init(|| {
            Encoder::standard()
                .iter()
                .map(|e| Arc::new(Decoder::new(&e.counts, e.values).expect("the standard tables are valid")))
                .collect()
        });
        match standard.iter().find(|d| d.counts == *counts && d.values == values) {
            Some(made) => Ok(Arc::clone(made)),
            None => Self::new(counts, values).map(Arc::new),
        }
    }

    /// Whether this table assigns the same codes as `encoder`'s.
    pub fn codes_as(&self, encoder: &Encoder) -> bool {
        self.counts == encoder.counts && self.values == encoder.values
    }

    /// The symbol at the top of `peek` (the next bits, left-aligned) and its
    /// code's length, if the code is at most `FAST_BITS` long.
    #[inline]
    pub fn fast(&self, peek: u32) -> Option<(u32, u8)> {
        let (length, value) = self.fast[(peek >> (32 - FAST_BITS)) as usize];
        (length > 0).then_some((u32::from(length), value))
    }

    #[inline]
    pub fn decode(&self, bits: &mut BitReader<impl std::io::Read>) -> Result<u8, JpegError> {
        let peek = bits.peek16();
        let (length, value) = self.fast[(peek >> (16 - FAST_BITS)) as usize];
        if length > 0 {
            bits.consume(u32::from(length));
            return Ok(value);
        }
        for length in FAST_BITS + 1..=16 {
            let code = (peek >> (16 - length)) as i32;
            if code <= self.max_code[length as usize] {
                bits.consume(length);
                let index = code + self.offset[length as usize];
                return self.values.get(index as usize).copied().ok_or(JpegError::Malformed("bad Huffman code"));
            }
        }
        Err(JpegError::Malformed("bad Huffman code"))
    }
}

/// [`Decoder::skip`]'s advance at the end of a block.
pub const END: u32 = 0;

/// [`Decoder::skip`]'s entry for a code of `length` bits (0: longer) with
/// value `rs` (a zero run and a size): `(0, 0)` when the slow path decides.
fn skip_entry(length: u8, rs: u8) -> (u8, u8) {
    let (run, size) = (rs >> 4, rs & 15);
    match (length, size) {
        (0, _) | (_, 11..) => (0, 0),
        (_, 0) if run == 15 => (length, 16), // sixteen zeros
        (_, 0) => (length, END as u8),
        _ => (length + size, run + 1),
    }
}

pub struct Encoder {
    class: u8,
    id: u8,
    counts: [u8; 16],
    values: &'static [u8],
    /// By value: its code and length.
    codes: [(u16, u8); 256],
}

impl Encoder {
    fn new(class: u8, id: u8, counts: [u8; 16], values: &'static [u8]) -> Self {
        let mut codes = [(0u16, 0u8); 256];
        let (mut code, mut k) = (0u16, 0);
        for length in 1..=16u8 {
            for _ in 0..counts[usize::from(length) - 1] {
                codes[usize::from(values[k])] = (code, length);
                code += 1;
                k += 1;
            }
            code <<= 1;
        }
        Self { class, id, counts, values, codes }
    }

    /// DC luminance, AC luminance, DC chrominance, AC chrominance.
    pub fn standard() -> [Self; 4] {
        [
            Self::new(0, 0, DC_LUMA_COUNTS, &DC_VALUES),
            Self::new(1, 0, AC_LUMA_COUNTS, &AC_LUMA_VALUES),
            Self::new(0, 1, DC_CHROMA_COUNTS, &DC_VALUES),
            Self::new(1, 1, AC_CHROMA_COUNTS, &AC_CHROMA_VALUES),
        ]
    }

    /// Writes `value`'s code followed by the `value & 15` low bits of `extra`
    /// (a coefficient's magnitude bits), in one go: at most 16 + 11 bits.
    pub fn put_with(&self, w: &mut BitWriter, value: u8, extra: u32) {
        let (code, length) = self.codes[usize::from(value)];
        debug_assert!(length > 0, "value {value:#x} has no standard code");
        let size = value & 15;
        let extra = extra & ((1u32 << size) - 1);
        w.put(u32::from(code) << size | extra, length + size);
    }
}

/// One DHT segment holding `tables`.
pub fn write_tables(out: &mut Vec<u8>, tables: &[Encoder]) {
    let length: usize = 2 + tables.iter().map(|t| 17 + t.values.len()).sum::<usize>();
    out.extend_from_slice(&[0xFF, 0xC4]);
    out.extend_from_slice(&(length as u16).to_be_bytes());
    for t in tables {
        out.push(t.class << 4 | t.id);
        out.extend_from_slice(&t.counts);
        out.extend_from_slice(t.values);
    }
}

const DC_LUMA_COUNTS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
const DC_CHROMA_COUNTS: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
const DC_VALUES: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const AC_LUMA_COUNTS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
const AC_LUMA_VALUES: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07, 0x22, 0x71, 0x14,
    0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09,
    0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a,
    0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65,
    0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88,
    0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9,
    0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca,
    0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea,
    0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
];
const AC_CHROMA_COUNTS: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
const AC_CHROMA_VALUES: [u8; 162] = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71, 0x13, 0x22, 0x32,
    0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0, 0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16,
    0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39,
    0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64,
    0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86,
    0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8,
    0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9,
    0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_tables_decoders_are_made_once() {
        let [_, ac_luma, ..] = Encoder::standard();
        let first = Decoder::shared(&ac_luma.counts, ac_luma.values).unwrap();
        let again = Decoder::shared(&ac_luma.counts, ac_luma.values).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert!(first.codes_as(&ac_luma));
        // Another table is its own.
        let (counts, values) = ([0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], [0x00, 0x01]);
        let other = Decoder::shared(&counts, &values).unwrap();
        assert!(!other.codes_as(&ac_luma) && !Arc::ptr_eq(&other, &first));
    }

    #[test]
    fn a_skip_entry_takes_a_code_and_its_extra_bits_together() {
        assert_eq!(skip_entry(4, 0x00), (4, END as u8), "the end of the block");
        assert_eq!(skip_entry(11, 0xF0), (11, 16), "sixteen zeros");
        assert_eq!(skip_entry(3, 0x23), (6, 3), "two zeros, then a coefficient of 3 bits");
        assert_eq!(skip_entry(0, 0x01), (0, 0), "a code longer than the table: the slow path");
        assert_eq!(skip_entry(5, 0x0B), (0, 0), "a size no 8-bit image has: the slow path refuses it");
    }
}
