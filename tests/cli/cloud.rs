//! CLI tests: object storage (feature `cloud`).

use super::*;

/// headstart with S3 settings for `endpoint` (moto takes any key) and its own `$HEADSTART_HOME`
/// (another machine, as far as run mirrors go).
#[cfg(feature = "cloud")]
pub(crate) fn s3_cmd(endpoint: &str, home: &Path, secret: &str, args: &[&str]) -> Command {
    let mut c = bin();
    c.args(args)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "AKIDHEADSTARTTEST")
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_REGION", "us-east-1")
        .env("HEADSTART_HOME", home);
    for v in headstart::runs::plan::SHARD_ENV {
        c.env_remove(v);
    }
    c
}

/// Every file below `dir` (recursively), read whole.
#[cfg(feature = "cloud")]
pub(crate) fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.push((p, b));
            }
        }
    }
    out
}

#[cfg(feature = "cloud")]
#[test]
fn object_storage_through_a_faulty_proxy_gives_the_local_cache_and_one_marker_per_shard() {
    let (d, data, m, _) = tiny_setup(5);
    // A nested folder inside a class (its images belong to the class, in key order).
    gradient(&data.join("train/a/sub/extra.png"), 33, 31, 7);
    let secret = "SeCrEtKeyThatMustNeverBeWritten0123456789";
    let venv_bin = venv_python().parent().unwrap().to_path_buf();
    let moto = s3::moto(&venv_bin);
    s3::put(&moto.endpoint, "photos", b"");
    let n = s3::upload_dir(&moto.endpoint, &data, "photos", "set");
    assert_eq!(n, 21);
    // A hidden file, a top-level file and a file beside the class folders are not images of any
    // class, as in a folder.
    s3::put(&moto.endpoint, "photos/set/train/a/.hidden.png", b"x");
    s3::put(&moto.endpoint, "photos/set/README.jpg", b"x");
    s3::put(&moto.endpoint, "photos/set/train/stray.jpg", b"x");
    let proxy_log = d.path().join("proxy.log");
    let proxy = s3::fault_proxy(&moto.endpoint, &proxy_log);
    let home = |name: &str| d.path().join("homes").join(name);
    let tf = ["--preprocess", "tf", "--progress", "none"];
    let logs = std::cell::RefCell::new(String::new());
    let go = |home: &Path, args: &[&str]| {
        let log = succeeds(&mut s3_cmd(&proxy.endpoint, home, secret, args));
        logs.borrow_mut().push_str(&log);
        log
    };

    // --data s3:// gives the cache of the same files read locally, through retries.
    let single = d.path().join("single.h5");
    tf_extract(&m, &data, &single);
    let from_s3 = d.path().join("s3.h5");
    let log = go(
        &home("a"),
        &[
            &["extract", "--model", s(&m), "--data", "s3://photos/set"],
            &tf[..],
            &["--out", s(&from_s3)],
        ]
        .concat(),
    );
    assert!(
        log.contains("data: s3://photos/set") && log.contains("21 images, 0 skipped"),
        "{log}"
    );
    same_rows(&from_s3, &single);

    // A run folder on the bucket: plan, three shards on three schedulers' variables, merge.
    let run = "s3://photos/runs/r1";
    let plan = [
        "plan",
        "--data",
        "s3://photos/set",
        "--shards",
        "3",
        "--out",
        run,
    ];
    go(&home("a"), &plan);
    let again = s3_cmd(&proxy.endpoint, &home("a"), secret, &plan)
        .output()
        .unwrap();
    failed(&again, &["a plan is already there"]);
    let shard = |k: usize, var: &str, h: &str| {
        let mut c = s3_cmd(
            &proxy.endpoint,
            &home(h),
            secret,
            &[&["extract", "--run", run, "--model", s(&m)], &tf[..]].concat(),
        );
        c.env(var, k.to_string());
        c
    };
    logs.borrow_mut()
        .push_str(&succeeds(&mut shard(0, "SLURM_ARRAY_TASK_ID", "w0")));
    logs.borrow_mut()
        .push_str(&succeeds(&mut shard(1, "JOB_COMPLETION_INDEX", "w1")));
    let status = go(&home("w0"), &["status", run]);
    assert!(
        status.contains("done:    2 shards") && status.contains("missing: 2"),
        "{status}"
    );
    // Two copies of shard 2 at once, on two "machines": one marker, one output object.
    let (mut c1, mut c2) = (
        shard(2, "AWS_BATCH_JOB_ARRAY_INDEX", "w2"),
        shard(2, "AWS_BATCH_JOB_ARRAY_INDEX", "w3"),
    );
    let (p1, p2) = (c1.spawn().unwrap(), c2.spawn().unwrap());
    let (o1, o2) = (
        p1.wait_with_output().unwrap(),
        p2.wait_with_output().unwrap(),
    );
    assert!(
        o1.status.success() && o2.status.success(),
        "{}\n{}",
        text(&o1),
        text(&o2)
    );
    logs.borrow_mut().push_str(&(text(&o1) + &text(&o2)));
    let outputs = s3::keys(&moto.endpoint, "photos", "runs/r1/shards/shard-00002");
    assert_eq!(outputs.len(), 1, "one output for shard 2: {outputs:?}");
    let markers = s3::keys(&moto.endpoint, "photos", "runs/r1/done/");
    assert_eq!(markers.len(), 3, "{markers:?}");
    let again = go(
        &home("w0"),
        &[
            &["extract", "--run", run, "--shard", "1", "--model", s(&m)],
            &tf[..],
        ]
        .concat(),
    );
    assert!(again.contains("was already done"), "{again}");
    assert!(go(&home("m"), &["status", run]).contains("all shards are done"));
    // Keys from a credentials file's profile when the environment has none.
    let creds = d.path().join("aws-credentials");
    std::fs::write(
        &creds,
        format!("[default]\naws_access_key_id = NOPE\n\n[check]\naws_access_key_id = AKIDFILE\naws_secret_access_key = {secret}\n"),
    )
    .unwrap();
    let mut c = s3_cmd(&proxy.endpoint, &home("f"), secret, &["status", run]);
    c.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
        .env("AWS_PROFILE", "check");
    let log = succeeds(&mut c);
    assert!(log.contains("all shards are done"), "{log}");
    logs.borrow_mut().push_str(&log);
    std::fs::remove_file(&creds).unwrap();
    let merged = d.path().join("merged.h5");
    go(&home("m"), &["merge", run, "--out", s(&merged)]);
    same_rows(&merged, &single);
    let head = d.path().join("head.h5");
    let log = go(
        &home("t"),
        &[
            "train-head",
            run,
            "--recipe",
            "seed",
            "--epochs",
            "1",
            "--out",
            s(&head),
        ],
    );
    assert!(log.contains("merged 3 shards"), "{log}");

    // score: a prefix directly, and each shard of the bucket run joined by merge --scores, give the
    // rows of scoring the local folder (paths below the prefix instead of the folder).
    let local_csv = d.path().join("local.csv");
    let score = ["score", "--model", s(&m), "--head", s(&head)];
    ok(&[&score[..], &[s(&data), "--out", s(&local_csv), "-q"]].concat());
    let direct_csv = d.path().join("direct.csv");
    go(
        &home("s"),
        &[&score[..], &["s3://photos/set", "--out", s(&direct_csv)]].concat(),
    );
    for k in ["0", "1", "2"] {
        go(
            &home(&format!("s{k}")),
            &[&score[..], &["--run", run, "--shard", k]].concat(),
        );
    }
    let again = go(
        &home("s0"),
        &[&score[..], &["--run", run, "--shard", "0"]].concat(),
    );
    assert!(again.contains("already scored"), "{again}");
    let merged_csv = d.path().join("merged.csv");
    go(&home("m"), &["merge", run, "--scores", s(&merged_csv)]);
    let rows = |p: &Path, prefix: &str| -> Vec<String> {
        let text = std::fs::read_to_string(p).unwrap();
        let mut v: Vec<String> = text.lines().map(|l| l.replacen(prefix, "", 1)).collect();
        v.sort();
        v
    };
    let want = rows(&local_csv, &format!("{}/", s(&data)));
    assert_eq!(want.len(), 22, "a header and 21 rows");
    // A prefix is walked whole, as a folder is: the two stray keys are scored (and fail to decode).
    let direct = rows(&direct_csv, "s3://photos/set/");
    assert!(want.iter().all(|r| direct.contains(r)), "{direct:?}");
    for stray in ["README.jpg,,,,", "train/stray.jpg,,,,"] {
        assert!(direct.iter().any(|r| r.starts_with(stray)), "{direct:?}");
    }
    assert_eq!(rows(&merged_csv, "s3://photos/set/"), want);

    // The proxy did fail requests both ways, and the key never reached an output or a log.
    let seen = std::fs::read_to_string(&proxy_log).unwrap();
    assert!(
        seen.contains("-> 503") && seen.contains("-> dropped"),
        "{seen}"
    );
    assert!(!logs.borrow().contains(secret));
    for (p, bytes) in all_bytes(d.path()) {
        let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!found, "{} holds the secret key", p.display());
    }
    // The bucket's objects (signed uploads: read back through boto3, which moto's venv has).
    let check = Command::new(venv_python())
        .args(["-c", S3_SCAN, &moto.endpoint, "photos", secret])
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));
    assert!(text(&check).contains("clean"), "{}", text(&check));
}

/// Reads every object of bucket argv[2] at endpoint argv[1]; fails naming any that holds argv[3].
#[cfg(feature = "cloud")]
pub(crate) const S3_SCAN: &str = r#"
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id="a", aws_secret_access_key="b")
n = 0
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[2]):
    for o in page.get("Contents", []):
        body = s3.get_object(Bucket=sys.argv[2], Key=o["Key"])["Body"].read()
        if sys.argv[3].encode() in body:
            sys.exit(o["Key"] + " holds the secret key")
        n += 1
print("clean", n)
"#;
