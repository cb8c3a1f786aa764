//! A job's finished tiles, as the workers sent them, appended to one file
//! in the order they came: one file per job, not one per tile, since on this
//! project's reference machine creating a file cost the master more than
//! writing a tile's bytes (ext4 allocating inodes was a seventh of its CPU).
//!
//! A record is a header (magic, tile, form, length, and a check of the two),
//! the tile's bytes and a trailer (another magic and the check again). The
//! results reader is the only writer; readers (the result's encoder, a
//! resumed job's check) scan the records they have not seen yet, and a tile
//! stored twice is read from its latest record. A record cut short by a
//! crash, and followed by those stored after the restart, has no trailer
//! where its header says: a reader then looks for the next header.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: [u8; 8] = *b"\x89tpdone\n";
/// Magic, tile (u32), form (u8), length (u32), check (u32); little-endian.
const HEADER: usize = MAGIC.len() + 4 + 1 + 4 + 4;
const END_MAGIC: [u8; 4] = *b"tpe\n";
/// After the bytes: [`END_MAGIC`] and the check again.
const TRAILER: usize = END_MAGIC.len() + 4;
/// The most bytes a record holds: more than any tile a result can carry
/// (`pipeline::wire::MAX_MESSAGE_BYTES`), so that a damaged header cannot
/// make a reader allocate much.
const MAX_BYTES: u32 = 64 * 1024 * 1024;
/// How much a reader looking for the next header reads at a time.
const SEARCH_CHUNK: usize = 64 * 1024;

/// How a tile's bytes are stored: as the worker sent them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Raw samples of the job's channels.
    Raw,
    Png,
    /// A JPEG tile of the job's JPEG result, with its index appended.
    Jpeg,
}

impl Form {
    fn code(self) -> u8 {
        match self {
            Form::Raw => 0,
            Form::Png => 1,
            Form::Jpeg => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        [Form::Raw, Form::Png, Form::Jpeg].into_iter().find(|f| f.code() == code)
    }
}

/// Ties a header's tile and length together, so that bytes that only look
/// like a header (a record cut short, then another) are not taken for one.
fn check(tile: u32, len: u32) -> u32 {
    !(tile.rotate_left(16) ^ len)
}

/// Appends `tile`'s bytes to the file at `path` (created if need be).
/// Blocking. Only one writer may append to a file at a time.
pub fn append(path: &Path, tile: u32, form: Form, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|&len| len <= MAX_BYTES)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a tile over 64 MiB"))?;
    let mut record = Vec::with_capacity(HEADER + bytes.len() + TRAILER);
    record.extend_from_slice(&MAGIC);
    record.extend_from_slice(&tile.to_le_bytes());
    record.push(form.code());
    record.extend_from_slice(&len.to_le_bytes());
    record.extend_from_slice(&check(tile, len).to_le_bytes());
    record.extend_from_slice(bytes);
    record.extend_from_slice(&trailer(tile, len));
    // One write, so that a reader sees a record whole or not yet (and a
    // crash leaves at most the last one cut short).
    File::options().create(true).append(true).open(path)?.write_all(&record)
}

/// A reader of one job's file of finished tiles.
pub struct DoneTiles {
    path: PathBuf,
    file: Option<File>,
    /// Where the records not yet read start.
    scanned: u64,
    /// Each tile's latest record: its form, and where its bytes lie.
    records: HashMap<u32, (Form, u64, u32)>,
}

impl DoneTiles {
    pub fn new(path: &Path) -> Self {
        Self { path: path.to_owned(), file: None, scanned: 0, records: HashMap::new() }
    }

    /// `tile`'s form and bytes, if the file holds it (blocking).
    pub fn read(&mut self, tile: u32) -> std::io::Result<Option<(Form, Vec<u8>)>> {
        if !self.records.contains_key(&tile) {
            self.scan()?;
        }
        let (Some(file), Some(&(form, at, len))) = (&self.file, self.records.get(&tile)) else {
            return Ok(None);
        };
        let mut bytes = vec![0; len as usize];
        file.read_exact_at(&mut bytes, at)?;
        Ok(Some((form, bytes)))
    }

    /// Reads the headers of the records appended since the last scan.
    fn scan(&mut self) -> std::io::Result<()> {
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(file) => self.file = Some(file),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        let file = self.file.as_ref().expect("opened above");
        let end = file.metadata()?.len();
        while self.scanned + HEADER as u64 <= end {
            let mut header = [0; HEADER];
            file.read_exact_at(&mut header, self.scanned)?;
            let whole = |(tile, _, len): (u32, Form, u32)| -> std::io::Result<bool> {
                let at = self.scanned + HEADER as u64 + u64::from(len);
                if at + TRAILER as u64 > end {
                    return Ok(false);
                }
                let mut found = [0; TRAILER];
                file.read_exact_at(&mut found, at)?;
                Ok(found == trailer(tile, len))
            };
            match parse(&header) {
                Some(record) if whole(record)? => {
                    let (tile, form, len) = record;
                    self.records.insert(tile, (form, self.scanned + HEADER as u64, len));
                    self.scanned += (HEADER + TRAILER) as u64 + u64::from(len);
                }
                // Not a header, or a record not (yet) whole: skip it if
                // another follows; else it may still be being written.
                _ => match find_magic(file, self.scanned + 1, end)? {
                    Some(next) => self.scanned = next,
                    None => break,
                },
            }
        }
        Ok(())
    }
}

