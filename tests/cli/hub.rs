//! Hugging Face hub bases through a local HTTP server laid out as the hub serves files
//! (`/{repo}/resolve/{commit}/{path}`): a transformers.js-style export (`onnx/model.onnx` with an
//! external data file, `preprocessor_config.json`, `config.json`), fetched with resume, checked
//! by sha256, its preprocessing and pooling taken from the configs; the hub's cache used without a
//! download; offline and wrong hashes refused; a named base's real pin refusing other bytes.

use super::*;
use headstart::onnx::generate::vit::{Style, VitSpec};
use std::collections::BTreeMap;

const REV: &str = "0123456789abcdef0123456789abcdef01234567";

/// DINOv2's processor at 32 px: shortest edge 36, centre crop 32, bicubic, ImageNet mean/std.
const PREPROCESSOR: &str = r#"{"crop_size": {"height": 32, "width": 32}, "do_center_crop": true,
  "do_normalize": true, "do_rescale": true, "do_resize": true, "image_mean": [0.485, 0.456, 0.406],
  "image_processor_type": "BitImageProcessor", "image_std": [0.229, 0.224, 0.225], "resample": 3,
  "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 36}}"#;

/// `root/{repo}/resolve/{REV}/` with the tiny ViT export (two registers) and its configs; returns
/// the sha256 of the graph and of its data file.
fn hub_repo(root: &Path, repo: &str) -> (String, String) {
    let dir = root.join(repo).join("resolve").join(REV);
    std::fs::create_dir_all(dir.join("onnx")).unwrap();
    let mut spec = VitSpec::tiny(Style::Hub);
    spec.registers = 2;
    super::transformers::save_vit(&dir.join("onnx"), "model.onnx", &spec, true);
    std::fs::write(dir.join("preprocessor_config.json"), PREPROCESSOR).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type": "dinov2_with_registers", "num_register_tokens": 2, "hidden_size": 32}"#,
    )
    .unwrap();
    let sha = |p: &str| headstart::util::hash::sha256_file(&dir.join(p)).unwrap();
    (sha("onnx/model.onnx"), sha("onnx/model.onnx_data"))
}

/// A temp folder with the served tree (the tiny ViT repository), a headstart home and an HF_HOME:
/// (dir, serve, home, hf, graph sha256, data file sha256).
fn hub_setup() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf, String, String) {
    let d = tmp();
    let (serve, home, hf) = (
        d.path().join("serve"),
        d.path().join("home"),
        d.path().join("hf"),
    );
    let (graph_sha, data_sha) = hub_repo(&serve, "test-org/tiny-vit");
    (d, serve, home, hf, graph_sha, data_sha)
}

fn hub_bin(home: &Path, hf_home: &Path, endpoint: &str) -> Command {
    let mut c = bin();
    c.env("HEADSTART_HOME", home)
        .env("HF_HOME", hf_home)
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HEADSTART_OFFLINE")
        .env("HF_ENDPOINT", endpoint);
    c
}

