//! Object storage: `s3://bucket/prefix`, `gs://`, `az://` and `https://` URLs, read and written
//! through the `object_store` crate when headstart is built with the cargo feature `cloud` (without
//! it, a URL is refused with the rebuild command).
//!
//! Credentials come from the standard places only: `AWS_*` variables (and the `[default]` or
//! `$AWS_PROFILE` section of `~/.aws/credentials` when no key is in the environment), `GOOGLE_*`
//! (`GOOGLE_APPLICATION_CREDENTIALS`), `AZURE_*`. They are handed to the client and never stored,
//! logged or put into errors. Every request retries with exponential backoff (object_store's retry
//! policy, 10 tries within 3 minutes); a whole-object read also retries when its body is cut off.
//!
//! [`Prefetch`] downloads a list of objects ahead of the decode workers with bounded concurrency
//! into a spool folder, at most [`Prefetch::WINDOW`] files at a time, each removed once decoded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::error::{Error, Result};

/// URL schemes read as object storage.
pub const SCHEMES: [&str; 7] = [
    "s3://", "s3a://", "gs://", "az://", "abfs://", "https://", "http://",
];

/// Whether `s` names object storage rather than a local path.
pub fn is_url(s: &str) -> bool {
    SCHEMES.iter().any(|p| s.starts_with(p))
}

/// Whether the path (as given on the command line) is an object-storage URL.
pub fn is_url_path(p: &Path) -> bool {
    p.to_str().is_some_and(is_url)
}

/// One listed object: its key below the URL's prefix, its size and a version tag (ETag, else the
/// modification time) that changes when the object does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub rel: String,
    pub size: u64,
    pub version: String,
}

fn remote_err(url: &str, msg: impl std::fmt::Display) -> Error {
    Error::Remote {
        url: url.to_string(),
        msg: msg.to_string(),
    }
}

#[cfg(not(feature = "cloud"))]
mod imp {
    use super::*;

    /// Object storage is not compiled into this build; [`Remote::open`] says how to get it.
    #[derive(Debug)]
    pub enum Remote {}

    impl Remote {
        pub fn open(url: &str) -> Result<Arc<Remote>> {
            crate::util::redact::refuse_userinfo(url)?;
            Err(remote_err(
                url,
                "this headstart was built without object storage: rebuild with `cargo install --path . --features cloud`",
            ))
        }
        pub fn url(&self) -> &str {
            match *self {}
        }
        pub fn list(&self, _: &str, _: &mut dyn FnMut(Listed) -> Result<()>) -> Result<()> {
            match *self {}
        }
        pub fn get_opt(&self, _: &str) -> Result<Option<Vec<u8>>> {
            match *self {}
        }
        pub fn put(&self, _: &str, _: Vec<u8>) -> Result<()> {
            match *self {}
        }
        pub fn create_once(&self, _: &str, _: Vec<u8>) -> Result<bool> {
            match *self {}
        }
        pub fn delete(&self, _: &str) -> Result<()> {
            match *self {}
        }
        pub(super) fn prefetch_all(&self, _: &Prefetch, _: &[usize]) {
            match *self {}
        }
    }
}

