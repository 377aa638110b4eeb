//! One writer per output file: `<out>.lock`, held with an OS file lock (`flock`) for as long as the run
//! writes, with the owner's pid inside for the message a second run shows. The OS drops the lock when
//! its process ends, however it ends, so a lock left by a killed run is free again at once.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// An exclusive claim on an output file; released (and the lock file removed) when dropped.
pub struct OutputLock {
    path: PathBuf,
    out: PathBuf,
    /// Holds the OS lock while open.
    _file: File,
}

/// The lock file of an output: `<out>.lock`.
pub fn lock_path(out: &Path) -> PathBuf {
    let mut p = out.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

fn foreign_lock(path: &Path) -> Error {
    Error::output(
        path,
        "is where the lock of this output goes, and it holds something else; move it away or choose another --out",
    )
}

/// Why `dir` cannot hold an output, `None` when it can: it does not exist, or it is a file (as
/// in `features.h5/scores.csv`).
pub fn missing_folder(dir: &Path) -> Option<String> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => None,
        Ok(_) => Some(format!(
            "{} is a file, not a folder; choose an output path inside a folder",
            dir.display()
        )),
        Err(_) => Some(format!("the folder {} does not exist", dir.display())),
    }
}

/// Removes `path` when it is a symbolic link or a file with other hard links: headstart's own files
/// beside an output (`<out>.lock`, `<out>.journal`) are never written through a link, so a link
/// planted there cannot redirect a write onto another file (the link goes, its target stays).
pub fn unlink_if_linked(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() || (m.is_file() && m.nlink() > 1) => {
            std::fs::remove_file(path).map_err(|e| Error::io(path, e))
        }
        Ok(m) if !m.is_file() => Err(Error::output(
            path,
            "is not a regular file; headstart keeps its own lock and journal files here",
        )),
        _ => Ok(()),
    }
}

/// Whether the open `file` is the file now at `path` (a finishing owner removes the lock file, so a
/// waiter may hold a lock on a file that is no longer there).
fn is_current(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

impl OutputLock {
    /// Takes the lock of `out`, or fails at once (naming the owner's pid) while another run holds it.
    pub fn acquire(out: &Path) -> Result<OutputLock> {
        Self::take(out, false)
    }

    /// Takes the lock of `out`, waiting while another run holds it (for derived files such as a run
    /// folder's `merged.h5`, which the waiter then finds fresh and reuses).
    pub fn wait(out: &Path) -> Result<OutputLock> {
        Self::take(out, true)
    }

    /// The output this lock guards.
    pub fn output(&self) -> &Path {
        &self.out
    }

    fn take(out: &Path, wait: bool) -> Result<OutputLock> {
        let path = lock_path(out);
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Some(why) = missing_folder(parent) {
                return Err(Error::output(out, why));
            }
        }
        for _ in 0..8 {
            unlink_if_linked(&path)?;
            if std::fs::metadata(&path).is_ok_and(|m| !m.is_file()) {
                return Err(foreign_lock(&path));
            }
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            // A hard link made between the check and the open: never write into it.
            if file.metadata().is_ok_and(|m| m.nlink() > 1) {
                drop(file);
                continue;
            }
            let got = if wait {
                file.lock().map_err(TryLockError::Error)
            } else {
                file.try_lock()
            };
            match got {
                Ok(()) if is_current(&file, &path) => {
                    // A lock holds its owner's pid, or nothing (a kill right after its creation):
                    // anything else there is the user's file, never emptied nor removed.
                    let mut held = String::new();
                    let ours = (&file)
                        .take(32)
                        .read_to_string(&mut held)
                        .is_ok_and(|_| held.trim().chars().all(|c| c.is_ascii_digit()));
                    if !ours {
                        return Err(foreign_lock(&path));
                    }
                    file.set_len(0).map_err(|e| Error::io(&path, e))?;
                    file.rewind().map_err(|e| Error::io(&path, e))?;
                    write!(file, "{}", std::process::id()).map_err(|e| Error::io(&path, e))?;
                    return Ok(OutputLock {
                        path,
                        out: out.to_path_buf(),
                        _file: file,
                    });
                }
                // Locked a file its owner has just removed: try again with the one there now.
                Ok(()) => continue,
                Err(TryLockError::WouldBlock) => {
                    let owner = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse::<u32>().ok())
                        .map_or("unknown pid".to_string(), |p| format!("pid {p}"));
                    return Err(Error::cache(
                        out,
                        format!(
                            "another headstart run ({owner}) is writing this file; wait for it to finish (the lock is {})",
                            path.display()
                        ),
                    ));
                }
                Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
        }
        Err(Error::cache(
            out,
            format!("could not take the lock {}", path.display()),
        ))
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Removed while still locked; a waiter that opened the old file sees it is gone (is_current).
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Eight threads (each its own open file, as separate processes would have) take and release the
    /// lock 200 times each: never two holders at once, and every refusal names the holder.
    #[test]
    fn racing_writers_never_hold_the_lock_together() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("f.h5");
        let holders = AtomicUsize::new(0);
        let (taken, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..200 {
                        match OutputLock::acquire(&out) {
                            Ok(lock) => {
                                assert_eq!(
                                    holders.fetch_add(1, Ordering::SeqCst),
                                    0,
                                    "two holders"
                                );
                                std::thread::yield_now();
                                holders.fetch_sub(1, Ordering::SeqCst);
                                taken.fetch_add(1, Ordering::SeqCst);
                                drop(lock);
                            }
                            Err(e) => {
                                assert!(e.to_string().contains("another headstart run"), "{e}");
                                refused.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                });
            }
        });
        assert!(taken.load(Ordering::SeqCst) > 0);
        assert_eq!(
            taken.load(Ordering::SeqCst) + refused.load(Ordering::SeqCst),
            1600
        );
        assert!(
            !lock_path(&out).exists(),
            "the last holder removes the file"
        );
    }

    /// A lock file without a lock (its run was killed) is taken; a held one is refused with the pid.
    #[test]
    fn stale_files_are_taken_and_held_locks_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("f.h5");
        std::fs::write(lock_path(&out), "999999999").unwrap();
        let held = OutputLock::acquire(&out).unwrap();
        let again = OutputLock::acquire(&out).err().unwrap().to_string();
        assert!(
            again.contains(&format!("pid {}", std::process::id())),
            "{again}"
        );
        drop(held);
        assert!(OutputLock::acquire(&out).is_ok());
    }
}
