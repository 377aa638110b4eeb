//! CLI tests: bad input, interruption.

use super::*;

#[test]
fn corrupt_images_are_skipped_and_listed_or_fatal_with_strict() {
    let (d, data, m, out) = tiny_setup(2);
    std::fs::write(data.join("train/a/garbage.jpg"), b"this is not a jpeg").unwrap();
    let good = std::fs::read(data.join("train/b/img1.JPG")).unwrap();
    std::fs::write(data.join("train/b/truncated.jpg"), &good[..good.len() / 3]).unwrap();
    std::fs::write(data.join("test/b/empty.png"), b"").unwrap();
    let log = extract(
        &m,
        &data,
        &out,
        &["--preprocess", "tf", "--progress", "none"],
    );
    // A text file named .jpg is said to be no image (not the JPEG decoder's complaint).
    assert!(
        log.contains(
            "garbage.jpg: skipped: cannot decode image: not an image: its content is no JPEG"
        ),
        "{log}"
    );
    assert!(
        log.contains("empty.png: skipped: cannot decode image: empty file"),
        "{log}"
    );
    assert!(log.contains("8 of 11 images, 3 skipped"), "{log}");
    let c = FeatureCache::open(&out).unwrap();
    let train = c.read_split("train").unwrap();
    assert_eq!(train.len(), 4);
    let skipped: Vec<&str> = train.skipped.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped.contains(&"train/a/garbage.jpg") && skipped.contains(&"train/b/truncated.jpg"));
    assert!(train.skipped.iter().all(|(_, r)| !r.is_empty()));
    assert_eq!(c.read_split("test").unwrap().skipped.len(), 1);
    let summary = ok(&["summary", s(&out)]);
    assert!(summary.contains("skipped train/a/garbage.jpg"), "{summary}");

    let out2 = d.path().join("strict.h5");
    let o = run(&extract_line(
        &m,
        &data,
        &out2,
        &[
            "--preprocess",
            "tf",
            "--strict",
            "--decode-threads",
            "1",
            "--batch",
            "1",
        ],
    ));
    assert!(!o.status.success());
    assert!(
        text(&o).contains("garbage.jpg") && text(&o).contains("--strict"),
        "{}",
        text(&o)
    );
    assert!(!out2.exists());
    assert!(
        headstart::cache::journal_path(&out2).exists(),
        "finished work is kept"
    );
}

#[test]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "aborts through the test hook: cargo test --features test-hooks (scripts/test.sh)"
)]
fn interrupted_run_resumes_and_matches_an_uninterrupted_one() {
    let (d, data, m, out) = tiny_setup(4);
    let args = extract_line(
        &m,
        &data,
        &out,
        &[
            "--preprocess",
            "tf",
            "--batch",
            "3",
            "--decode-threads",
            "1",
        ],
    );
    let o = bin()
        .args(&args)
        .env(ABORT_AT, "extract:2")
        .output()
        .unwrap();
    assert!(!o.status.success(), "the test hook should abort the run");
    assert!(!out.exists());
    let journal = headstart::cache::journal_path(&out);
    assert!(journal.exists());
    // Tear the last record, as a kill during a write would.
    let len = std::fs::metadata(&journal).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    // And zero the second half of the last whole record's bytes, as a page lost in a power cut
    // leaves it: its checksum no longer matches, so it is extracted again, never taken as features.
    let mut bytes = std::fs::read(&journal).unwrap();
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap()) as usize;
    let mut at = 8 + 4 + u32_at(&bytes, 8) + 8;
    let mut whole = Vec::new();
    while at + 13 <= bytes.len() {
        let end = at + 13 + u32_at(&bytes, at + 9) + 4;
        if end > bytes.len() {
            break;
        }
        whole.push((at, end));
        at = end;
    }
    let (start, end) = *whole.last().unwrap();
    let mid = (start + end) / 2;
    bytes[mid..end - 4].fill(0);
    std::fs::write(&journal, &bytes).unwrap();
    let log = ok(&args);
    assert!(log.contains("resuming: 4 of 16 images"), "{log}");
    assert!(log.contains("12 extracted now"), "{log}");
    same_as_uninterrupted(d.path(), &m, &data, &out);
}

