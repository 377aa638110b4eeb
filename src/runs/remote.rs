//! Run folders on object storage (`--run s3://bucket/runs/photos`, cargo feature `cloud`). The
//! bucket holds the same layout as a local run folder ([`super::plan`]); each command works on a
//! local mirror, `$HEADSTART_HOME/runs/<hash of the URL>/`, and syncs with the bucket:
//!
//! - `plan` writes the mirror, then uploads the manifests and, last, `plan.json` with a
//!   conditional put (a plan already there is refused, as locally);
//! - `extract --run` downloads `plan.json` and its shard's manifest, returns at once when the
//!   bucket holds the shard's marker, extracts into the mirror (its journal resumes there), uploads
//!   the cache under a name of its own (`shards/shard-KKKKK.<host>-<pid>-<time>.h5`), then creates
//!   `done/KKKKK.json` only if absent: of two copies of one task, exactly one marker names exactly
//!   one output, and the loser deletes its upload;
//! - `status`, `merge`, `train-head` and `evaluate` download the plan and the markers (and for a
//!   merge, the outputs the markers name) and work on the mirror.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::markers::{read_marker, read_once, Marker};
use super::plan::{self, Plan};
use crate::data::remote::Remote;
use crate::error::{Error, Result};

/// A run folder on object storage and its local mirror.
pub struct RemoteRun {
    pub remote: Arc<Remote>,
    /// The mirror: `$HEADSTART_HOME/runs/<first 16 hex of the URL's sha256>`.
    pub local: PathBuf,
}

/// `value` as pretty JSON with a final newline (the markers' form).
pub fn to_json(value: &impl serde::Serialize) -> Result<Vec<u8>> {
    serde_json::to_string_pretty(value)
        .map(|t| (t + "\n").into_bytes())
        .map_err(|e| Error::Config(format!("marker: {e}")))
}

/// `rel` as a local path below `dir`.
fn below(dir: &Path, rel: &str) -> PathBuf {
    rel.split('/').fold(dir.to_path_buf(), |p, c| p.join(c))
}