#[cfg(feature = "cloud")]
mod imp {
    use super::*;
    use futures::StreamExt;
    use object_store::path::Path as Key;
    use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig};

    /// Whole-object reads tried this many times (each request also retries inside object_store).
    const READ_TRIES: u32 = 5;
    /// Requests in flight at once while prefetching.
    const CONCURRENCY: usize = 16;

    /// An object-storage location: a store and a key prefix, with the runtime its calls run on.
    pub struct Remote {
        url: String,
        store: Arc<dyn ObjectStore>,
        prefix: String,
        rt: tokio::runtime::Runtime,
    }

    impl std::fmt::Debug for Remote {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Remote({})", self.url)
        }
    }

    /// `~/.aws/credentials` keys of the `$AWS_PROFILE` (else `default`) section, when the environment
    /// holds no access key (the files the AWS tools write; the environment wins, as in the AWS SDKs).
    fn aws_file_keys() -> Vec<(String, String)> {
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_some() {
            return Vec::new();
        }
        let Some(home) = std::env::var_os("HOME") else {
            return Vec::new();
        };
        let path = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(&home).join(".aws/credentials"));
        let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
        let Ok(text) = std::fs::read_to_string(path) else {
            return Vec::new();
        };
        let mut in_section = false;
        let mut out = Vec::new();
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                in_section = name.trim() == profile;
            } else if let (true, Some((k, v))) = (in_section, line.split_once('=')) {
                out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        out
    }

    fn build_store(url: &str) -> Result<Arc<dyn ObjectStore>> {
        // TLS through rustls on `ring` (see Cargo.toml); installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let retry = RetryConfig::default();
        let err = |e: object_store::Error| remote_err(url, e);
        let store: Arc<dyn ObjectStore> = if url.starts_with("s3://") || url.starts_with("s3a://") {
            let mut b = object_store::aws::AmazonS3Builder::from_env();
            for (k, v) in aws_file_keys() {
                if let Ok(key) = k.parse() {
                    b = b.with_config(key, v);
                }
            }
            Arc::new(b.with_url(url).with_retry(retry).build().map_err(err)?)
        } else if url.starts_with("gs://") {
            let b = object_store::gcp::GoogleCloudStorageBuilder::from_env();
            Arc::new(b.with_url(url).with_retry(retry).build().map_err(err)?)
        } else if url.starts_with("az://") || url.starts_with("abfs://") {
            let b = object_store::azure::MicrosoftAzureBuilder::from_env();
            Arc::new(b.with_url(url).with_retry(retry).build().map_err(err)?)
        } else {
            let b = object_store::http::HttpBuilder::new();
            Arc::new(b.with_url(url).with_retry(retry).build().map_err(err)?)
        };
        Ok(store)
    }

    /// The key prefix of `url` (the path after the bucket; none for `https://` stores, whose URL
    /// already points at it).
    fn url_prefix(url: &str) -> String {
        if url.starts_with("http://") || url.starts_with("https://") {
            return String::new();
        }
        let rest = url.split_once("://").map(|(_, r)| r).unwrap_or("");
        let path = rest.split_once('/').map(|(_, p)| p).unwrap_or("");
        path.trim_matches('/').to_string()
    }

    impl Remote {
        /// Connects to `url` (no request is made yet).
        pub fn open(url: &str) -> Result<Arc<Remote>> {
            crate::util::redact::refuse_userinfo(url)?;
            let url = url.trim_end_matches('/').to_string();
            let store = build_store(&url)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| remote_err(&url, format!("async runtime: {e}")))?;
            Ok(Arc::new(Remote {
                prefix: url_prefix(&url),
                url,
                store,
                rt,
            }))
        }

        /// The URL as given (without a trailing slash).
        pub fn url(&self) -> &str {
            &self.url
        }

        fn key(&self, rel: &str) -> Key {
            let rel = rel.trim_start_matches('/');
            if self.prefix.is_empty() {
                Key::from(rel)
            } else {
                Key::from(format!("{}/{rel}", self.prefix))
            }
        }

        fn at(&self, rel: &str) -> String {
            format!("{}/{rel}", self.url)
        }

        /// Lists the objects below `sub` (relative to the URL; "" for all), one page at a time:
        /// `visit` sees each object as it arrives, in the store's order.
        pub fn list(&self, sub: &str, visit: &mut dyn FnMut(Listed) -> Result<()>) -> Result<()> {
            let base = if sub.is_empty() {
                Key::from(self.prefix.as_str())
            } else {
                self.key(sub)
            };
            let strip = if self.prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", self.prefix)
            };
            self.rt.block_on(async {
                let mut stream = self.store.list(Some(&base));
                while let Some(meta) = stream.next().await {
                    let meta = meta.map_err(|e| remote_err(&self.url, e))?;
                    let key = meta.location.to_string();
                    let rel = key.strip_prefix(&strip).unwrap_or(&key).to_string();
                    let version = meta
                        .e_tag
                        .clone()
                        .unwrap_or_else(|| meta.last_modified.to_rfc3339());
                    visit(Listed {
                        rel,
                        size: meta.size,
                        version,
                    })?;
                }
                Ok(())
            })
        }

        async fn read(&self, rel: &str) -> std::result::Result<Option<Vec<u8>>, String> {
            let key = self.key(rel);
            let mut last = String::new();
            for attempt in 0..READ_TRIES {
                if attempt > 0 {
                    let ms = 100u64 << attempt.min(6);
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                }
                match self.store.get(&key).await {
                    Ok(r) => match r.bytes().await {
                        Ok(b) => return Ok(Some(b.to_vec())),
                        Err(e) => last = e.to_string(),
                    },
                    Err(object_store::Error::NotFound { .. }) => return Ok(None),
                    Err(e) => last = e.to_string(),
                }
            }
            Err(format!("read failed after {READ_TRIES} tries: {last}"))
        }

        /// The object `rel`, or `None` when it does not exist.
        pub fn get_opt(&self, rel: &str) -> Result<Option<Vec<u8>>> {
            self.rt
                .block_on(self.read(rel))
                .map_err(|e| remote_err(&self.at(rel), e))
        }

        /// Writes `bytes` to `rel`, replacing what is there.
        pub fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<()> {
            self.rt
                .block_on(self.store.put(&self.key(rel), PutPayload::from(bytes)))
                .map(|_| ())
                .map_err(|e| remote_err(&self.at(rel), e))
        }

        /// Writes `bytes` to `rel` only if no object is there (a conditional put); whether it wrote.
        pub fn create_once(&self, rel: &str, bytes: Vec<u8>) -> Result<bool> {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            let key = self.key(rel);
            let put = self.store.put_opts(&key, PutPayload::from(bytes), opts);
            match self.rt.block_on(put) {
                Ok(_) => Ok(true),
                Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                Err(object_store::Error::Precondition { .. }) => Ok(false),
                Err(e) => Err(remote_err(&self.at(rel), e)),
            }
        }

        /// Deletes `rel` (absent is fine).
        pub fn delete(&self, rel: &str) -> Result<()> {
            match self.rt.block_on(self.store.delete(&self.key(rel))) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(remote_err(&self.at(rel), e)),
            }
        }

        async fn fetch_async(&self, rel: &str, to: &Path) -> std::result::Result<(), String> {
            match self.read(rel).await? {
                Some(bytes) => std::fs::write(to, bytes)
                    .map_err(|e| format!("spool file {}: {e}", to.display())),
                None => Err("object not found (deleted since it was listed?)".into()),
            }
        }

        /// Downloads the images `order` (indices into `p`'s keys) in that order, at most
        /// [`CONCURRENCY`] requests and [`Prefetch::WINDOW`] undecoded files at a time.
        pub(super) fn prefetch_all(&self, p: &Prefetch, order: &[usize]) {
            let sem = p.permits.clone();
            self.rt.block_on(async {
                futures::stream::iter(order.iter().copied())
                    .map(|i| {
                        let sem = sem.clone();
                        async move {
                            match sem.acquire_owned().await {
                                Ok(permit) => permit.forget(),
                                Err(_) => return,
                            }
                            if p.stopped.load(Ordering::Relaxed) {
                                return;
                            }
                            let to = p.spool_path(i);
                            let r = self.fetch_async(&p.keys[i], &to).await.map(|_| to);
                            p.finish(i, r);
                        }
                    })
                    .buffered(CONCURRENCY)
                    .for_each(|_| async {})
                    .await
            });
        }
    }

    pub(super) type Permits = Arc<tokio::sync::Semaphore>;

    pub(super) fn permits(n: usize) -> Permits {
        Arc::new(tokio::sync::Semaphore::new(n))
    }

    pub(super) fn release_permit(p: &Permits) {
        p.add_permits(1)
    }

    pub(super) fn close_permits(p: &Permits) {
        p.close()
    }
}

