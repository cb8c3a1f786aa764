//! Where each MCU row's bits lie in a JPEG tile's scan: learnt when the
//! tile is checked, kept with it, so that joining it into a result copies
//! its bits without Huffman-decoding the scan a second time.

use super::entropy::ScanReader;
use super::{ComponentBits, Jpeg, JpegError, Row, Run};

/// Ends a stored tile that carries its index (format version 1).
const MAGIC: [u8; 8] = *b"tpjidx01";
/// A row's bytes: per component its DC's and AC's bit (u32), first and last
/// DC (i16); then where the row ends (u32). Little-endian.
const ROW_BYTES: usize = 3 * 12 + 4;
/// A scan whose bits a u32 counts (a tile is far smaller: see
/// [`crate::wire::MAX_MESSAGE_BYTES`]).
const MAX_SCAN_BYTES: usize = (u32::MAX / 8) as usize;
/// After the rows: their count (u32) and [`MAGIC`].
const FOOTER_BYTES: usize = 4 + MAGIC.len();

/// The runs of a tile's MCU rows, top to bottom. Its bit positions count the
/// scan's bits with their stuffing removed, from the scan's first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileIndex {
    pub(super) rows: Vec<Run>,
}

impl TileIndex {
    /// Reads a scan through (`cols` x `rows` MCUs), noting each row's run.
    pub(super) fn read(jpeg: &Jpeg, scan: &[u8]) -> Result<Self, JpegError> {
        if scan.len() > MAX_SCAN_BYTES {
            return Err(JpegError::Unsupported("a tile over 512 MiB"));
        }
        let (cols, rows) = jpeg.layout().mcus();
        let mut reader = ScanReader::new(jpeg, scan, true);
        let rows = (0..rows)
            .map(|_| match reader.row(cols)? {
                Row::Bits { mcus, end } => Run::of(&mcus, end).ok_or(JpegError::Malformed("an empty MCU row")),
                Row::Blocks(_) => unreachable!("a reader that copies reads bits"),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { rows })
    }

    /// Appends the index to a stored tile's bytes.
    pub fn append_to(&self, out: &mut Vec<u8>) {
        out.reserve(self.rows.len() * ROW_BYTES + FOOTER_BYTES);
        for run in &self.rows {
            // Positions fit: `read` took at most `MAX_SCAN_BYTES`.
            for c in &run.components {
                out.extend_from_slice(&(c.dc_at as u32).to_le_bytes());
                out.extend_from_slice(&(c.ac_at as u32).to_le_bytes());
                out.extend_from_slice(&c.first_dc.to_le_bytes());
                out.extend_from_slice(&c.last_dc.to_le_bytes());
            }
            out.extend_from_slice(&(run.end as u32).to_le_bytes());
        }
        out.extend_from_slice(&(self.rows.len() as u32).to_le_bytes());
        out.extend_from_slice(&MAGIC);
    }

    /// A stored tile's JPEG and the index appended to it, if it has one (a
    /// tile stored by an older version, or coded on the master, has none).
    pub fn split(stored: &[u8]) -> (&[u8], Option<Self>) {
        let Some(rest) = stored.strip_suffix(&MAGIC) else { return (stored, None) };
        let Some((rest, count)) = rest.split_last_chunk::<4>() else { return (stored, None) };
        let count = u32::from_le_bytes(*count) as usize;
        let Some(at) = count.checked_mul(ROW_BYTES).and_then(|n| rest.len().checked_sub(n)) else {
            return (stored, None);
        };
        let rows = rest[at..].chunks_exact(ROW_BYTES).map(read_run).collect();
        (&rest[..at], Some(Self { rows }))
    }

    /// The runs, if they can be copied from `bits` bits of a scan of `rows`
    /// MCU rows of `n` components: one per row, each starting where the one
    /// before ended, its marks in order, within the bits, and every DC
    /// within 8-bit range (so each difference coded again has a code).
    /// Anything else means the index is not this tile's.
    pub(super) fn runs(&self, rows: u32, n: usize, bits: u64) -> Option<&[Run]> {
        if self.rows.len() != rows as usize {
            return None;
        }
        let dc = |v: i16| (-1024..=1023).contains(&v);
        let mut at = 0;
        for run in &self.rows {
            if run.components[0].dc_at != at {
                return None;
            }
            for c in &run.components[..n] {
                if c.dc_at < at || c.ac_at < c.dc_at || !dc(c.first_dc) || !dc(c.last_dc) {
                    return None;
                }
                at = c.ac_at;
            }
            if run.end < at {
                return None;
            }
            at = run.end;
        }
        (at <= bits).then_some(&self.rows)
    }
}

fn read_run(bytes: &[u8]) -> Run {
    let u32_at = |i: usize| u64::from(u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes")));
    let i16_at = |i: usize| i16::from_le_bytes(bytes[i..i + 2].try_into().expect("2 bytes"));
    let component = |i: usize| ComponentBits {
        dc_at: u32_at(12 * i),
        ac_at: u32_at(12 * i + 4),
        first_dc: i16_at(12 * i + 8),
        last_dc: i16_at(12 * i + 10),
    };
    Run { components: [component(0), component(1), component(2)], end: u32_at(36) }
}
