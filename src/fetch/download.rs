//! Downloading one file over HTTP(S) into the downloads folder: resumed with range requests after an
//! interruption, checked against a pinned digest before it is used, installed by rename.
//!
//! The bytes go to `<file>.part` next to the final path. A dropped connection is retried (with a
//! `Range: bytes=N-` request, so what arrived is kept where the server allows it); a later run resumes
//! the same `.part` file. Only a file whose digest matches is renamed to its final name, so a half or
//! wrong file is never at that path. Proxies come from the usual environment variables.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::events::{Event, Reporter};

/// How a downloaded file is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Digest {
    Sha256(String),
    /// What Keras pins for its application weights (`get_file(file_hash=...)`).
    Md5(String),
}

impl Digest {
    fn name(&self) -> &'static str {
        match self {
            Digest::Sha256(_) => "sha256",
            Digest::Md5(_) => "md5",
        }
    }

    fn expected(&self) -> &str {
        match self {
            Digest::Sha256(h) | Digest::Md5(h) => h,
        }
    }

    /// The digest of the file at `path`, as lowercase hex.
    fn of_file(&self, path: &Path) -> Result<String> {
        match self {
            Digest::Sha256(_) => crate::util::hash::sha256_file(path),
            Digest::Md5(_) => {
                use md5::{Digest as _, Md5};
                let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
                let mut h = Md5::new();
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                Ok(format!("{:x}", h.finalize()))
            }
        }
    }

    /// Whether the file at `path` has this digest.
    pub fn matches(&self, path: &Path) -> Result<bool> {
        Ok(self.of_file(path)?.eq_ignore_ascii_case(self.expected()))
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.name(), self.expected())
    }
}

/// One file to download.
#[derive(Debug, Clone)]
pub struct Download<'a> {
    pub url: &'a str,
    /// The final path (the `.part` file sits beside it).
    pub dest: &'a Path,
    pub digest: &'a Digest,
    /// What the file is, for messages (e.g. "vgg16 weights").
    pub what: &'a str,
}

/// Transfers tried per call before giving up (each resumes where the last one stopped).
const ATTEMPTS: u32 = 4;

/// `dest` with `.part` appended.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// What to tell a user who has to place the file by hand.
fn by_hand(d: &Download) -> String {
    format!(
        "or place the file by hand: download {} and save it as {} ({} is checked)",
        d.url,
        d.dest.display(),
        d.digest
    )
}

/// Makes sure `d.dest` holds the file with the right digest, downloading what is missing.
pub fn fetch_file(d: &Download, offline: bool, rep: &dyn Reporter) -> Result<PathBuf> {
    crate::util::redact::refuse_userinfo(d.url)?;
    if d.dest.is_file() {
        if d.digest.matches(d.dest)? {
            return Ok(d.dest.to_path_buf());
        }
        rep.report(Event::Warning(&format!(
            "{}: not the pinned file ({} expected); downloading it again",
            d.dest.display(),
            d.digest
        )));
        std::fs::remove_file(d.dest).map_err(|e| Error::io(d.dest, e))?;
    }
    if offline {
        return Err(Error::Config(format!(
            "{} are not downloaded and {}=1 forbids the network; unset it, {}",
            d.what,
            super::OFFLINE_ENV,
            by_hand(d)
        )));
    }
    if let Some(dir) = d.dest.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let part = part_path(d.dest);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_body(Some(Duration::from_secs(120)))
        .build()
        .into();
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        match transfer(&agent, d, &part, rep) {
            Ok(()) => {
                last.clear();
                break;
            }
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry(msg)) => {
                let have = std::fs::metadata(&part).map_or(0, |m| m.len());
                last = msg;
                if attempt < ATTEMPTS {
                    rep.report(Event::Warning(&format!(
                        "{}: {last}; retrying from byte {have} ({attempt} of {ATTEMPTS})",
                        d.url
                    )));
                    std::thread::sleep(Duration::from_millis(500 << attempt));
                }
            }
        }
    }
    if !last.is_empty() {
        let kept = match std::fs::metadata(&part).map_or(0, |m| m.len()) {
            0 => "nothing arrived".to_string(),
            n => format!(
                "the {n} bytes that arrived are kept in {} and the next run resumes them",
                part.display()
            ),
        };
        return Err(Error::Config(format!(
            "downloading {} from {} failed after {ATTEMPTS} tries: {last}; {kept}; check the \
             network, {}",
            d.what,
            d.url,
            by_hand(d)
        )));
    }
    let got = d.digest.of_file(&part)?;
    if !got.eq_ignore_ascii_case(d.digest.expected()) {
        let _ = std::fs::remove_file(&part);
        return Err(Error::Config(format!(
            "{} from {}: {} {got}, expected {}: refused and deleted (not the pinned file; a proxy \
             page or a changed upload?); {}",
            d.what,
            d.url,
            d.digest.name(),
            d.digest.expected(),
            by_hand(d)
        )));
    }
    std::fs::rename(&part, d.dest).map_err(|e| Error::io(d.dest, e))?;
    Ok(d.dest.to_path_buf())
}

