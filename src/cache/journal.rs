//! The extraction journal (`<out>.journal`): finished images are appended as they complete, so an
//! interrupted run continues where it stopped. A torn last record (a kill during a write) is cut off;
//! a journal of another run (different fingerprint) is replaced. Each record ends with the CRC-32 of
//! its bytes: a record damaged on disk (a page of zeros after a power loss) ends the resume there,
//! and the images from it on are extracted again. A file at `<out>.journal` that is no journal is
//! never touched.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const JOURNAL_MAGIC: &[u8; 8] = b"HSJRNL02";
/// What every version of the journal starts with.
const JOURNAL_FAMILY: &[u8; 6] = b"HSJRNL";
const REC_OK: u8 = 1;
const REC_FAILED: u8 = 2;

/// Status of each image in a journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Done,
    Failed,
}

/// The journal path for an output file.
pub fn journal_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".journal");
    PathBuf::from(s)
}

/// An open journal: where finished images are appended.
pub struct Journal {
    path: PathBuf,
    file: BufWriter<File>,
    /// Per-image feature shape, known after the first finished image.
    pub feature_shape: Option<Vec<usize>>,
    pub status: Vec<Status>,
    /// (index, reason) of the images that failed.
    pub failures: Vec<(usize, String)>,
    /// A journal of another run (model, data or options changed) was found and replaced.
    pub replaced_other_run: bool,
    /// The journal replaced was written by an earlier release, in another format.
    pub older_format: bool,
}

fn rd_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn rd_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// One journal record as read back.
pub enum Record {
    Done {
        index: usize,
        shape: Vec<usize>,
        data: Vec<f32>,
    },
    Failed {
        index: usize,
        reason: String,
    },
}

/// The most values one record may hold (256 MiB of float32): more is a damaged record.
const MAX_RECORD_VALUES: usize = 1 << 26;

/// A reader that keeps the CRC-32 of what it read.
struct Crc<'a, R: Read>(&'a mut R, crc32fast::Hasher);

impl<R: Read> Read for Crc<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1.update(&buf[..n]);
        Ok(n)
    }
}

/// One record and its checksum: a record whose bytes do not match it is damaged.
fn read_record(r: &mut impl Read, skip_data: bool) -> std::io::Result<Record> {
    let mut c = Crc(r, crc32fast::Hasher::new());
    let rec = read_record_body(&mut c, skip_data)?;
    let want = c.1.finalize();
    if rd_u32(c.0)? != want {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "record checksum does not match",
        ));
    }
    Ok(rec)
}

fn read_record_body(r: &mut impl Read, skip_data: bool) -> std::io::Result<Record> {
    let mut kind = [0u8; 1];
    r.read_exact(&mut kind)?;
    let index = rd_u64(r)? as usize;
    let len = rd_u32(r)? as usize;
    match kind[0] {
        REC_OK => {
            let nd = rd_u32(r)? as usize;
            let shape = (0..nd)
                .map(|_| rd_u32(r).map(|v| v as usize))
                .collect::<std::io::Result<Vec<_>>>()?;
            // Sizes from the file are bounded before allocating: a torn or damaged record ends the
            // resume there (the rest is extracted again).
            let n = shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .filter(|&n| n <= MAX_RECORD_VALUES && nd <= 8)
                .ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "record too large")
                })?;
            if len != 4 + 4 * nd + 4 * n {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "record length mismatch",
                ));
            }
            let mut bytes = vec![0u8; 4 * n];
            r.read_exact(&mut bytes)?;
            // Features are finite numbers: a record that holds anything else was damaged.
            if bytes
                .chunks_exact(4)
                .any(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite())
            {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "record holds a value that is not finite",
                ));
            }
            let data = if skip_data {
                Vec::new()
            } else {
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            };
            Ok(Record::Done { index, shape, data })
        }
        REC_FAILED => {
            if len > 1 << 20 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "record too large",
                ));
            }
            let mut bytes = vec![0u8; len];
            r.read_exact(&mut bytes)?;
            Ok(Record::Failed {
                index,
                reason: String::from_utf8_lossy(&bytes).into_owned(),
            })
        }
        k => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unknown record kind {k}"),
        )),
    }
}

