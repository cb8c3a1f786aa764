//! The result cache: the same input bytes with the same operations and
//! output give the same result (tiling never changes a pixel), so a job like
//! one already done is answered with that job's result, without the broker.
//! The result is shared as a hard link: deleting either job leaves the
//! other's file whole.

use std::path::Path;

use app::api::Output;
use pipeline::Operation;
use sha2::{Digest, Sha256};

/// The cache key of an upload whose bytes hash to `input` (SHA-256), as
/// lowercase hex. Operations and output enter in their JSON form, the one
/// stored and sent to workers.
pub fn key(input: &[u8; 32], ops: &[Operation], output: Output) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"tilepipe result v1\0");
    hasher.update(input);
    hasher.update(serde_json::to_vec(ops).expect("operations serialise"));
    hasher.update(b"\0");
    hasher.update(serde_json::to_vec(&output).expect("an output serialises"));
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Shares `source` as `target`: a hard link, or a copy where the file system
/// has none (another disk, FAT).
pub async fn share(source: &Path, target: &Path) -> std::io::Result<()> {
    match tokio::fs::hard_link(source, target).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => tokio::fs::copy(source, target).await.map(|_| ()),
        linked => linked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_changes_with_input_operations_and_output() {
        let ops = [Operation::default()];
        let base = key(&[1; 32], &ops, Output::Png);
        assert_eq!(base.len(), 64);
        assert_eq!(base, key(&[1; 32], &ops, Output::Png));
        assert_ne!(base, key(&[2; 32], &ops, Output::Png));
        assert_ne!(base, key(&[1; 32], &[Operation::Invert], Output::Png));
        assert_ne!(base, key(&[1; 32], &ops, Output::Jpeg { quality: 90 }));
        assert_ne!(
            key(&[1; 32], &ops, Output::Jpeg { quality: 90 }),
            key(&[1; 32], &ops, Output::Jpeg { quality: 91 })
        );
    }

    #[tokio::test]
    async fn a_shared_result_outlives_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"pixels").unwrap();
        share(&a, &b).await.unwrap();
        std::fs::remove_file(&a).unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"pixels");
        assert_eq!(share(&a, &b).await.unwrap_err().kind(), std::io::ErrorKind::NotFound);
    }
}
