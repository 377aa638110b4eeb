//! One way to write an output file. Every file headstart writes for a user (caches, heads, models,
//! score files, plans, markers, reports, plots) goes through [`Output`]:
//!
//! 1. **refused before any work** when the target resolves (symlinks followed) to one of the
//!    command's inputs, or lies inside an input folder, or exists and the command's rule
//!    ([`Replace`]) does not replace it;
//! 2. an exclusive **lock** on the target (`<out>.lock`, [`super::lock`]) for the whole write, so two
//!    runs never write one file;
//! 3. the bytes go to a **unique temporary file** beside the target (created exclusively, never a
//!    fixed `.tmp` name another run could share), which is **fsynced** and **renamed** over the
//!    target, and the folder fsynced: a reader sees the old file or the whole new one, and a crash
//!    leaves at most a `.NAME.PID.N.tmp` file, never a half-written output.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::lock::OutputLock;
use super::paths::resolve;
use crate::error::{Error, Result};

/// What may happen to a file already at the target.
#[derive(Clone, Copy)]
pub enum Replace<'a> {
    /// Refused: the command has no rule that replaces an existing file.
    Never,
    /// Replaced (`--force`, or a derived file the command owns).
    Always,
    /// Replaced only when the check passes: it says (true) that the file is one headstart wrote and
    /// this command would write; `what` names that kind of file for the refusal.
    If {
        what: &'a str,
        check: &'a dyn Fn(&Path) -> bool,
    },
}

/// An output file, its command's inputs and its replacement rule.
pub struct Output<'a> {
    target: PathBuf,
    inputs: Vec<PathBuf>,
    replace: Replace<'a>,
    hint: &'a str,
    wait: bool,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Removes the temporary file unless it was renamed into place.
struct TmpGuard(Option<PathBuf>);

impl Drop for TmpGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A temporary file that replaces its target when committed ([`Output::stage`]).
pub struct Staged {
    guard: TmpGuard,
    tmp: PathBuf,
    target: PathBuf,
    dir: PathBuf,
    /// Fsynced already ([`write_together`] syncs every part before the first rename).
    synced: bool,
}

impl Staged {
    /// The temporary file to write.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Fsyncs the temporary file.
    fn sync(&self) -> Result<()> {
        let f = std::fs::File::open(&self.tmp).map_err(|e| Error::io(&self.tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&self.tmp, e))
    }