/// Sends SIGTERM to `child` `times` times, `gap` apart.
pub(crate) fn sigterm(child: &std::process::Child, times: usize, gap: std::time::Duration) {
    for k in 0..times {
        if k > 0 {
            std::thread::sleep(gap);
        }
        let st = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }
}

#[test]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "waits and hangs through the test hooks: cargo test --features test-hooks (scripts/test.sh)"
)]
fn a_second_sigterm_ends_a_hung_run_and_a_doubled_one_stops_cleanly() {
    use std::os::unix::process::ExitStatusExt;
    use std::time::{Duration, Instant};
    let (d, data, m, out) = tiny_setup(4);
    let args = extract_line(
        &m,
        &data,
        &out,
        &[
            "--preprocess",
            "tf",
            "--batch",
            "4",
            "--decode-threads",
            "1",
        ],
    );
    let ready = d.path().join("ready");
    let start = |hook: &str| {
        let _ = std::fs::remove_file(&ready);
        let child = bin()
            .args(&args)
            .env(hook, "extract:2")
            .env("HEADSTART_TEST_READY_FILE", &ready)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        assert!(
            wait_until(60.0, || ready.exists()),
            "never reached checkpoint 2"
        );
        child
    };

    // One signal delivered twice at once (a wrapper passing it on) is one request: a clean stop.
    let child = start("HEADSTART_TEST_WAIT_FOR_SIGTERM_AT");
    sigterm(&child, 2, Duration::from_millis(10));
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("stopped on request after"),
        "{}",
        text(&o)
    );

    // A run that cannot stop (the hook never returns): the second SIGTERM, over a second later,
    // ends it by the signal at once, and the finished batches stay in the journal.
    std::fs::remove_file(headstart::cache::journal_path(&out)).unwrap();
    let child = start("HEADSTART_TEST_HANG_AT");
    sigterm(&child, 1, Duration::ZERO);
    std::thread::sleep(Duration::from_millis(1300));
    let alive = Instant::now();
    sigterm(&child, 1, Duration::ZERO);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.signal(), Some(libc::SIGTERM), "{}", text(&o));
    assert!(
        alive.elapsed() < Duration::from_secs(10),
        "the second signal did not end it"
    );
    assert!(!out.exists());
    let log = ok(&args);
    assert!(log.contains("resuming: 8 of 16 images"), "{log}");
    same_as_uninterrupted(d.path(), &m, &data, &out);
}

#[test]
fn dataset_errors_name_the_folder_and_the_problem() {
    let d = tmp();
    let m = save_model(
        d.path(),
        "tiny.onnx",
        &CnnSpec::tiny(Layout::Nchw, Some((32, 32))),
    );
    let out = d.path().join("f.h5");
    let data = d.path().join("data");
    gradient(&data.join("train/cat/1.png"), 10, 10, 1);
    gradient(&data.join("train/dog/1.png"), 10, 10, 2);
    gradient(&data.join("test/cat/1.png"), 10, 10, 3);
    gradient(&data.join("test/bird/1.png"), 10, 10, 4);
    let o = run(&extract_line(&m, &data, &out, &["--preprocess", "tf"]));
    assert!(!o.status.success());
    assert!(
        text(&o)
            .contains("classes differ between splits: train has [cat, dog], test has [bird, cat]"),
        "{}",
        text(&o)
    );

    fails(
        &[
            "extract",
            "--model",
            s(&m),
            "--data",
            s(&d.path().join("nope")),
            "--out",
            s(&out),
            "--preprocess",
            "tf",
        ],
        &["nope"],
    );

    let empty = d.path().join("empty");
    std::fs::create_dir_all(empty.join("cat")).unwrap();
    fails(
        &[
            "extract",
            "--model",
            s(&m),
            "--data",
            s(&empty),
            "--out",
            s(&out),
            "--preprocess",
            "tf",
        ],
        &["no images found"],
    );

    let good = d.path().join("good");
    tiny_dataset(&good, 1);
    fails(
        &[
            "extract",
            "--model",
            s(&d.path().join("missing.onnx")),
            "--data",
            s(&good),
            "--out",
            s(&out),
        ],
        &["missing.onnx: "],
    );
    let junk = d.path().join("junk.onnx");
    std::fs::write(&junk, b"\x08\x01garbage-garbage").unwrap();
    fails(
        &[
            "extract",
            "--model",
            s(&junk),
            "--data",
            s(&good),
            "--out",
            s(&out),
        ],
        &["junk.onnx"],
    );
}