/// `path` relative to `dir`, `/` separated (the object key below the run's URL, and the form
/// markers record outputs in).
pub(super) fn key_of(dir: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(dir).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// The local folder to work on for run `run`: the folder itself, or for an object-storage URL its
/// mirror after downloading the plan and markers (and with `outputs`, the shard caches).
pub fn local_run(run: &Path, outputs: bool) -> Result<PathBuf> {
    match run.to_str() {
        Some(url) if crate::data::remote::is_url(url) => {
            let rr = RemoteRun::open(url)?;
            rr.pull_run(outputs)?;
            Ok(rr.local)
        }
        _ => Ok(run.to_path_buf()),
    }
}

impl RemoteRun {
    /// The run at `url` (no request yet) and its mirror folder (created).
    pub fn open(url: &str) -> Result<RemoteRun> {
        let remote = Remote::open(url)?;
        let hash = format!("{:x}", Sha256::digest(remote.url().as_bytes()));
        let local = crate::util::paths::home().join("runs").join(&hash[..16]);
        std::fs::create_dir_all(&local).map_err(|e| Error::io(&local, e))?;
        Ok(RemoteRun { remote, local })
    }

    fn upload(&self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        self.remote.put(&key_of(&self.local, path), bytes)
    }

    /// Downloads `rel` into the mirror; false when the bucket has no such object (a stale mirror
    /// copy is removed then).
    fn download(&self, rel: &str) -> Result<bool> {
        // Keys come from markers: they stay inside the mirror.
        let path = self.local.join(crate::util::paths::contained(
            rel,
            &self.local,
            "object key",
        )?);
        match self.remote.get_opt(rel)? {
            Some(bytes) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                }
                crate::util::output::Output::new(&path)
                    .replace(crate::util::output::Replace::Always)
                    .wait_for_lock()
                    .write_bytes(&bytes)?;
                Ok(true)
            }
            None => {
                let _ = std::fs::remove_file(&path);
                Ok(false)
            }
        }
    }

    /// Plans `source` into the bucket (see the module text).
    pub fn write_plan(&self, source: &Path, n: Option<usize>) -> Result<Plan> {
        if self.remote.get_opt(plan::PLAN_FILE)?.is_some() {
            return Err(Error::Config(format!(
                "{}/{}: a plan is already there; plan into a new prefix (shards and markers belong to their plan)",
                self.remote.url(),
                plan::PLAN_FILE
            )));
        }
        // The mirror of a run that was deleted from the bucket is stale: start it afresh.
        std::fs::remove_dir_all(&self.local).map_err(|e| Error::io(&self.local, e))?;
        let plan = super::listing::write_plan(source, n, &self.local)?;
        for k in 0..plan.shards {
            self.upload(&plan::manifest_path(&self.local, k))?;
        }
        let plan_file = self.local.join(plan::PLAN_FILE);
        let bytes = std::fs::read(&plan_file).map_err(|e| Error::io(&plan_file, e))?;
        if !self.remote.create_once(plan::PLAN_FILE, bytes)? {
            return Err(Error::Config(format!(
                "{}/{}: another plan was written there at the same time",
                self.remote.url(),
                plan::PLAN_FILE
            )));
        }
        Ok(plan)
    }

    /// Downloads `plan.json` into the mirror and reads it.
    pub fn pull_plan(&self) -> Result<Plan> {
        if !self.download(plan::PLAN_FILE)? {
            return Err(Error::Config(format!(
                "{}/{}: no plan there (`headstart plan --data ... --out {}` makes one)",
                self.remote.url(),
                plan::PLAN_FILE,
                self.remote.url()
            )));
        }
        plan::load_plan(&self.local)
    }

    /// Downloads what shard `k` needs: the plan and its manifest, and its marker when the bucket
    /// has one (then returned).
    pub fn pull_shard(&self, k: usize) -> Result<Plan> {
        let plan = self.pull_plan()?;
        plan.check_shard(&self.local, k)?;
        let manifest = plan::manifest_path(&self.local, k);
        self.download(&key_of(&self.local, &manifest))?;
        Ok(plan)
    }

    /// Downloads the marker at `path` (a file of the mirror) and reads it; `None` when the bucket
    /// has none. `what` names the kind of marker in errors.
    pub fn pull_marker<M: serde::de::DeserializeOwned>(
        &self,
        path: &Path,
        what: &str,
    ) -> Result<Option<M>> {
        self.download(&key_of(&self.local, path))?;
        read_once(path, what)
    }

    fn pull_extract_marker(&self, k: usize) -> Result<Option<Marker>> {
        let marker = plan::marker_path(&self.local, k);
        self.download(&key_of(&self.local, &marker))?;
        read_marker(&self.local, k)
    }

    /// Downloads the plan and every marker (a mirror marker the bucket lacks is removed), and with
    /// `outputs` the shard caches the markers name (kept when the mirror's copy has the right hash)
    /// and their manifests.
    pub fn pull_run(&self, outputs: bool) -> Result<Plan> {
        let plan = self.pull_plan()?;
        for k in 0..plan.shards {
            let Some(m) = self.pull_extract_marker(k)? else {
                continue;
            };
            let out = m.output_path(&self.local)?;
            let have = crate::util::hash::sha256_file(&out).ok();
            if outputs && have.as_deref() != Some(m.output_sha256.as_str()) {
                self.download(&m.output)?;
            }
            if outputs {
                // A merge checks each shard's rows against its manifest (kept when the mirror's
                // copy has the plan's hash).
                let manifest = plan::manifest_path(&self.local, k);
                let local = crate::util::hash::sha256_file(&manifest).ok();
                if local.is_none() || local.as_ref() != plan.manifest_sha256.get(k) {
                    self.download(&key_of(&self.local, &manifest))?;
                }
            }
        }
        Ok(plan)
    }

    /// Publishes a shard run into the mirror with marker `m` at `marker_path` (a file of the
    /// mirror): uploads its output under a name of its own, then creates the bucket's marker
    /// (`renamed(name)`: `m` naming the uploaded output) if absent. Returns whether this call's
    /// marker holds, and the marker that does (this one, or the one another task created first,
    /// whose output then stays the only one). `what` names the kind of marker in errors.
    pub fn publish_marker<M: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        output: &str,
        marker_path: &Path,
        renamed: &dyn Fn(&str) -> M,
        what: &str,
    ) -> Result<(bool, M)> {
        let marker_key = key_of(&self.local, marker_path);
        let (won, bytes) =
            self.publish(output, &marker_key, &mut |name| to_json(&renamed(name)))?;
        let marker: M = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Config(format!(
                "{}/{marker_key}: not a {what}: {e}",
                self.remote.url()
            ))
        })?;
        Ok((won, marker))
    }

    /// Downloads `rel` (a file of the run, `/` separated) into the mirror; false when the bucket
    /// has no such object.
    pub fn pull(&self, rel: &str) -> Result<bool> {
        self.download(rel)
    }

    /// Publishes a finished output of the mirror (`output`, relative): uploads it under a name of
    /// its own (`<output without extension>.<host>-<pid>-<time>.<extension>`), then creates the
    /// marker `marker_key` with `marker(name)` only if absent. Returns whether ours holds and the
    /// bytes of the marker that does; the loser's upload is deleted. The mirror keeps the uploaded
    /// file under its new name and the bucket's marker.
    pub fn publish(
        &self,
        output: &str,
        marker_key: &str,
        marker: &mut dyn FnMut(&str) -> Result<Vec<u8>>,
    ) -> Result<(bool, Vec<u8>)> {
        let local_out = below(&self.local, output);
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
        let host: String = host
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(40)
            .collect();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let (stem, ext) = output.rsplit_once('.').unwrap_or((output, "out"));
        let name = format!("{stem}.{host}-{}-{nanos}.{ext}", std::process::id());
        let bytes = std::fs::read(&local_out).map_err(|e| Error::io(&local_out, e))?;
        self.remote.put(&name, bytes)?;
        let ours = marker(&name)?;
        let keep = |this: &Self| -> Result<()> {
            let local_copy = below(&this.local, &name);
            std::fs::rename(&local_out, &local_copy).map_err(|e| Error::io(&local_copy, e))?;
            this.download(marker_key).map(|_| ())
        };
        if self.remote.create_once(marker_key, ours.clone())? {
            keep(self)?;
            return Ok((true, ours));
        }
        let theirs = self.remote.get_opt(marker_key)?.ok_or_else(|| {
            Error::Config(format!(
                "{}/{marker_key}: the bucket refused the marker as existing, yet has none",
                self.remote.url()
            ))
        })?;
        if theirs == ours {
            // Our own put, retried after its answer was lost, found the marker it had made.
            keep(self)?;
            return Ok((true, ours));
        }
        self.remote.delete(&name)?;
        self.download(marker_key)?;
        Ok((false, theirs))
    }
}