#[test]
fn hub_exports_download_resume_verify_and_carry_their_preprocessing_and_pooling() {
    let (d, serve, home, hf, graph_sha, data_sha) = hub_setup();
    let server = http::Server::start(&serve, true);
    let spec = format!("hf:test-org/tiny-vit@{REV}");
    let fetch = |extra: &[&str]| {
        hub_bin(&home, &hf, &server.base)
            .args([&["fetch", spec.as_str()][..], extra].concat())
            .output()
            .unwrap()
    };
    // Unpinned: refused before any download, saying what to give.
    failed(
        &fetch(&[]),
        &["give the sha256 of onnx/model.onnx", "--sha256"],
    );
    // fetch takes the spec as NAME: the error does not speak of a --model flag it has not.
    let t = failed(
        &hub_bin(&home, &hf, &server.base)
            .args(["fetch", "hf:test-org/tiny-vit@main", "--sha256", &graph_sha])
            .output()
            .unwrap(),
        &["'hf:test-org/tiny-vit@main'", "not a commit"],
    );
    assert!(!t.contains("--model"), "{t}");
    // The graph pinned but not its data file: the data file is named.
    failed(
        &fetch(&["--sha256", &graph_sha]),
        &["onnx/model.onnx_data", "--sha256 onnx/model.onnx_data=HASH"],
    );
    let data_pin = format!("onnx/model.onnx_data={data_sha}");
    // A proxy's page served as the config is refused and never kept (the next fetch asks again).
    let served = serve.join(format!(
        "test-org/tiny-vit/resolve/{REV}/preprocessor_config.json"
    ));
    std::fs::write(&served, "<html>sign in to the proxy</html>").unwrap();
    let kept = home.join(format!(
        "downloads/hub/test-org--tiny-vit/{REV}/preprocessor_config.json"
    ));
    std::fs::remove_file(&kept).unwrap();
    failed(
        &fetch(&["--sha256", &graph_sha, "--sha256", &data_pin]),
        &["preprocessor_config.json is not JSON", "nothing was kept"],
    );
    assert!(!kept.exists());
    // Missing at the commit: the error names the ways out (a mirror, the hub cache's place).
    std::fs::remove_file(&served).unwrap();
    failed(
        &fetch(&["--sha256", &graph_sha, "--sha256", &data_pin]),
        &[
            "HTTP 404",
            "HF_ENDPOINT",
            "models--test-org--tiny-vit/snapshots",
        ],
    );
    std::fs::write(&served, PREPROCESSOR).unwrap();
    let o = fetch(&["--sha256", &graph_sha, "--sha256", &data_pin]);
    assert!(o.status.success(), "{}", text(&o));
    // Every file came from the hub's layout; the weights, cut halfway the first time, resumed.
    let seen = server.seen();
    for p in [
        "preprocessor_config.json",
        "config.json",
        "onnx/model.onnx",
        "onnx/model.onnx_data",
    ] {
        let path = format!("/test-org/tiny-vit/resolve/{REV}/{p}");
        assert!(
            seen.iter().any(|s| s.path == path),
            "{path} not asked for: {seen:?}"
        );
    }
    assert!(
        seen.iter()
            .any(|s| s.path.ends_with("model.onnx_data") && s.from > 0),
        "no resumed transfer: {seen:?}"
    );
    let fetched = home.join(format!(
        "models/hub/test-org--tiny-vit@{REV}/onnx/model.onnx"
    ));
    assert!(fetched.is_file() && fetched.with_file_name("model.onnx_data").is_file());
    let meta: BTreeMap<String, String> = onnx::metadata(&onnx::load(&fetched).unwrap())
        .into_iter()
        .collect();
    assert_eq!(meta["input_size"], "32x32");
    assert_eq!(
        (meta["resize_mode"].as_str(), meta["crop_fraction"].as_str()),
        ("crop", "0.888889")
    );
    assert_eq!(meta["interpolation"], "bicubic");
    assert_eq!(
        (
            meta["headstart_token_pool"].as_str(),
            meta["headstart_prefix_tokens"].as_str()
        ),
        ("cls+mean", "3")
    );
    assert_eq!(meta["source"], format!("hf:test-org/tiny-vit@{REV}"));
    // Fetched again under another pin: refused, not answered with the kept file.
    failed(
        &fetch(&["--sha256", &"f".repeat(64), "--sha256", &data_pin]),
        &["not as the pinned", "--force"],
    );
    assert!(fetch(&["--sha256", &graph_sha, "--sha256", &data_pin])
        .status
        .success());

    // --model hf:... finds the fetched file; extract needs no flags: preprocessing and pooling
    // come from the repository's configs.
    let data = d.path().join("data");
    tiny_dataset(&data, 2);
    let out = d.path().join("f.h5");
    let o = hub_bin(&home, &hf, &server.base)
        .args(extract_line(Path::new(&spec), &data, &out, &[]))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let cache = FeatureCache::open(&out).unwrap();
    assert_eq!(cache.meta.feature_shape, vec![64]);
    assert!(
        cache.meta.preprocess.contains("crop 0.888889")
            && cache.meta.preprocess.contains("bicubic"),
        "{}",
        cache.meta.preprocess
    );
    assert_eq!(
        cache.meta.mean,
        [0.485f32 * 255.0, 0.456 * 255.0, 0.406 * 255.0]
    );

    // A wrong pin: the download is refused and deleted, the fetched model stays as it was.
    let wrong = format!("onnx/model.onnx_data={}", "0".repeat(64));
    let _ = std::fs::remove_dir_all(home.join("downloads"));
    failed(
        &fetch(&["--force", "--sha256", &graph_sha, "--sha256", &wrong]),
        &["expected 0000", "refused and deleted"],
    );
    assert!(fetched.is_file());
}