    /// Fsyncs the temporary file and renames it over the target.
    pub fn commit(mut self) -> Result<()> {
        if !self.synced {
            self.sync()?;
        }
        std::fs::rename(&self.tmp, &self.target).map_err(|e| Error::io(&self.target, e))?;
        self.guard.0 = None;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// What writes an output's temporary file (a part of [`write_together`]).
pub type WriteTmp<'o> = Box<dyn FnOnce(&Path) -> Result<()> + 'o>;

/// One part of [`write_together`]: an output and what writes its temporary file.
pub type Part<'o, 'a> = (&'o Output<'a>, WriteTmp<'o>);

/// Writes several outputs as one (a head and its history, an audit's tables): each target is
/// checked and locked, each temporary file written and fsynced, and only then are they renamed into
/// place, in order. An error before the renames (a full disk, an unwritable folder for the second
/// file) leaves every target as it was; it used to leave a new first file beside an old second.
pub fn write_together(parts: Vec<Part<'_, '_>>) -> Result<()> {
    // One file cannot be two parts: its lock would be taken twice.
    for (i, (a, _)) in parts.iter().enumerate() {
        if let Some((b, _)) = parts[..i]
            .iter()
            .find(|(b, _)| resolve(&b.target) == resolve(&a.target))
        {
            return Err(Error::output(
                &a.target,
                format!(
                    "is also the output {}; give the outputs different names",
                    b.target.display()
                ),
            ));
        }
    }
    let mut locks = Vec::with_capacity(parts.len());
    for (o, _) in &parts {
        o.check()?;
        locks.push(match o.wait {
            true => OutputLock::wait(&o.target)?,
            false => OutputLock::acquire(&o.target)?,
        });
    }
    let mut staged = Vec::with_capacity(parts.len());
    for ((o, write), lock) in parts.into_iter().zip(&locks) {
        o.check()?;
        let mut s = o.stage(lock)?;
        write(s.path())?;
        s.sync()?;
        s.synced = true;
        staged.push(s);
    }
    // Each target there before is kept (a hard link, else a copy, named as a temporary file so a
    // crash leaves nothing the next write does not clean) until all are in place: a rename that
    // fails (a target made immutable, a folder gone) puts back the ones before it.
    let mut kept: Vec<Kept> = staged.iter().map(|s| Kept::of(&s.target)).collect();
    let mut failed = None;
    for (i, s) in staged.into_iter().enumerate() {
        if let Err(e) = s.commit() {
            failed = Some((i, e));
            break;
        }
    }
    let notes = match &failed {
        Some((i, _)) => kept[..*i].iter_mut().filter_map(Kept::put_back).collect(),
        None => Vec::new(),
    };
    for k in &kept {
        if let Some(old) = &k.old {
            let _ = std::fs::remove_file(old);
        }
    }
    match failed {
        None => Ok(()),
        Some((_, e)) if notes.is_empty() => Err(e),
        Some((i, e)) => Err(Error::output(
            &kept[i].target,
            format!("{e}; {}", notes.join("; ")),
        )),
    }
}

/// Files that several writes replace one after the other (each through the one writer), kept as
/// they were until [`Restore::done`]: on an error, [`Restore::undo`] puts every one
/// back (a target that was not there is removed), so a failed last write leaves no new first file.
/// The writes must go through [`Output`], which replaces a file by renaming: the kept hard link
/// shares the old file's data, which a write in place would change.
pub struct Restore(Vec<Kept>);

impl Restore {
    /// Keeps each of `targets` that exists (a hard link, else a copy, beside it).
    pub fn keep(targets: &[&Path]) -> Restore {
        Restore(targets.iter().map(|t| Kept::of(t)).collect())
    }

    /// The writes went through: the kept copies go.
    pub fn done(self) {
        for k in &self.0 {
            if let Some(old) = &k.old {
                let _ = std::fs::remove_file(old);
            }
        }
    }

    /// A write failed: every target is put back, and `e` says where a previous file stays when one
    /// cannot be.
    pub fn undo(mut self, e: Error) -> Error {
        let notes: Vec<String> = self.0.iter_mut().filter_map(Kept::put_back).collect();
        let first = self.0.first().map(|k| k.target.clone());
        self.done();
        match (notes.is_empty(), first) {
            (false, Some(t)) => Error::output(&t, format!("{e}; {}", notes.join("; "))),
            _ => e,
        }
    }
}

/// A target of [`write_together`] as it was before: whether it existed, and its kept copy.
struct Kept {
    target: PathBuf,
    existed: bool,
    old: Option<PathBuf>,
}

impl Kept {
    /// `target` as it is now.
    fn of(target: &Path) -> Kept {
        let existed = std::fs::symlink_metadata(target).is_ok();
        Kept {
            target: target.to_path_buf(),
            existed,
            old: existed
                .then(|| Output::new(target).keep_old(target))
                .flatten(),
        }
    }

    /// Puts the target back as it was; says so when it cannot (and where the previous file is).
    fn put_back(&mut self) -> Option<String> {
        let t = self.target.display();
        match self.old.take() {
            Some(old) => {
                if std::fs::rename(&old, &self.target).is_ok() {
                    return None;
                }
                // Under a name no later write cleans away, since it is the only copy left.
                for n in 0..100 {
                    let mut keep = self.target.clone().into_os_string();
                    keep.push(format!(".previous{}", n + 1));
                    let keep = PathBuf::from(keep);
                    if std::fs::symlink_metadata(&keep).is_err()
                        && std::fs::rename(&old, &keep).is_ok()
                    {
                        return Some(format!(
                            "the previous {t} could not be put back: it is kept as {}",
                            keep.display()
                        ));
                    }
                }
                let note = format!(
                    "the previous {t} could not be put back: it is kept as {}",
                    old.display()
                );
                Some(note)
            }
            None if !self.existed => {
                let _ = std::fs::remove_file(&self.target);
                None
            }
            None => Some(format!(
                "{t} holds its new version (no copy of the previous one could be made)"
            )),
        }
    }
}

impl<'a> Output<'a> {
    /// `target`, with no inputs and [`Replace::Never`].
    pub fn new(target: &Path) -> Output<'a> {
        Output {
            target: target.to_path_buf(),
            inputs: Vec::new(),
            replace: Replace::Never,
            hint: "",
            wait: false,
        }
    }

    /// A file or folder the command reads: the target may not be it, nor lie inside it.
    pub fn input(mut self, p: &Path) -> Self {
        self.inputs.push(p.to_path_buf());
        self
    }

    /// Several inputs.
    pub fn inputs<P: AsRef<Path>>(mut self, ps: impl IntoIterator<Item = P>) -> Self {
        self.inputs
            .extend(ps.into_iter().map(|p| p.as_ref().to_path_buf()));
        self
    }

    pub fn replace(mut self, r: Replace<'a>) -> Self {
        self.replace = r;
        self
    }

    /// Said after a refusal to replace an existing file (e.g. "pass --force to replace it").
    pub fn hint(mut self, h: &'a str) -> Self {
        self.hint = h;
        self
    }

    /// Waits for the lock while another run holds it, instead of failing at once (for files
    /// several runs may fetch at the same moment, like a run folder's local mirror).
    pub fn wait_for_lock(mut self) -> Self {
        self.wait = true;
        self
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The refusals of step 1, without writing anything (commands call it before their work, so a
    /// refusal costs nothing; [`Output::write`] calls it again under the lock).
    pub fn check(&self) -> Result<()> {
        let t = &self.target;
        if t.as_os_str().is_empty() || t.file_name().is_none() {
            return Err(Error::output(t, "names no file"));
        }
        let rt = resolve(t);
        let t_meta = std::fs::metadata(t).ok();
        let resolved: Vec<(&PathBuf, PathBuf)> = self
            .inputs
            .iter()
            .filter_map(|i| i.canonicalize().ok().map(|r| (i, r)))
            .collect();
        for (input, ri) in &resolved {
            let same_inode = match (&t_meta, std::fs::metadata(ri)) {
                (Some(a), Ok(b)) => {
                    use std::os::unix::fs::MetadataExt;
                    a.dev() == b.dev() && a.ino() == b.ino()
                }
                _ => false,
            };
            if rt == *ri || same_inode {
                return Err(Error::output(
                    t,
                    format!(
                        "is an input of this command ({}); writing it would destroy the input: choose another output",
                        input.display()
                    ),
                ));
            }
        }
        for (input, ri) in &resolved {
            if ri.is_dir() && rt.starts_with(ri) {
                return Err(Error::output(
                    t,
                    format!(
                        "lies inside the input folder {}; write the output outside it",
                        input.display()
                    ),
                ));
            }
        }
        if let Some(why) = crate::util::lock::missing_folder(&self.dir()) {
            return Err(Error::output(t, why));
        }
        if let Some(m) = &t_meta {
            if m.is_dir() {
                return Err(Error::output(t, "is a folder, not a file"));
            }
            // A FIFO, a device or a socket is never read (a read could block) nor replaced.
            if !m.is_file() {
                return Err(Error::output(
                    t,
                    "exists and is not a regular file (a FIFO, a device or a socket); choose another output",
                ));
            }
            let hint = if self.hint.is_empty() {
                String::new()
            } else {
                format!("; {}", self.hint)
            };
            match &self.replace {
                Replace::Always => {}
                Replace::Never => {
                    return Err(Error::output(
                        t,
                        format!("exists; refusing to overwrite it{hint}"),
                    ))
                }
                Replace::If { what, check } => {
                    if !check(t) {
                        return Err(Error::output(
                            t,
                            format!("exists and is not {what}; refusing to overwrite it{hint}"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Steps 1-3: takes the target's lock (failing at once while another run holds it), checks,
    /// and calls `write` with a fresh temporary path beside the target (an empty file, created
    /// exclusively), then fsyncs and renames it into place. On an error nothing changes at the
    /// target.
    pub fn write<T>(&self, write: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
        self.check()?;
        let lock = if self.wait {
            OutputLock::wait(&self.target)?
        } else {
            OutputLock::acquire(&self.target)?
        };
        self.write_locked(&lock, write)
    }

    /// [`Output::write`] under a lock the caller already holds (a command that locks its output for
    /// the whole run, like `extract`).
    pub fn write_locked<T>(
        &self,
        lock: &OutputLock,
        write: impl FnOnce(&Path) -> Result<T>,
    ) -> Result<T> {
        if lock.output() != self.target {
            return Err(Error::output(
                &self.target,
                format!("written under the lock of {}", lock.output().display()),
            ));
        }
        self.check()?;
        self.remove_stale_tmps();
        let tmp = self.create_tmp()?;
        let mut guard = TmpGuard(Some(tmp.clone()));
        let value = write(&tmp)?;
        let f = std::fs::File::open(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, &self.target).map_err(|e| Error::io(&self.target, e))?;
        guard.0 = None;
        if let Ok(d) = std::fs::File::open(self.dir()) {
            let _ = d.sync_all();
        }
        Ok(value)
    }

    /// A temporary file beside the target for a writer that streams into it over a whole run
    /// (under `lock`, which the caller holds): [`Staged::commit`] fsyncs it and renames it over
    /// the target; dropped uncommitted, it is removed and the target is as it was.
    pub fn stage(&self, lock: &OutputLock) -> Result<Staged> {
        if lock.output() != self.target {
            return Err(Error::output(
                &self.target,
                format!("staged under the lock of {}", lock.output().display()),
            ));
        }
        self.remove_stale_tmps();
        let tmp = self.create_tmp()?;
        Ok(Staged {
            guard: TmpGuard(Some(tmp.clone())),
            tmp,
            target: self.target.clone(),
            dir: self.dir(),
            synced: false,
        })
    }

    /// Writes `bytes` (steps 1-3).
    pub fn write_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.write(|tmp| std::fs::write(tmp, bytes).map_err(|e| Error::io(tmp, e)))
    }

    fn dir(&self) -> PathBuf {
        match self.target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// The target's file name.
    fn name(&self) -> String {
        self.target
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    }

    /// Removes the temporary files of this target left by runs that died (`.NAME.PID.N.tmp` whose
    /// process is gone); called under the target's lock, so no live writer owns them.
    fn remove_stale_tmps(&self) {
        let name = self.name();
        let prefix = format!(".{name}.");
        let Ok(entries) = std::fs::read_dir(self.dir()) else {
            return;
        };
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = file
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(".tmp"))
            else {
                continue;
            };
            let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            // SAFETY: signal 0 only asks whether the process exists.
            let alive = pid == std::process::id() as i32
                || unsafe { libc::kill(pid, 0) } == 0
                || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
            if !alive {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// The target kept under a fresh temporary name: a hard link, else (a file system without
    /// them) a copy; `None` when neither can be made.
    fn keep_old(&self, target: &Path) -> Option<PathBuf> {
        let (name, dir) = (self.name(), self.dir());
        loop {
            let n = SEQ.fetch_add(1, Ordering::Relaxed);
            let old = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
            match std::fs::hard_link(target, &old) {
                Ok(()) => return Some(old),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(_) => break,
            }
        }
        let copy = self.create_tmp().ok()?;
        match std::fs::copy(target, &copy) {
            Ok(_) => Some(copy),
            Err(_) => {
                let _ = std::fs::remove_file(&copy);
                None
            }
        }
    }

    /// `.NAME.PID.N.tmp` beside the target, created exclusively.
    fn create_tmp(&self) -> Result<PathBuf> {
        let name = self.name();
        let dir = self.dir();
        loop {
            let n = SEQ.fetch_add(1, Ordering::Relaxed);
            let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
            {
                Ok(_) => return Ok(tmp),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&tmp, e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kept files come back on undo (a new one goes), and stay as written on done; nothing is
    /// left beside them either way.
    #[test]
    fn kept_files_come_back_when_a_later_write_fails() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.txt"), dir.path().join("b.txt"));
        std::fs::write(&a, "old a").unwrap();
        let r = Restore::keep(&[&a, &b]);
        Output::new(&a)
            .replace(Replace::Always)
            .write_bytes(b"new a")
            .unwrap();
        std::fs::write(&b, "new b").unwrap();
        let e = r.undo(Error::output(&b, "disk full"));
        assert!(e.to_string().contains("disk full"), "{e}");
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "old a");
        assert!(!b.exists());
        let r = Restore::keep(&[&a]);
        std::fs::write(&a, "newer a").unwrap();
        r.done();
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "newer a");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A previous file that cannot be put back (a folder took its name) is kept under a name
        // no later write cleans, and the error says where; a second such failure takes the next name.
        for n in 1..=2 {
            let r = Restore::keep(&[&a]);
            std::fs::remove_file(&a).unwrap();
            std::fs::create_dir_all(a.join("inside")).unwrap();
            let e = r.undo(Error::output(&a, "disk full")).to_string();
            let kept = dir.path().join(format!("a.txt.previous{n}"));
            assert!(
                e.contains("disk full") && e.contains("could not be put back"),
                "{e}"
            );
            assert!(e.contains(&kept.display().to_string()), "{e}");
            assert_eq!(std::fs::read_to_string(&kept).unwrap(), "newer a");
            std::fs::remove_dir_all(&a).unwrap();
            std::fs::write(&a, "newer a").unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }

    /// Written together: when the second part fails, neither target changes and no temporary
    /// file is left; when both succeed, both are replaced.
    #[test]
    fn parts_written_together_change_nothing_when_one_fails() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.txt"), dir.path().join("b.txt"));
        std::fs::write(&a, "old a").unwrap();
        std::fs::write(&b, "old b").unwrap();
        let (oa, ob) = (
            Output::new(&a).replace(Replace::Always),
            Output::new(&b).replace(Replace::Always),
        );
        let put = |text: &'static str| -> WriteTmp<'static> {
            Box::new(move |p: &Path| std::fs::write(p, text).map_err(|e| Error::io(p, e)))
        };
        let fail: WriteTmp = Box::new(|p: &Path| Err(Error::output(p, "disk full")));
        let e = write_together(vec![(&oa, put("new a")), (&ob, fail)]).unwrap_err();
        assert!(e.to_string().contains("disk full"), "{e}");
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "old a");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "old b");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "temporary files left"
        );
        write_together(vec![(&oa, put("new a")), (&ob, put("new b"))]).unwrap();
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "new a");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "new b");
        // The second rename fails (a folder took the name after the checks): the first target is
        // put back as it was.
        let c = dir.path().join("c.txt");
        let oc = Output::new(&c);
        let sabotage: WriteTmp = Box::new(|p: &Path| {
            std::fs::write(p, "new c").unwrap();
            std::fs::create_dir(dir.path().join("c.txt")).unwrap();
            Ok(())
        });
        assert!(write_together(vec![(&oa, put("newer a")), (&oc, sabotage)]).is_err());
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "new a");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 3, "temporary or kept files left: {left:?}");
        // A first target that was not there before is removed again.
        let (n, e) = (dir.path().join("n.txt"), dir.path().join("e.txt"));
        let (on, oe) = (Output::new(&n), Output::new(&e));
        let sabotage: WriteTmp = Box::new(|p: &Path| {
            std::fs::write(p, "new e").unwrap();
            std::fs::create_dir(dir.path().join("e.txt")).unwrap();
            Ok(())
        });
        assert!(write_together(vec![(&on, put("new n")), (&oe, sabotage)]).is_err());
        assert!(!n.exists());
        // One file named twice (here through a link) is refused before anything is written.
        std::os::unix::fs::symlink(&a, dir.path().join("alias.txt")).unwrap();
        let alias = Output::new(&dir.path().join("alias.txt")).replace(Replace::Always);
        let err = write_together(vec![(&oa, put("x")), (&alias, put("y"))]).unwrap_err();
        assert!(err.to_string().contains("is also the output"), "{err}");
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "new a");
    }

    #[test]
    fn an_input_or_a_file_inside_an_input_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model.onnx");
        std::fs::write(&model, b"model").unwrap();
        let photos = dir.path().join("photos");
        std::fs::create_dir(&photos).unwrap();
        std::os::unix::fs::symlink(&model, dir.path().join("alias.onnx")).unwrap();
        std::fs::hard_link(&model, dir.path().join("hard.onnx")).unwrap();
        for (target, want) in [
            (model.clone(), "is an input"),
            (dir.path().join("alias.onnx"), "is an input"),
            (dir.path().join("hard.onnx"), "is an input"),
            (dir.path().join("photos/../model.onnx"), "is an input"),
            (photos.join("cache.h5"), "inside the input folder"),
            (
                photos.join("new/deeper/cache.h5"),
                "inside the input folder",
            ),
        ] {
            let out = Output::new(&target)
                .input(&model)
                .input(&photos)
                .replace(Replace::Always);
            let e = out.write_bytes(b"x").unwrap_err().to_string();
            assert!(e.contains(want), "{}: {e}", target.display());
        }
        assert_eq!(std::fs::read(&model).unwrap(), b"model");
        let ok = dir.path().join("cache.h5");
        Output::new(&ok)
            .input(&model)
            .input(&photos)
            .write_bytes(b"x")
            .unwrap();
        assert_eq!(std::fs::read(&ok).unwrap(), b"x");
    }

    #[test]
    fn existing_files_follow_the_rule_and_failures_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("out.csv");
        std::fs::write(&t, b"old").unwrap();
        let e = Output::new(&t)
            .hint("pass --force")
            .write_bytes(b"new")
            .unwrap_err()
            .to_string();
        assert!(e.contains("exists") && e.contains("--force"), "{e}");
        let ours = |p: &Path| std::fs::read(p).is_ok_and(|b| b.starts_with(b"ours"));
        let rule = Replace::If {
            what: "a file of ours",
            check: &ours,
        };
        let e = Output::new(&t)
            .replace(rule)
            .write_bytes(b"new")
            .unwrap_err();
        assert!(e.to_string().contains("not a file of ours"), "{e}");
        std::fs::write(&t, b"ours 1").unwrap();
        let rule = Replace::If {
            what: "a file of ours",
            check: &ours,
        };
        Output::new(&t)
            .replace(rule)
            .write_bytes(b"ours 2")
            .unwrap();
        assert_eq!(std::fs::read(&t).unwrap(), b"ours 2");
        // A failing writer leaves the old file and no temporary file.
        let e = Output::new(&t)
            .replace(Replace::Always)
            .write(|tmp| -> Result<()> {
                std::fs::write(tmp, b"half").unwrap();
                Err(Error::Config("disk full".into()))
            })
            .unwrap_err();
        assert!(e.to_string().contains("disk full"));
        assert_eq!(std::fs::read(&t).unwrap(), b"ours 2");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.csv")]);
    }

    /// Eight threads write one target at once, 50 times each: every write that succeeds leaves a
    /// whole file of one writer; the others are refused naming the lock; no temporary file is left.
    #[test]
    fn racing_writers_leave_one_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("f.bin");
        let ok = AtomicU64::new(0);
        std::thread::scope(|s| {
            for w in 0..8u8 {
                let (t, ok) = (&t, &ok);
                s.spawn(move || {
                    for _ in 0..50 {
                        let r = Output::new(t).replace(Replace::Always).write(|tmp| {
                            let mut f = std::fs::File::create(tmp).unwrap();
                            for _ in 0..64 {
                                std::io::Write::write_all(&mut f, &[w; 1024]).unwrap();
                            }
                            Ok(())
                        });
                        match r {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => {
                                assert!(e.to_string().contains("another headstart run"), "{e}")
                            }
                        }
                        let b = std::fs::read(t).unwrap_or_default();
                        assert!(b.is_empty() || (b.len() == 65536 && b.iter().all(|&x| x == b[0])));
                    }
                });
            }
        });
        assert!(ok.load(Ordering::SeqCst) > 0);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("f.bin")]);
    }
}
