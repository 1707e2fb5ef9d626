//! Which file a checkpoint refers to: device, inode, and a fingerprint of
//! the first bytes, so a recycled inode or a gzipped copy is recognised.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use serde::{Deserialize, Serialize};

/// Bytes hashed for the fingerprint.
pub(super) const FINGERPRINT_BYTES: usize = 256;

/// Where a CRI log file was left: which file, and how far into it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCursor {
    /// Device of the file.
    pub dev: u64,
    /// Inode of the file.
    pub ino: u64,
    /// FNV-1a of the first `fp_len` bytes.
    pub fingerprint: u64,
    /// How many bytes the fingerprint covers (less than
    /// 256 bytes while the file was shorter).
    pub fp_len: u32,
    /// Bytes consumed: everything before is in the output.
    pub offset: u64,
}

/// 64-bit FNV-1a: stable across builds, which a checkpoint needs.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Reads up to [`FINGERPRINT_BYTES`] from the start of `reader`.
pub(super) fn head(reader: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(FINGERPRINT_BYTES);
    reader.take(FINGERPRINT_BYTES as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

impl FileCursor {
    /// True when `head` (the file's first bytes now) is the file this cursor
    /// was taken on: the bytes it fingerprinted are still there, unchanged.
    pub fn same_content(&self, head: &[u8]) -> bool {
        let n = self.fp_len as usize;
        head.len() >= n && fnv1a(&head[..n]) == self.fingerprint
    }

    /// True when `file` is this cursor's file (same inode and same content).
    pub fn matches(&self, file: &mut File) -> io::Result<bool> {
        let meta = file.metadata()?;
        if meta.dev() != self.dev || meta.ino() != self.ino {
            return Ok(false);
        }
        let head = head(file)?;
        Ok(self.same_content(&head))
    }
}

/// Where a cursor's file is now.
pub(super) enum Found {
    /// Still at the live path.
    Live(File),
    /// Renamed by rotation, not yet compressed.
    Rotated(File, PathBuf),
    /// Rotated and gzipped: a decoder over it.
    Compressed(Box<MultiGzDecoder<File>>, PathBuf),
}

/// Looks for `cursor`'s file at `live` and among its rotated siblings
/// (`<live>.<suffix>`, plain or `.gz`).
pub(super) fn locate(live: &Path, cursor: &FileCursor) -> io::Result<Option<Found>> {
    if let Ok(mut f) = File::open(live) {
        if cursor.matches(&mut f)? {
            return Ok(Some(Found::Live(f)));
        }
    }
    for path in rotated_siblings(live)? {
        let Ok(mut f) = File::open(&path) else { continue };
        if path.extension().is_some_and(|e| e == "gz") {
            // Compression makes a new inode; only the content can tell.
            let mut gz = MultiGzDecoder::new(f);
            let Ok(head) = head(&mut gz) else { continue };
            if cursor.same_content(&head) {
                let f = File::open(&path)?;
                return Ok(Some(Found::Compressed(Box::new(MultiGzDecoder::new(f)), path)));
            }
        } else if cursor.matches(&mut f)? {
            return Ok(Some(Found::Rotated(f, path)));
        }
    }
    Ok(None)
}

/// `<live>.*` in the same directory, oldest first.
fn rotated_siblings(live: &Path) -> io::Result<Vec<PathBuf>> {
    let (Some(dir), Some(name)) = (live.parent(), live.file_name()) else { return Ok(Vec::new()) };
    let mut prefix = name.to_os_string();
    prefix.push(".");
    let prefix = prefix.as_encoded_bytes().to_vec();
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        if file_name.as_encoded_bytes().starts_with(&prefix) && !file_name.as_encoded_bytes().ends_with(b".tmp") {
            let mtime = entry.metadata().map(|m| m.mtime()).unwrap_or(0);
            found.push((mtime, entry.path()));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}
