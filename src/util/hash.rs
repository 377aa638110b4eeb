//! File hashes: the sha256 that identifies a model in caches, heads and checkpoints.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// sha256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    crate::util::paths::check_regular(path)?;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(path, e))?;
    Ok(format!("{:x}", h.finalize()))
}

/// sha256 of bytes, lower-case hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}
