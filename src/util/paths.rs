//! File names as text, losslessly. Caches and score files store image paths as UTF-8 text; a Unix
//! file name is any bytes. The text form keeps valid UTF-8 as it is, writes each byte that is not
//! UTF-8 as `\xNN` and a backslash as `\\`, so every name maps back to the same file.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

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
}
