//! Paths, handled one way everywhere:
//!
//! - **as text, losslessly**: caches and score files store image paths as UTF-8 text; a Unix file
//!   name is any bytes. The text form keeps valid UTF-8 as it is, writes each byte that is not UTF-8
//!   as `\xNN` and a backslash as `\\`, so every name maps back to the same file ([`to_text`],
//!   [`from_text`]);
//! - **read from a file** (a shard marker, a manifest line, a plan): [`contained`] takes it relative
//!   to its root, normalised, and refuses an absolute path or a `..` that leaves the root, naming the
//!   file and line it came from;
//! - **the home folder** ([`home`], [`lib_dir`]), where fetched models, downloads and run mirrors
//!   are kept;
//! - **resolved** ([`resolve`]): symlinks followed as far as the path exists, so an output can be
//!   compared with a command's inputs before anything is written;
//! - **inputs that are files** ([`check_regular`]): a FIFO, socket or device given as a model, a
//!   table or a cache is refused before it is opened (opening a FIFO waits for a writer forever);
//! - **scratch** ([`Scratch`]): a private folder of the system's temporary folder for a command's
//!   intermediate files, never beside the user's files, removed when done.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// `s` in Unicode normalisation form C: names typed on one system match files named on another
/// (macOS writes NFD).
pub fn nfc(s: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    s.nfc().collect()
}

/// The file `rel` (a `/`-separated path below `root`) names, spelt as the folder spells it when only
/// Unicode normalisation differs (an NFC list for NFD files); `None` when there is none, or more
/// than one.
pub fn locate(root: &Path, rel: &str) -> Option<PathBuf> {
    let mut at = root.to_path_buf();
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        let exact = at.join(part);
        if std::fs::symlink_metadata(&exact).is_ok() {
            at = exact;
            continue;
        }
        let want = nfc(part);
        let mut found = std::fs::read_dir(&at)
            .ok()?
            .flatten()
            .filter(|e| nfc(&e.file_name().to_string_lossy()) == want);
        let one = found.next()?;
        if found.next().is_some() {
            return None;
        }
        at = one.path();
    }
    Some(at)
}

/// Refuses `path` when it exists and is neither a regular file nor a folder (a FIFO, a socket, a
/// device), before anything opens it: opening a FIFO blocks until a writer comes, a device may
/// never end. A missing path or a folder is left to the caller's own open and message.
pub fn check_regular(path: &Path) -> Result<()> {
    let Ok(m) = std::fs::metadata(path) else {
        return Ok(());
    };
    let Some(what) = special(&m) else {
        return Ok(());
    };
    Err(Error::io(
        path,
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("is {what}, not a file: give a regular file"),
        ),
    ))
}

/// What an entry that is neither a file nor a folder is (a FIFO, a socket, a device), in words.
pub fn special(m: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    Some(if t.is_file() || t.is_dir() {
        return None;
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    })
}

/// The text form of `p` (components joined with `/`).
pub fn to_text(p: &Path) -> String {
    let mut out = String::new();
    let mut rest = p.as_os_str().as_bytes();
    while !rest.is_empty() {
        let (valid, bad) = match std::str::from_utf8(rest) {
            Ok(s) => (s, &[][..]),
            Err(e) => {
                let (ok, tail) = rest.split_at(e.valid_up_to());
                let n = e.error_len().unwrap_or(tail.len());
                // SAFETY-free: `ok` is valid UTF-8 by `valid_up_to`.
                (std::str::from_utf8(ok).unwrap_or_default(), &tail[..n])
            }
        };
        out.push_str(&valid.replace('\\', "\\\\"));
        for b in bad {
            out.push_str(&format!("\\x{b:02x}"));
        }
        rest = &rest[valid.len() + bad.len()..];
    }
    out
}