#[test]
fn flat_class_folders_become_one_train_split() {
    let d = tmp();
    let data = d.path().join("data");
    solid(&data.join("zebra/1.bmp"), 8, 8, [1, 2, 3]);
    solid(&data.join("ant/sub/2.gif"), 8, 8, [4, 5, 6]);
    solid(&data.join("ant/3.webp"), 8, 8, [7, 8, 9]);
    let ds = headstart::data::scan::Dataset::scan(&data).unwrap();
    assert_eq!(ds.classes, vec!["ant", "zebra"]);
    assert_eq!(ds.splits.len(), 1);
    assert_eq!(ds.splits[0].name, "train");
    let paths: Vec<&str> = ds.splits[0]
        .items
        .iter()
        .map(|i| i.rel_path.as_str())
        .collect();
    assert_eq!(paths, vec!["ant/3.webp", "ant/sub/2.gif", "zebra/1.bmp"]);
}

#[test]
fn missing_onnx_runtime_library_gives_the_fix() {
    let (d, data, m, out) = tiny_setup(1);
    let o = run(&extract_line(
        &m,
        &data,
        &out,
        &[
            "--preprocess",
            "tf",
            "--ort-lib",
            "/nonexistent/libonnxruntime.so",
        ],
    ));
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("ONNX Runtime library not found")
            && t.contains("/nonexistent/libonnxruntime.so")
            && t.contains("scripts/setup.sh"),
        "{t}"
    );

    let fake = d.path().join("libonnxruntime.so");
    std::fs::write(&fake, b"not a shared library").unwrap();
    let o = bin()
        .args([
            "extract",
            "--model",
            s(&m),
            "--data",
            s(&data),
            "--out",
            s(&out),
            "--preprocess",
            "tf",
        ])
        .env("ORT_DYLIB_PATH", &fake)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("cannot load ONNX Runtime")
            && t.contains(s(&fake))
            && t.contains("scripts/setup.sh"),
        "{t}"
    );
}

#[test]
fn cuda_device_fails_with_the_reason_and_auto_falls_back() {
    let (_d, data, m, out) = tiny_setup(1);
    let base = extract_line(&m, &data, &out, &["--preprocess", "tf"]);
    let o = bin()
        .args(&base)
        .args(["--device", "cuda"])
        .output()
        .unwrap();
    if !o.status.success() {
        // A CPU-only ONNX Runtime (this machine): the error says why.
        assert!(
            text(&o).contains("--device cuda: ") && text(&o).contains("CUDA"),
            "{}",
            text(&o)
        );
        let auto = bin()
            .args(&base)
            .args(["--device", "auto", "--force"])
            .output()
            .unwrap();
        assert!(auto.status.success(), "{}", text(&auto));
        assert!(
            text(&auto).contains("notice: CUDA unavailable") && text(&auto).contains("device: Cpu"),
            "{}",
            text(&auto)
        );
    } else {
        assert!(text(&o).contains("device: Cuda"), "{}", text(&o));
    }
}
