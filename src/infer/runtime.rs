//! Finding and loading the ONNX Runtime shared library (ort's `load-dynamic`), and building sessions on
//! CPU or CUDA. The library file is checked before the first ort call, so a missing or broken file gives
//! a message naming every place tried and the command that fixes it, instead of a hang.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::{builder::GraphOptimizationLevel, Session};

use crate::error::{Error, Result};

/// The ONNX Runtime release `scripts/setup.sh` installs (from the PyPI `onnxruntime` wheel).
pub const ORT_VERSION: &str = "1.31.1";
/// The command that installs the library into the project cache.
pub const FIX_COMMAND: &str = "scripts/setup.sh";
/// Environment variable naming the library file.
pub const ORT_ENV: &str = "ORT_DYLIB_PATH";

#[cfg(target_os = "macos")]
const LIB_NAME: &str = "libonnxruntime.dylib";
#[cfg(not(target_os = "macos"))]
const LIB_NAME: &str = "libonnxruntime.so";

static ENV: OnceLock<(Environment, PathBuf)> = OnceLock::new();
static INIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Execution device for inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda,
    /// CUDA when it registers, else CPU with a notice.
    Auto,
}

/// Where and how ONNX Runtime runs a model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeConfig {
    pub device: Device,
    /// Intra-op threads (0 = ONNX Runtime's default, all cores).
    pub threads: usize,
    /// libonnxruntime.so to load (else the lookup order of [`find_library`]).
    pub ort_lib: Option<PathBuf>,
    /// CUDA only: plain float32 arithmetic in convolutions and matrix products. By default ONNX
    /// Runtime (like PyTorch's cuDNN convolutions) lets the tensor cores round operands to TF32.
    pub no_tf32: bool,
    /// CUDA only: ask ONNX Runtime for its NHWC convolution kernels (`prefer_nhwc`).
    pub cuda_nhwc: bool,
    /// Bind the model's input and output to tensors allocated once (pinned host memory and device
    /// tensors on CUDA) instead of handing ONNX Runtime new ones every batch.
    pub io_binding: bool,
    /// CUDA only: capture the model as a CUDA graph on its first batch and replay it (implies
    /// `io_binding`; every batch is padded to the first one's size).
    pub cuda_graph: bool,
}

impl RuntimeConfig {
    /// Whether batches run through bound tensors ([`RuntimeConfig::io_binding`], or a CUDA graph).
    pub fn bound(&self) -> bool {
        self.io_binding || self.cuda_graph
    }
}

/// The project cache folder the setup script fills (`<repo>/.cache/onnxruntime`).
pub fn project_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".cache")
        .join("onnxruntime")
}

/// A library file inside `dir`: `libonnxruntime.so`, else the newest `libonnxruntime.so.*`.
fn lib_in(dir: &Path) -> Option<PathBuf> {
    let plain = dir.join(LIB_NAME);
    if plain.is_file() {
        return Some(plain);
    }
    let mut versioned: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{LIB_NAME}.")))
        })
        .collect();
    versioned.sort();
    versioned.pop()
}

/// Finds the library: `explicit` (`--ort-lib`), then `$ORT_DYLIB_PATH`, `$HEADSTART_HOME/lib` (where
/// `headstart setup` installs it), the project cache, and the executable's folder. A path given explicitly must exist; the error lists everything tried.
pub fn find_library(explicit: Option<&Path>) -> Result<PathBuf> {
    let mut tried = Vec::new();
    let named = explicit
        .map(|p| (p.to_path_buf(), "--ort-lib"))
        .or_else(|| std::env::var_os(ORT_ENV).map(|p| (PathBuf::from(p), ORT_ENV)));
    if let Some((p, what)) = named {
        if p.is_file() {
            return Ok(p);
        }
        if p.is_dir() {
            if let Some(f) = lib_in(&p) {
                return Ok(f);
            }
        }
        return Err(missing(&[format!(
            "{what} = {} (no such file)",
            p.display()
        )]));
    }
    let mut dirs = vec![
        (crate::util::paths::lib_dir(), "headstart setup's folder"),
        (project_cache_dir(), "project cache"),
    ];
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push((dir, "next to the executable"));
    }
    tried.push(format!("{ORT_ENV} (not set)"));
    for (dir, what) in dirs {
        if let Some(f) = lib_in(&dir) {
            return Ok(f);
        }
        tried.push(format!("{what}: {}/{LIB_NAME}*", dir.display()));
    }
    Err(missing(&tried))
}