enum Failure {
    /// Worth another try (the connection broke, the server had a passing error).
    Retry(String),
    /// Another try gives the same answer (404, 403, a disk error).
    Fatal(Error),
}

/// One request: continues `part` from its current length when the server honours the range.
fn transfer(
    agent: &ureq::Agent,
    d: &Download,
    part: &Path,
    rep: &dyn Reporter,
) -> std::result::Result<(), Failure> {
    let have = std::fs::metadata(part).map_or(0, |m| m.len());
    let mut req = agent.get(d.url);
    if have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
    }
    let resp = req.call().map_err(|e| Failure::Retry(e.to_string()))?;
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (start, append) = match status {
        200 => (0, false),
        206 => {
            let from = header("content-range")
                .and_then(|r| range_start(&r))
                .ok_or_else(|| Failure::Retry("a partial answer without Content-Range".into()))?;
            if from != have {
                let _ = std::fs::remove_file(part);
                return Err(Failure::Retry(format!(
                    "the server resumed at byte {from}, not {have}; starting over"
                )));
            }
            (have, true)
        }
        // Range not satisfiable: the part file is already whole (or longer than the file).
        416 if have > 0 => return Ok(()),
        408 | 429 | 500..=599 => return Err(Failure::Retry(format!("HTTP {status}"))),
        _ => {
            return Err(Failure::Fatal(Error::Config(format!(
                "downloading {} from {}: HTTP {status}{}; {}",
                d.what,
                d.url,
                if status == 404 { " (not found)" } else { "" },
                by_hand(d)
            ))))
        }
    };
    let length = header("content-length").and_then(|l| l.parse::<u64>().ok());
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(part)
        .map_err(|e| Failure::Fatal(Error::io(part, e)))?;
    rep.report(Event::Start {
        task: "download",
        total: length.map_or(0, |l| l + start),
        done: start,
    });
    let mut body = resp.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0u64;
    let result = loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) => break Err(Failure::Retry(format!("connection lost: {e}"))),
        };
        if let Err(e) = out.write_all(&buf[..n]) {
            break Err(Failure::Fatal(Error::io(part, e)));
        }
        got += n as u64;
        rep.report(Event::Advance(n as u64));
    };
    rep.report(Event::Finish);
    out.flush()
        .map_err(|e| Failure::Fatal(Error::io(part, e)))?;
    result?;
    match length {
        Some(l) if got < l => Err(Failure::Retry(format!(
            "connection closed after {} of {} bytes",
            start + got,
            start + l
        ))),
        _ => Ok(()),
    }
}

/// The first byte of a `Content-Range: bytes FIRST-LAST/TOTAL` header.
fn range_start(v: &str) -> Option<u64> {
    v.trim()
        .strip_prefix("bytes")?
        .trim()
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_start() {
        assert_eq!(range_start("bytes 100-199/200"), Some(100));
        assert_eq!(range_start("bytes 0-0/1"), Some(0));
        assert_eq!(range_start("items 1-2/3"), None);
    }

    #[test]
    fn digests_of_a_known_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        // RFC 1321 and FIPS 180-2 test vectors for "abc".
        assert!(Digest::Md5("900150983cd24fb0d6963f7d28e17f72".into())
            .matches(&p)
            .unwrap());
        assert!(Digest::Sha256(
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into()
        )
        .matches(&p)
        .unwrap());
        assert!(!Digest::Md5("00".into()).matches(&p).unwrap());
    }
}
