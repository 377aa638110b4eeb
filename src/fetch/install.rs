//! `headstart setup`: ONNX Runtime's shared library, taken out of the PyPI `onnxruntime` wheel (fetched
//! with `pip download`, or a wheel given by hand) and installed into `$HEADSTART_HOME/lib`, where the
//! runtime lookup ([`crate::infer::runtime::find_library`]) finds it from any folder, so an installed
//! `headstart` binary works without the checkout's `scripts/setup.sh`.
//!
//! The library inside the wheel is the same for every Python version of a platform; its sha256 is
//! pinned per platform and checked before the file is installed (by rename).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::events::{Event, Reporter};
use crate::infer::runtime::ORT_VERSION;

/// The library file name inside the wheel and its pinned sha256, for this platform.
fn pinned() -> Option<(&'static str, &'static str)> {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => Some((
            "libonnxruntime.so.1.31.1",
            "fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3",
        )),
        ("linux", "aarch64") => Some((
            "libonnxruntime.so.1.31.1",
            "8aa3b76b28c778a2b1dd660d34161adb1d508c9ccd04ff9dc80e26eca5df8467",
        )),
        _ => None,
    }
}

pub use crate::util::paths::lib_dir;

/// Settings of one install.
#[derive(Debug, Clone, Default)]
pub struct InstallConfig {
    /// Install from this wheel instead of downloading one.
    pub wheel: Option<PathBuf>,
    /// Install again even if the library is there.
    pub force: bool,
}

/// What an install did.
#[derive(Debug, Clone)]
pub struct Installed {
    pub path: PathBuf,
    /// It was already there (with the pinned hash).
    pub present: bool,
}

/// Installs ONNX Runtime [`ORT_VERSION`] into [`lib_dir`].
pub fn install_onnxruntime(cfg: &InstallConfig, rep: &dyn Reporter) -> Result<Installed> {
    let Some((file, sha256)) = pinned() else {
        return Err(Error::Config(format!(
            "no pinned ONNX Runtime library for {}-{}; install ONNX Runtime {ORT_VERSION} yourself and set ORT_DYLIB_PATH to its library",
            std::env::consts::OS,
            std::env::consts::ARCH
        )));
    };
    let dir = lib_dir();
    let dest = dir.join(file);
    if dest.is_file() && !cfg.force && crate::util::hash::sha256_file(&dest)? == sha256 {
        return Ok(Installed {
            path: dest,
            present: true,
        });
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let by_hand = format!(
        "or download the wheel yourself (`python3 -m pip download --no-deps onnxruntime=={ORT_VERSION}`) and run `headstart setup --wheel FILE`"
    );
    let take = |wheel: &Path| -> Result<()> {
        let bytes = wheel_member(wheel, file)?;
        let got = {
            use sha2::{Digest, Sha256};
            format!("{:x}", Sha256::digest(&bytes))
        };
        if got != sha256 {
            return Err(Error::model(
                wheel,
                format!("{file} has sha256 {got}, expected {sha256}: refused (not ONNX Runtime {ORT_VERSION} as published)"),
            ));
        }
        crate::util::output::Output::new(&dest)
            .replace(crate::util::output::Replace::Always)
            .write_bytes(&bytes)
    };
    match &cfg.wheel {
        Some(w) => take(w)?,
        None => {
            if super::offline() {
                return Err(Error::Config(format!(
                    "ONNX Runtime is not installed and {}=1 forbids the network; unset it, {by_hand}",
                    super::OFFLINE_ENV
                )));
            }
            rep.report(Event::Detail(&format!(
                "downloading onnxruntime=={ORT_VERSION} with pip"
            )));
            super::pip_download("onnxruntime", ORT_VERSION, &dir, &by_hand, take)?;
        }
    }
    rep.report(Event::Detail(&format!("installed {}", dest.display())));
    Ok(Installed {
        path: dest,
        present: false,
    })
}

/// The bytes of the wheel's member whose file name is `file` (anywhere in the archive).
fn wheel_member(wheel: &Path, file: &str) -> Result<Vec<u8>> {
    crate::util::paths::check_regular(wheel)?;
    let f = std::fs::File::open(wheel).map_err(|e| Error::io(wheel, e))?;
    let mut z = zip::ZipArchive::new(f)
        .map_err(|e| Error::model(wheel, format!("not a wheel (zip): {e}")))?;
    let name = z
        .file_names()
        .flatten()
        .find(|n| n.rsplit('/').next() == Some(file))
        .map(|n| n.to_string())
        .ok_or_else(|| {
            Error::model(
                wheel,
                format!(
                    "no {file} inside: not an onnxruntime {ORT_VERSION} wheel for this platform"
                ),
            )
        })?;
    let mut entry = z
        .by_name(&name)
        .map_err(|e| Error::model(wheel, format!("{name}: {e}")))?;
    crate::util::limits::read_capped(&mut entry, crate::util::limits::MAX_MEMBER_BYTES)
        .map_err(|e| Error::model(wheel, format!("{name}: {e}")))
}