fn missing(tried: &[String]) -> Error {
    Error::Runtime(format!(
        "ONNX Runtime library not found. Tried:\n  - {}\nFix: run `headstart setup` (installs ONNX Runtime {ORT_VERSION} into {}), \
         or `{FIX_COMMAND}` in a checkout, or pass --ort-lib / set {ORT_ENV} to a libonnxruntime.so",
        tried.join("\n  - "),
        crate::util::paths::lib_dir().display()
    ))
}

/// Loads ONNX Runtime once per process and returns its environment and the library path.
pub fn init(explicit: Option<&Path>) -> Result<&'static (Environment, PathBuf)> {
    if let Some(env) = ENV.get() {
        return Ok(env);
    }
    // ONNX Runtime allows one environment per process: serialise first use.
    let _guard = INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(env) = ENV.get() {
        return Ok(env);
    }
    let path = find_library(explicit)?;
    // Probe the file ourselves first: a file that is not a loadable library must fail here, with its name.
    // SAFETY: loading ONNX Runtime runs its (trusted) initialisers; nothing else is called.
    unsafe { libloading::Library::new(&path) }.map_err(|e| {
        Error::Runtime(format!(
            "{}: cannot load ONNX Runtime: {e}\nFix: run `headstart setup` (or `{FIX_COMMAND}` in a checkout), or point --ort-lib / {ORT_ENV} at a working libonnxruntime.so",
            path.display()
        ))
    })?;
    let env = ort::init_from(&path)
        .map_err(|e| Error::Runtime(format!("{}: {e}\nFix: run `{FIX_COMMAND}`", path.display())))?
        .with_name("headstart")
        .build()
        .map_err(|e| Error::Runtime(format!("ONNX Runtime environment: {e}")))?;
    Ok(ENV.get_or_init(|| (env, path)))
}

/// Opens `model` on `rt.device` with `rt.threads` intra-op threads (0 = ONNX Runtime's default).
/// Returns the session, the device actually used and, when `Device::Auto` fell back to the CPU, why.
pub fn session(model: &Path, rt: &RuntimeConfig) -> Result<(Session, Device, Option<String>)> {
    let (env, _) = init(rt.ort_lib.as_deref())?;
    let build = |cuda: bool| -> Result<Session> {
        let err = |e: ort::Error<_>| Error::model(model, e.to_string());
        let mut b = Session::builder(env)
            .map_err(|e| Error::model(model, e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(err)?;
        crate::util::limits::check("threads", rt.threads, 0, crate::util::limits::MAX_THREADS)?;
        if rt.threads > 0 {
            b = b.with_intra_threads(rt.threads).map_err(err)?;
        }
        if rt.cuda_graph && rt.device == Device::Cpu {
            return Err(Error::invalid(
                "cuda_graph",
                "a CUDA graph needs the CUDA device (--device cuda or auto)",
            ));
        }
        if cuda {
            b = b
                .with_execution_providers([ort::ep::CUDA::default()
                    .with_tf32(!rt.no_tf32)
                    .with_prefer_nhwc(rt.cuda_nhwc)
                    .with_cuda_graph(rt.cuda_graph)
                    .build()
                    .error_on_failure()])
                .map_err(|e| Error::Runtime(format!("--device cuda: {e}")))?;
        }
        b.commit_from_file(model)
            .map_err(|e| Error::model(model, e.to_string()))
    };
    match rt.device {
        Device::Cpu => Ok((build(false)?, Device::Cpu, None)),
        Device::Cuda => Ok((build(true)?, Device::Cuda, None)),
        Device::Auto => match build(true) {
            Ok(s) => Ok((s, Device::Cuda, None)),
            Err(e) => {
                let first = e.to_string();
                let why = format!(
                    "CUDA unavailable ({}); using CPU",
                    first.lines().next().unwrap_or("")
                );
                Ok((build(false)?, Device::Cpu, Some(why)))
            }
        },
    }
}

/// Test helper: ONNX Runtime's CPU output `output` of `m` for one float32 input `x` of `shape`.
#[cfg(test)]
pub(crate) fn run_model_for_test(
    m: &crate::onnx::ModelProto,
    shape: &[usize],
    x: &[f32],
    output: &str,
) -> Vec<f32> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    crate::onnx::save(m, &path).unwrap();
    let rt = RuntimeConfig {
        threads: 1,
        ..Default::default()
    };
    let (mut s, _, _) = session(&path, &rt).unwrap();
    let input = m.graph.as_ref().unwrap().input[0].name.clone();
    let t = ort::value::TensorRef::from_array_view((shape.to_vec(), x)).unwrap();
    let out = s.run(ort::inputs![input => t]).unwrap();
    let (_, v) = out[output].try_extract_tensor::<f32>().unwrap();
    v.to_vec()
}