/// The path a text form stands for (the inverse of [`to_text`]); text that [`to_text`] cannot have
/// written is taken literally.
pub fn from_text(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |j: usize| {
            b.get(j..j + 2)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        };
        match (b[i], b.get(i + 1)) {
            (b'\\', Some(b'\\')) => {
                out.push(b'\\');
                i += 2;
            }
            (b'\\', Some(b'x')) if hex(i + 2).is_some() => {
                out.push(hex(i + 2).unwrap_or_default());
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// The variable that moves headstart's home folder.
pub const HOME_ENV: &str = "HEADSTART_HOME";

/// headstart's home folder: `$HEADSTART_HOME`, else `~/.cache/headstart` (fetched models,
/// downloads, ONNX Runtime, int8 copies, run mirrors).
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os(HOME_ENV).filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let user = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    user.join(".cache").join("headstart")
}

/// Where `headstart setup` installs ONNX Runtime: `home()/lib`.
pub fn lib_dir() -> PathBuf {
    home().join("lib")
}

/// `rel`, a path read from `from` (`where_` says where in it: "line 3", "field output"), as a path
/// relative to its root: normalised (`a/./b` is `a/b`, `a/../b` is `b`), and refused when it is
/// absolute, empty, or climbs out of the root with `..`.
pub fn contained(rel: &str, from: &Path, where_: &str) -> Result<PathBuf> {
    let bad = |why: &str| {
        Error::dataset(
            from,
            format!(
                "{where_}: path '{rel}' {why}; paths read from a file must stay inside its root"
            ),
        )
    };
    let path = from_text(rel);
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err(bad("leaves its root (..)"));
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err(bad("is absolute")),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(bad("names no file"));
    }
    Ok(out)
}

/// `p` with symlinks followed: canonical where it exists; otherwise its nearest existing ancestor
/// made canonical with the rest appended (`.` dropped, `..` applied), so an output not yet written
/// can be compared with inputs.
pub fn resolve(p: &Path) -> PathBuf {
    if let Ok(c) = p.canonicalize() {
        return c;
    }
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut base = abs.as_path();
    let mut tail: Vec<&std::ffi::OsStr> = Vec::new();
    while let (Some(last), Some(parent)) = (base.components().next_back(), base.parent()) {
        tail.push(last.as_os_str());
        base = parent;
        if let Ok(mut out) = base.canonicalize() {
            for n in tail.iter().rev() {
                match n.to_str() {
                    Some("..") => {
                        out.pop();
                    }
                    Some(".") => {}
                    _ => out.push(n),
                }
            }
            return out;
        }
    }
    abs
}

/// A folder of its own in the system's temporary folder (`headstart-<what>-<pid>-<n>`, mode 0700,
/// created new), removed with what it holds when dropped: where a command keeps intermediate
/// files (a calibration model, a temporary cache), so none lands on or beside a file of the user's.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(what: &str) -> Result<Scratch> {
        use std::os::unix::fs::DirBuilderExt;
        static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "headstart-{what}-{}-{nanos}-{n}",
            std::process::id()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(&dir, e))?;
        Ok(Scratch(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `head.h5` + `x.png` -> `head.x.png` beside it.
pub fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let stem = p
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    p.with_file_name(format!("{stem}.{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_maps_back_to_the_same_bytes() {
        let names: [&[u8]; 7] = [
            b"cat/plain.jpg",
            "dog/ünïcode 名.png".as_bytes(),
            b"dog/bad_\xff\xfe_name.png",
            b"back\\slash\\x41.jpg",
            b"\xc3",
            b"\xe5\x90\x8d\xe5\x90",
            b"percent%41 \\xzz.png",
        ];
        for n in names {
            let p = Path::new(std::ffi::OsStr::from_bytes(n));
            let t = to_text(p);
            assert_eq!(from_text(&t).as_os_str().as_bytes(), n, "{t}");
        }
        assert_eq!(to_text(Path::new("cat/plain.jpg")), "cat/plain.jpg");
        assert_eq!(
            to_text(Path::new(std::ffi::OsStr::from_bytes(b"a\xffb"))),
            "a\\xffb"
        );
    }

    #[test]
    fn paths_from_files_stay_inside_their_root() {
        let f = Path::new("RUN/done/00001.json");
        assert_eq!(
            contained("shards/./a/../shard-00001.h5", f, "output").unwrap(),
            Path::new("shards/shard-00001.h5")
        );
        for bad in ["../x.h5", "/etc/passwd", "a/../../b", "", ".", "shards/.."] {
            let e = contained(bad, f, "field output").unwrap_err().to_string();
            assert!(
                e.contains("RUN/done/00001.json") && e.contains("field output"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn resolve_follows_symlinks_of_the_part_that_exists() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        let want = real.canonicalize().unwrap().join("new/f.h5");
        assert_eq!(resolve(&dir.path().join("link/new/f.h5")), want);
        assert_eq!(resolve(&dir.path().join("link/x/../new/./f.h5")), want);
        std::fs::write(real.join("g"), b"").unwrap();
        assert_eq!(
            resolve(&dir.path().join("link/g")),
            real.canonicalize().unwrap().join("g")
        );
    }
}
