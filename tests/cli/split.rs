//! CLI tests: split.

use super::*;

/// A Kaggle-like dump in the PetImages layout: `good` decodable JPEGs per class plus, among the
/// cats, a zero-byte file, a truncated JPEG, a text file named `.jpg` and a `Thumbs.db`.
pub(crate) fn pet_images(root: &Path, cats: u32, dogs: u32) -> Vec<&'static str> {
    for i in 0..cats {
        gradient(&root.join(format!("Cat/{i}.jpg")), 40, 30, i);
    }
    for i in 0..dogs {
        gradient(&root.join(format!("Dog/{i}.jpg")), 30, 40, 100 + i);
    }
    std::fs::write(root.join("Cat/666.jpg"), b"").unwrap();
    let whole = std::fs::read(root.join("Cat/0.jpg")).unwrap();
    std::fs::write(root.join("Cat/667.jpg"), &whole[..whole.len() / 2]).unwrap();
    std::fs::write(root.join("Cat/668.jpg"), b"this is not a JPEG").unwrap();
    std::fs::write(root.join("Cat/Thumbs.db"), b"\xd0\xcf\x11\xe0").unwrap();
    vec!["666.jpg", "667.jpg", "668.jpg"]
}

/// The MANIFEST.tsv rows of a split folder (header left out).
pub(crate) fn manifest(dir: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(dir.join("MANIFEST.tsv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// `headstart split` on a dump with broken files: exactly the numbers asked for, every chosen file
/// decodes (broken ones are skipped, listed and replaced), splits do not overlap, the manifest
/// matches the files, the same seed gives the same split, too few files is an error with the counts,
/// and an existing output is only replaced with --force (and only if it is an earlier split).
#[test]
fn split_samples_checked_files_per_class_reproducibly() {
    let d = tmp();
    let src = d.path().join("PetImages");
    let broken = pet_images(&src, 8, 12);
    let out = d.path().join("data");
    let args = |out: &Path, seed: &str| {
        vec![
            "split".to_string(),
            s(&src).into(),
            "--out".into(),
            s(out).into(),
            "--train".into(),
            "4".into(),
            "--val".into(),
            "1".into(),
            "--test".into(),
            "3".into(),
            "--seed".into(),
            seed.into(),
            "--progress".into(),
            "none".into(),
        ]
    };
    let run_args = |a: Vec<String>| bin().args(&a).output().unwrap();
    let o = run_args(args(&out, "7"));
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("non-image file(s) ignored"),
        "{}",
        text(&o)
    );
    let rows = manifest(&out);
    assert_eq!(rows.len(), 16);
    let mut seen = std::collections::HashSet::new();
    for (split, n) in [("train", 4), ("val", 1), ("test", 3)] {
        for class in ["Cat", "Dog"] {
            let files: Vec<PathBuf> = std::fs::read_dir(out.join(split).join(class))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            assert_eq!(files.len(), n, "{split}/{class}");
            for f in files {
                let name = f.file_name().unwrap().to_string_lossy().to_string();
                assert!(!broken.contains(&name.as_str()), "{name} is broken");
                assert!(
                    seen.insert(format!("{class}/{name}")),
                    "{name} in two splits"
                );
                headstart::data::decode::decode(&f).unwrap();
            }
        }
    }
    for r in &rows {
        let file = out.join(&r[2]);
        assert_eq!(headstart::util::hash::sha256_file(&file).unwrap(), r[3]);
        assert!(Path::new(&r[4]).is_file(), "source {}", r[4]);
    }
    // All eight good cats are needed, so every broken cat before the last good one was met and listed.
    if out.join("SKIPPED.tsv").exists() {
        let skipped = std::fs::read_to_string(out.join("SKIPPED.tsv")).unwrap();
        assert!(
            skipped
                .lines()
                .skip(1)
                .all(|l| broken.iter().any(|b| l.contains(b))),
            "{skipped}"
        );
    }
    // Same seed, same split; another seed, another split.
    let again = d.path().join("again");
    assert!(run_args(args(&again, "7")).status.success());
    assert_eq!(manifest(&again), rows);
    let other = d.path().join("other");
    assert!(run_args(args(&other, "8")).status.success());
    assert_ne!(manifest(&other), rows);
    // An existing split is replaced only with --force; a folder that is not one never.
    let o = run_args(args(&out, "8"));
    failed(&o, &["--force"]);
    let mut forced = args(&out, "8");
    forced.push("--force".into());
    assert!(run_args(forced.clone()).status.success());
    assert_eq!(manifest(&out), manifest(&other));
    // A copied photo edited in place is not the split's any more: --force refuses, keeping it.
    let copied = d.path().join("copied");
    let mut copy = args(&copied, "8");
    copy.extend(["--mode".into(), "copy".into()]);
    assert!(run_args(copy.clone()).status.success());
    copy.push("--force".into());
    let listed = std::fs::read_to_string(copied.join("MANIFEST.tsv")).unwrap();
    let rel = listed
        .lines()
        .nth(1)
        .unwrap()
        .split('\t')
        .nth(2)
        .unwrap()
        .to_string();
    std::fs::write(copied.join(&rel), b"retouched by hand").unwrap();
    failed(
        &run_args(copy.clone()),
        &[rel.as_str(), "changed since the split wrote it"],
    );
    assert_eq!(
        std::fs::read(copied.join(&rel)).unwrap(),
        b"retouched by hand"
    );
    std::fs::remove_file(copied.join(&rel)).unwrap();
    assert!(run_args(copy).status.success());
    let stranger = d.path().join("stranger");
    std::fs::create_dir_all(&stranger).unwrap();
    std::fs::write(stranger.join("notes.txt"), b"mine").unwrap();
    let mut a = args(&stranger, "8");
    a.push("--force".into());
    let o = run_args(a);
    failed(&o, &["no MANIFEST.tsv"]);
    assert!(stranger.join("notes.txt").is_file());
    // Too few usable cats: the error counts them.
    fails(
        &[
            "split",
            s(&src),
            "--out",
            s(&d.path().join("big")),
            "--train",
            "6",
            "--test",
            "3",
        ],
        &[
            "class 'Cat' has 8 usable images (11 files, 3 broken)",
            "9 were asked for",
        ],
    );
    // The competition layout: cat.N.jpg / dog.N.jpg in one folder.
    let flat = d.path().join("train");
    for i in 0..3 {
        gradient(&flat.join(format!("cat.{i}.jpg")), 20, 20, i);
        gradient(&flat.join(format!("dog.{i}.jpg")), 20, 20, 50 + i);
    }
    let o = ok(&[
        "split",
        s(&flat),
        "--out",
        s(&d.path().join("flat_out")),
        "--train",
        "2",
        "--test",
        "1",
        "--label-from",
        "prefix",
        "--mode",
        "copy",
        "--progress",
        "none",
    ]);
    assert!(o.contains("cat: 2 train, 1 test"), "{o}");
    assert!(d.path().join("flat_out/test/dog").is_dir());
}

/// `split --exclude`: the listed photos, and any copy of them under another name, are never
/// placed; paths relative to an earlier split (`--exclude-root`) are matched by content; a listed
/// file that is not there is refused before anything is written.
#[test]
fn split_exclude_leaves_listed_photos_and_their_copies_out() {
    let d = tmp();
    let src = d.path().join("PetImages");
    pet_images(&src, 8, 8);
    std::fs::copy(src.join("Cat/3.jpg"), src.join("Cat/copy-of-3.jpg")).unwrap();
    let list = d.path().join("list.txt");
    std::fs::write(&list, "# flagged\nCat/3.jpg\nDog/5.jpg\n").unwrap();
    let out = d.path().join("split");
    let line = |out: &Path, extra: &[&str]| -> String {
        let base = [
            "split",
            s(&src),
            "--out",
            s(out),
            "--train",
            "4",
            "--test",
            "2",
            "-q",
        ];
        ok(&[&base[..], extra].concat())
    };
    let log = line(&out, &["--exclude", s(&list)]);
    assert!(log.contains("3 listed photo(s) left out"), "{log}");
    let hash = |p: &Path| headstart::util::hash::sha256_file(p).unwrap();
    let banned = [hash(&src.join("Cat/3.jpg")), hash(&src.join("Dog/5.jpg"))];
    let rows = manifest(&out);
    assert_eq!(rows.len(), 12);
    assert!(rows.iter().all(|r| !banned.contains(&r[3])), "{rows:?}");
    // Paths of the earlier split's own layout, relative to it, name the same photos.
    let placed = &rows[0][2];
    let again = d.path().join("again");
    let rel_list = d.path().join("rel.txt");
    std::fs::write(&rel_list, format!("{placed}\n")).unwrap();
    let log = line(
        &again,
        &["--exclude", s(&rel_list), "--exclude-root", s(&out)],
    );
    assert!(log.contains("1 listed photo(s) left out"), "{log}");
    assert!(manifest(&again).iter().all(|r| r[3] != rows[0][3]));
    // Relative to SRC (the default), that path is not there: refused, nothing written.
    let none = d.path().join("none");
    fails(
        &[
            "split",
            s(&src),
            "--out",
            s(&none),
            "--train",
            "4",
            "--test",
            "2",
            "--exclude",
            s(&rel_list),
        ],
        &["rel.txt", "is not there", "--exclude-root"],
    );
    assert!(!none.exists());
}

/// A symlink split that replaces the folder its own photos lie in (a split of a split of it) is
/// refused and the photos kept: its links would point at the files the rename deletes.
#[test]
fn a_symlink_split_never_replaces_the_folder_its_photos_lie_in() {
    let d = tmp();
    let raw = d.path().join("raw");
    pet_images(&raw, 14, 14);
    let (a, b) = (d.path().join("A"), d.path().join("B"));
    let split = |src: &Path, out: &Path, n: [&str; 3], extra: &[&str]| {
        let line = [
            "split",
            s(src),
            "--out",
            s(out),
            "--train",
            n[0],
            "--val",
            n[1],
            "--test",
            n[2],
        ];
        run(&[&line[..], extra].concat())
    };
    assert!(split(&raw, &a, ["8", "2", "3"], &["--mode", "copy"])
        .status
        .success());
    let b_ok = split(
        &a.join("train"),
        &b,
        ["4", "2", "2"],
        &["--mode", "symlink"],
    );
    assert!(b_ok.status.success(), "{}", text(&b_ok));
    let before = manifest(&a);
    let o = split(
        &b.join("train"),
        &a,
        ["2", "1", "1"],
        &["--mode", "symlink", "--force"],
    );
    failed(
        &o,
        &[
            "leads, through links, to a file in this folder",
            "--mode copy",
        ],
    );
    assert_eq!(manifest(&a), before);
    for row in &before {
        assert!(a.join(&row[2]).is_file(), "{} is gone", row[2]);
    }
}