#[cfg(not(feature = "cloud"))]
mod permits {
    pub(super) type Permits = ();
    pub(super) fn permits(_: usize) -> Permits {}
    pub(super) fn release_permit(_: &Permits) {}
    pub(super) fn close_permits(_: &Permits) {}
}
#[cfg(feature = "cloud")]
use imp::{close_permits, permits, release_permit, Permits};
#[cfg(not(feature = "cloud"))]
use permits::*;

pub use imp::Remote;

/// Objects downloaded ahead of the decode workers into a spool folder: [`Prefetch::run`] (on its own
/// thread) fetches in the workers' order; a worker [`wait`](Prefetch::wait)s for its image's local
/// file and [`release`](Prefetch::release)s it after decoding, which deletes the file and lets the
/// next download start.
pub struct Prefetch {
    remote: Arc<Remote>,
    /// The object key of each image index (relative to the remote's URL).
    keys: Vec<String>,
    dir: PathBuf,
    ready: Mutex<HashMap<usize, std::result::Result<PathBuf, String>>>,
    cv: Condvar,
    permits: Permits,
    stopped: AtomicBool,
}

impl Prefetch {
    /// Files on disk at most (downloaded and not yet decoded).
    pub const WINDOW: usize = 64;

    /// A prefetcher for `keys` (one per image index) spooling into a new folder in the system's
    /// temporary directory (removed on drop).
    pub fn new(remote: Arc<Remote>, keys: Vec<String>) -> Result<Prefetch> {
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "headstart-spool-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Prefetch {
            remote,
            keys,
            dir,
            ready: Mutex::new(HashMap::new()),
            cv: Condvar::new(),
            permits: permits(Self::WINDOW),
            stopped: AtomicBool::new(false),
        })
    }

    #[cfg_attr(not(feature = "cloud"), allow(dead_code))]
    fn spool_path(&self, i: usize) -> PathBuf {
        let ext = Path::new(&self.keys[i])
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("img");
        self.dir.join(format!("{i}.{ext}"))
    }

    #[cfg_attr(not(feature = "cloud"), allow(dead_code))]
    fn finish(&self, i: usize, r: std::result::Result<PathBuf, String>) {
        self.ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(i, r);
        self.cv.notify_all();
    }

    /// Downloads images `order` in that order; returns when all are fetched or [`stop`](Self::stop)
    /// was called.
    pub fn run(&self, order: &[usize]) {
        self.remote.prefetch_all(self, order)
    }

    /// The local file of image `i` once downloaded, or why it could not be.
    pub fn wait(&self, i: usize) -> std::result::Result<PathBuf, String> {
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = ready.get(&i) {
                return r.clone();
            }
            if self.stopped.load(Ordering::Relaxed) {
                return Err("stopped before it was downloaded".into());
            }
            ready = self.cv.wait(ready).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Image `i` is decoded: its spool file goes and the next download may start.
    pub fn release(&self, i: usize) {
        let r = self
            .ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&i);
        if let Some(Ok(path)) = r {
            let _ = std::fs::remove_file(path);
        }
        release_permit(&self.permits);
    }

    /// Stops downloading (the pipeline ended early); waiting workers return at once.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        close_permits(&self.permits);
        let _guard = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        self.cv.notify_all();
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_paths() {
        assert!(is_url("s3://bucket/photos"));
        assert!(is_url("gs://b/p"));
        assert!(is_url("https://example.org/photos/"));
        assert!(!is_url("photos/s3://x"));
        assert!(!is_url("/data/photos"));
        assert!(is_url_path(Path::new("az://container/x")));
    }
}