/// Refuses a file at the journal's path that is not a journal (of any version; an empty one, as a
/// kill right after its creation leaves, is one): it is the user's, never truncated.
fn refuse_foreign(path: &Path, f: &File) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let mut head = [0u8; JOURNAL_FAMILY.len()];
    // Read in place (the file's position stays at its start); a short file reads short.
    let n = f.read_at(&mut head, 0).map_err(|e| Error::io(path, e))?;
    if JOURNAL_FAMILY.starts_with(&head[..n]) {
        return Ok(());
    }
    Err(foreign(path))
}

fn foreign(path: &Path) -> Error {
    Error::output(
        path,
        "is where the journal of this output goes, and it holds something else; move it away or choose another --out",
    )
}

impl Journal {
    /// Opens the journal of a run with `fingerprint` over `total` images, continuing one left by an
    /// interrupted run with the same fingerprint (a torn last record is cut off). A journal of a
    /// different run is replaced. Returns the journal and how many images it already held.
    pub fn open(path: &Path, fingerprint: &str, total: usize) -> Result<(Journal, usize)> {
        let mut status = vec![Status::Pending; total];
        let mut failures = Vec::new();
        let mut feature_shape = None;
        let mut resumed = 0;
        let mut valid_end = None;
        let mut replaced_other_run = false;
        let mut older_format = false;
        // A link planted at `<out>.journal` is removed, never written through.
        crate::util::lock::unlink_if_linked(path)?;
        // A folder or a FIFO there is refused before an open could block on it.
        if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
            return Err(foreign(path));
        }
        if let Ok(f) = File::open(path) {
            refuse_foreign(path, &f)?;
            let mut r = BufReader::new(f);
            let header_ok = (|| -> std::io::Result<bool> {
                let mut magic = [0u8; 8];
                r.read_exact(&mut magic)?;
                let flen = rd_u32(&mut r)? as usize;
                let mut fp = vec![0u8; flen];
                r.read_exact(&mut fp)?;
                let n = rd_u64(&mut r)? as usize;
                Ok(&magic == JOURNAL_MAGIC && fp == fingerprint.as_bytes() && n == total)
            })()
            .unwrap_or(false);
            if header_ok {
                let mut pos = r.stream_position().map_err(|e| Error::io(path, e))?;
                while let Ok(rec) = read_record(&mut r, true) {
                    let (index, st) = match &rec {
                        Record::Done { index, shape, .. } => {
                            if feature_shape.get_or_insert_with(|| shape.clone()) != shape {
                                break;
                            }
                            (*index, Status::Done)
                        }
                        Record::Failed { index, .. } => (*index, Status::Failed),
                    };
                    if index >= total {
                        break;
                    }
                    if let Record::Failed { reason, .. } = rec {
                        failures.push((index, reason));
                    }
                    status[index] = st;
                    pos = r.stream_position().map_err(|e| Error::io(path, e))?;
                }
                valid_end = Some(pos);
                // An image that failed and was done later (a --strict retry) is done; one that
                // failed twice is one failure.
                failures.retain(|(i, _)| status[*i] == Status::Failed);
                let mut seen = std::collections::HashSet::new();
                failures.retain(|(i, _)| seen.insert(*i));
                // Images, not records: a retried image counts once.
                resumed = status.iter().filter(|s| **s != Status::Pending).count();
            } else {
                replaced_other_run = true;
                let mut magic = [0u8; 8];
                older_format = File::open(path)
                    .and_then(|mut f| f.read_exact(&mut magic))
                    .is_ok()
                    && magic.starts_with(JOURNAL_FAMILY)
                    && &magic != JOURNAL_MAGIC;
            }
        }
        let file = match valid_end {
            Some(end) => {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(path)
                    .map_err(|e| Error::io(path, e))?;
                f.set_len(end).map_err(|e| Error::io(path, e))?;
                let mut f = f;
                f.seek(SeekFrom::End(0)).map_err(|e| Error::io(path, e))?;
                f
            }
            None => {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(path)
                    .map_err(|e| Error::io(path, e))?;
                let mut h = Vec::new();
                h.extend_from_slice(JOURNAL_MAGIC);
                h.extend_from_slice(&(fingerprint.len() as u32).to_le_bytes());
                h.extend_from_slice(fingerprint.as_bytes());
                h.extend_from_slice(&(total as u64).to_le_bytes());
                f.write_all(&h).map_err(|e| Error::io(path, e))?;
                f
            }
        };
        Ok((
            Journal {
                path: path.to_path_buf(),
                file: BufWriter::new(file),
                feature_shape,
                status,
                failures,
                replaced_other_run,
                older_format,
            },
            resumed,
        ))
    }

    /// Appends the features of image `index`. All images must share one feature shape.
    pub fn append_done(&mut self, index: usize, shape: &[usize], data: &[f32]) -> Result<()> {
        if let Some(s) = &self.feature_shape {
            if s.as_slice() != shape {
                return Err(Error::cache(
                    &self.path,
                    format!("feature shape {shape:?} != {s:?} of earlier images"),
                ));
            }
        } else {
            self.feature_shape = Some(shape.to_vec());
        }
        let mut rec = Vec::with_capacity(17 + 4 * shape.len() + 4 * data.len());
        rec.push(REC_OK);
        rec.extend_from_slice(&(index as u64).to_le_bytes());
        rec.extend_from_slice(&((4 + 4 * shape.len() + 4 * data.len()) as u32).to_le_bytes());
        rec.extend_from_slice(&(shape.len() as u32).to_le_bytes());
        for d in shape {
            rec.extend_from_slice(&(*d as u32).to_le_bytes());
        }
        for v in data {
            rec.extend_from_slice(&v.to_le_bytes());
        }
        rec.extend_from_slice(&crc32fast::hash(&rec).to_le_bytes());
        self.file
            .write_all(&rec)
            .map_err(|e| Error::io(&self.path, e))?;
        self.status[index] = Status::Done;
        Ok(())
    }

    /// Records that image `index` could not be read.
    pub fn append_failed(&mut self, index: usize, reason: &str) -> Result<()> {
        let mut rec = vec![REC_FAILED];
        rec.extend_from_slice(&(index as u64).to_le_bytes());
        rec.extend_from_slice(&(reason.len() as u32).to_le_bytes());
        rec.extend_from_slice(reason.as_bytes());
        rec.extend_from_slice(&crc32fast::hash(&rec).to_le_bytes());
        self.file
            .write_all(&rec)
            .map_err(|e| Error::io(&self.path, e))?;
        self.status[index] = Status::Failed;
        self.failures.push((index, reason.to_string()));
        Ok(())
    }

    /// Hands what was appended to the operating system (survives the process being killed).
    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every record back, in file order, calling `f` for each.
    pub fn for_each_record(&mut self, mut f: impl FnMut(Record) -> Result<()>) -> Result<()> {
        self.flush()?;
        let mut r = BufReader::new(File::open(&self.path).map_err(|e| Error::io(&self.path, e))?);
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)
            .map_err(|e| Error::io(&self.path, e))?;
        let flen = rd_u32(&mut r).map_err(|e| Error::io(&self.path, e))? as u64;
        r.seek(SeekFrom::Current(flen as i64 + 8))
            .map_err(|e| Error::io(&self.path, e))?;
        loop {
            match read_record(&mut r, false) {
                Ok(rec) => f(rec)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(Error::io(&self.path, e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failure done later (a --strict retry) is no failure when the journal is read back; a
    /// flipped byte in a record ends the resume before it; a file of the user's is not a journal.
    #[test]
    fn records_read_back_as_written_and_a_damaged_one_ends_the_resume() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.h5.journal");
        let (mut j, resumed) = Journal::open(&p, "fp", 3).unwrap();
        assert_eq!(resumed, 0);
        j.append_failed(0, "broken").unwrap();
        j.append_done(0, &[2], &[1.0, 2.0]).unwrap();
        j.append_failed(1, "broken").unwrap();
        j.append_done(2, &[2], &[3.0, 4.0]).unwrap();
        j.flush().unwrap();
        drop(j);
        let (j, resumed) = Journal::open(&p, "fp", 3).unwrap();
        assert_eq!(resumed, 3, "images, not records");
        assert_eq!(j.status, [Status::Done, Status::Failed, Status::Done]);
        assert_eq!(j.failures, [(1, "broken".to_string())]);
        drop(j);
        // The last record's first feature byte flipped: its checksum fails, the rest is kept.
        let mut b = std::fs::read(&p).unwrap();
        let n = b.len();
        b[n - 4 - 8] ^= 0x10;
        std::fs::write(&p, &b).unwrap();
        let (j, resumed) = Journal::open(&p, "fp", 3).unwrap();
        assert_eq!(resumed, 2);
        assert_eq!(j.status[2], Status::Pending);
        drop(j);
        let notes = d.path().join("notes.journal");
        std::fs::write(&notes, "my notes").unwrap();
        assert!(Journal::open(&notes, "fp", 3).is_err());
        assert_eq!(std::fs::read_to_string(&notes).unwrap(), "my notes");
    }
}