fn trailer(tile: u32, len: u32) -> [u8; TRAILER] {
    let mut trailer = [0; TRAILER];
    trailer[..END_MAGIC.len()].copy_from_slice(&END_MAGIC);
    trailer[END_MAGIC.len()..].copy_from_slice(&check(tile, len).to_le_bytes());
    trailer
}

fn parse(header: &[u8; HEADER]) -> Option<(u32, Form, u32)> {
    let (magic, rest) = header.split_first_chunk::<8>()?;
    let (tile, rest) = rest.split_first_chunk::<4>()?;
    let (&form, rest) = rest.split_first()?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let (sum, _) = rest.split_first_chunk::<4>()?;
    let (tile, len) = (u32::from_le_bytes(*tile), u32::from_le_bytes(*len));
    let valid = *magic == MAGIC && u32::from_le_bytes(*sum) == check(tile, len) && len <= MAX_BYTES;
    valid.then_some((tile, Form::from_code(form)?, len))
}

/// Where the next [`MAGIC`] at or after `from` (and before `end`) starts.
fn find_magic(file: &File, mut from: u64, end: u64) -> std::io::Result<Option<u64>> {
    let mut chunk = vec![0; SEARCH_CHUNK];
    while from + MAGIC.len() as u64 <= end {
        let n = (end - from).min(SEARCH_CHUNK as u64) as usize;
        file.read_exact_at(&mut chunk[..n], from)?;
        if let Some(i) = chunk[..n].windows(MAGIC.len()).position(|w| w == MAGIC) {
            return Ok(Some(from + i as u64));
        }
        // The next chunk overlaps this one by a magic's length less one.
        from += (n - (MAGIC.len() - 1)) as u64;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tile_is_read_from_its_latest_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("done");
        let mut done = DoneTiles::new(&path);
        assert_eq!(done.read(0).unwrap(), None, "no file yet");
        append(&path, 3, Form::Png, b"three").unwrap();
        append(&path, 0, Form::Jpeg, b"zero").unwrap();
        assert_eq!(done.read(0).unwrap(), Some((Form::Jpeg, b"zero".to_vec())));
        assert_eq!(done.read(1).unwrap(), None);
        // Appended after the reader scanned: found on the next read.
        append(&path, 1, Form::Raw, &[7; 100]).unwrap();
        append(&path, 3, Form::Raw, b"again").unwrap();
        assert_eq!(done.read(1).unwrap(), Some((Form::Raw, vec![7; 100])));
        assert_eq!(done.read(3).unwrap(), Some((Form::Raw, b"again".to_vec())));
        assert_eq!(DoneTiles::new(&path).read(3).unwrap(), Some((Form::Raw, b"again".to_vec())));
    }

    #[test]
    fn a_record_cut_short_is_skipped_and_one_being_written_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("done");
        append(&path, 0, Form::Png, b"whole").unwrap();
        append(&path, 1, Form::Png, &[1; 5000]).unwrap();
        // A crash cut tile 1's record short; then the job resumed.
        let whole = std::fs::metadata(&path).unwrap().len();
        let file = File::options().write(true).open(&path).unwrap();
        file.set_len(whole - 1000).unwrap();
        let mut done = DoneTiles::new(&path);
        assert_eq!(done.read(1).unwrap(), None, "cut short: maybe still being written");
        assert_eq!(done.read(0).unwrap(), Some((Form::Png, b"whole".to_vec())));
        append(&path, 2, Form::Raw, b"after").unwrap();
        assert_eq!(done.read(2).unwrap(), Some((Form::Raw, b"after".to_vec())));
        assert_eq!(done.read(1).unwrap(), None, "the record cut short is never read");
        // Enough stored after it to reach past where its header says it
        // ends: its bytes are not taken for it, nor the records they hold
        // lost.
        for t in 10..20 {
            append(&path, t, Form::Png, &[t as u8; 300]).unwrap();
        }
        for t in 10..20 {
            assert_eq!(done.read(t).unwrap(), Some((Form::Png, vec![t as u8; 300])), "tile {t}");
            assert_eq!(DoneTiles::new(&path).read(t).unwrap(), Some((Form::Png, vec![t as u8; 300])), "tile {t}");
        }
        assert_eq!(DoneTiles::new(&path).read(1).unwrap(), None);
        // Half a header at the end, then a record.
        let mut half = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        half.write_all(&MAGIC[..5]).unwrap();
        append(&path, 4, Form::Png, b"four").unwrap();
        assert_eq!(done.read(4).unwrap(), Some((Form::Png, b"four".to_vec())));
    }

    #[test]
    fn a_record_is_at_most_64_mib() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("done");
        let big = vec![0; MAX_BYTES as usize + 1];
        assert_eq!(append(&path, 0, Form::Raw, &big).unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
        assert!(!path.exists() || std::fs::metadata(&path).unwrap().len() == 0);
    }

    #[test]
    fn bytes_that_look_like_a_header_are_not_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("done");
        // A magic with a wrong check, then a record.
        let mut forged = MAGIC.to_vec();
        forged.extend_from_slice(&[1, 0, 0, 0, 1, 4, 0, 0, 0, 0, 0, 0, 0]);
        std::fs::write(&path, &forged).unwrap();
        append(&path, 2, Form::Png, b"real").unwrap();
        let mut done = DoneTiles::new(&path);
        assert_eq!(done.read(1).unwrap(), None);
        assert_eq!(done.read(2).unwrap(), Some((Form::Png, b"real".to_vec())));
    }
}