/// The hub's own cache (`$HF_HOME/hub/models--ORG--NAME/snapshots/COMMIT/`) is used as it is,
/// with no request; offline without it is refused naming the variable; and a named base's real
/// pin refuses a file with other bytes at its place on the hub.
#[test]
fn the_hub_cache_is_used_offline_and_named_pins_refuse_other_bytes() {
    let (d, serve, home, hf, graph_sha, data_sha) = hub_setup();
    let snapshot = hf.join(format!("hub/models--test-org--tiny-vit/snapshots/{REV}"));
    std::fs::create_dir_all(snapshot.parent().unwrap()).unwrap();
    let status = Command::new("cp")
        .args([
            "-r",
            s(&serve.join(format!("test-org/tiny-vit/resolve/{REV}"))),
            s(&snapshot),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let server = http::Server::start(&serve, false);
    let spec = format!("hf:test-org/tiny-vit@{REV}");
    let data_pin = format!("onnx/model.onnx_data={data_sha}");
    let o = hub_bin(&home, &hf, &server.base)
        .env("HF_HUB_OFFLINE", "1")
        .args([
            "fetch", &spec, "--sha256", &graph_sha, "--sha256", &data_pin,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("from the hub cache"), "{}", text(&o));
    assert!(server.seen().is_empty(), "{:?}", server.seen());

    // Offline with an empty hub cache: refused, naming where the file would be.
    let empty = d.path().join("empty");
    let o = hub_bin(&d.path().join("home2"), &empty, &server.base)
        .env("HF_HUB_OFFLINE", "1")
        .args([
            "fetch", &spec, "--sha256", &graph_sha, "--sha256", &data_pin,
        ])
        .output()
        .unwrap();
    failed(&o, &["HF_HUB_OFFLINE", "models--test-org--tiny-vit"]);

    // dinov2-small's real pin against other bytes at its place on the (local) hub.
    let real = serve.join("Xenova/dinov2-small/resolve/bd222e886723524568931e43031f6d9327896fac");
    std::fs::create_dir_all(real.join("onnx")).unwrap();
    std::fs::write(real.join("preprocessor_config.json"), PREPROCESSOR).unwrap();
    std::fs::write(real.join("config.json"), r#"{"model_type": "dinov2"}"#).unwrap();
    std::fs::copy(
        serve.join(format!("test-org/tiny-vit/resolve/{REV}/onnx/model.onnx")),
        real.join("onnx/model.onnx"),
    )
    .unwrap();
    let o = hub_bin(&home, &hf, &server.base)
        .args(["fetch", "dinov2-small"])
        .output()
        .unwrap();
    failed(
        &o,
        &[
            "83141175ec78b4ff9a2bb58a4c7c264ba0054d1c2e122e5a8114b79a8d4179ea",
            "refused and deleted",
        ],
    );
    assert!(!home.join("models/hub/dinov2-small/model.onnx").exists());
}
