//! CLI tests: labels from a table (`extract --labels`).

use super::*;

/// `extract` of `data` with `model` into `out`, labels from `table` (`--preprocess tf`).
fn table_line<'a>(model: &'a Path, data: &'a Path, out: &'a Path, table: &'a Path) -> Vec<&'a str> {
    extract_line(
        model,
        data,
        out,
        &["--preprocess", "tf", "--labels", s(table)],
    )
}

/// Every image of `data` as (path below it, class, split), from the folder layout.
fn layout_rows(data: &Path) -> Vec<(String, String, String)> {
    let mut rows = Vec::new();
    for split in ["train", "test"] {
        for class in ["a", "b"] {
            for f in std::fs::read_dir(data.join(split).join(class)).unwrap() {
                let name = f.unwrap().file_name().into_string().unwrap();
                rows.push((
                    format!("{split}/{class}/{name}"),
                    class.into(),
                    split.into(),
                ));
            }
        }
    }
    rows
}

#[test]
fn a_table_that_says_what_the_folders_say_makes_the_same_cache() {
    let (d, data, model, out) = tiny_setup(3);
    extract(&model, &data, &out, &["--preprocess", "tf"]);
    // The table: ids without their extension, rows in no particular order, a header.
    let mut rows = layout_rows(&data);
    rows.reverse();
    let mut csv = String::from("file,class,fold\n");
    for (path, class, split) in &rows {
        let stem = Path::new(path).with_extension("");
        csv += &format!("{},{class},{split}\n", stem.display());
    }
    let table = d.path().join("labels.csv");
    std::fs::write(&table, &csv).unwrap();
    let from_table = d.path().join("table.h5");
    let tflags = [
        "--preprocess",
        "tf",
        "--labels",
        s(&table),
        "--split-col",
        "fold",
    ];
    let log = extract(&model, &data, &from_table, &tflags);
    assert!(log.contains("12 of 12 images, 0 skipped"), "{log}");
    let (a, b) = (
        FeatureCache::open(&out).unwrap(),
        FeatureCache::open(&from_table).unwrap(),
    );
    assert_eq!(a.meta.classes, b.meta.classes);
    assert_eq!(a.meta.splits, b.meta.splits);
    for split in &a.meta.splits {
        let (x, y) = (a.read_split(split).unwrap(), b.read_split(split).unwrap());
        assert_eq!(x.paths, y.paths, "{split}");
        assert_eq!(x.labels, y.labels, "{split}");
        assert_eq!(x.features, y.features, "{split}: bit for bit");
    }
    // The fingerprint covers the table's bytes: the same table is a cache hit, another is not.
    let log = extract(&model, &data, &from_table, &tflags);
    assert!(log.contains("cache hit"), "{log}");
    std::fs::write(
        &table,
        csv.replace("file,class,fold", "file,class,fold,note"),
    )
    .unwrap();
    let log = extract(&model, &data, &from_table, &tflags);
    assert!(!log.contains("cache hit"), "{log}");
}

#[test]
fn a_bad_table_is_refused_naming_the_file_and_line_and_nothing_is_written() {
    let (d, data, model, out) = tiny_setup(2);
    let table = d.path().join("labels.tsv");
    std::fs::write(&table, "train/a/img0\ta\ntrain/a/nope\tb\n").unwrap();
    let t = fails(
        &table_line(&model, &data, &out, &table),
        &[
            "labels.tsv",
            "1 id(s) match no image",
            "'train/a/nope' (line 2)",
        ],
    );
    assert!(!out.exists(), "{t}");
    std::fs::write(&table, "train/a/img0\ta\ntrain/b/img0\t\n").unwrap();
    fails(
        &table_line(&model, &data, &out, &table),
        &["labels.tsv", "line 2", "empty label"],
    );
    // A link to a photo labelled otherwise is the same photo with two labels.
    std::os::unix::fs::symlink(
        data.join("train/a/img0.png"),
        data.join("train/b/alias.png"),
    )
    .unwrap();
    std::fs::write(
        &table,
        "train/a/img0\ta\ntrain/b/img0\tb\ntrain/b/alias\tb\n",
    )
    .unwrap();
    fails(
        &table_line(&model, &data, &out, &table),
        &[
            "labels.tsv",
            "'train/a/img0.png' (a, train) and 'train/b/alias.png' (b, train) are one file",
        ],
    );
    std::fs::remove_file(data.join("train/b/alias.png")).unwrap();
    // A quoted label with a line break would be a class name with one.
    let csv = d.path().join("labels.csv");
    std::fs::write(&csv, "path,label\ntrain/a/img0,a\ntrain/b/img0,\"ca\nt\"\n").unwrap();
    fails(
        &table_line(&model, &data, &out, &csv),
        &["labels.csv", "\"ca\\nt\"", "line break"],
    );
    assert!(!out.exists());
    // Images without a row are said; --strict refuses them.
    std::fs::write(&table, "train/a/img0\ta\ntrain/b/img0\tb\n").unwrap();
    let log = extract(
        &model,
        &data,
        &out,
        &["--preprocess", "tf", "--labels", s(&table)],
    );
    assert!(log.contains("have no row in the table"), "{log}");
    assert!(log.contains("2 of 2 images, 0 skipped"), "{log}");
    let strict = d.path().join("strict.h5");
    fails(
        &extract_line(
            &model,
            &data,
            &strict,
            &["--preprocess", "tf", "--labels", s(&table), "--strict"],
        ),
        &["no row in the table", "strict"],
    );
    fails(
        &extract_line(
            &model,
            &data,
            &strict,
            &["--preprocess", "tf", "--path-col", "id"],
        ),
        &["--labels"],
    );
}

/// Colour tags: each image is vertical stripes of its tags' colours (a grey image has none).
const TAG_COLOURS: [(&str, [u8; 3]); 3] = [
    ("blue", [30, 40, 220]),
    ("green", [30, 200, 40]),
    ("red", [220, 30, 30]),
];

/// `n` striped images in `dir/img/` and their tags (class indices, sorted), seeded.
fn striped_images(dir: &Path, n: usize) -> Vec<(String, Vec<usize>)> {
    let mut rows = Vec::new();
    let mut state = 12345u64;
    let mut next = |m: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % m
    };
    for i in 0..n {
        let mut tags: Vec<usize> = (0..3).filter(|_| next(2) == 1).collect();
        if tags.is_empty() {
            tags.push(next(3) as usize);
        }
        let (w, h) = (48u32, 40u32);
        let img = image::RgbImage::from_fn(w, h, |x, _| {
            let k = (x as usize * tags.len()) / w as usize;
            image::Rgb(TAG_COLOURS[tags[k]].1)
        });
        let name = format!("{i:03}.png");
        std::fs::create_dir_all(dir.join("img")).unwrap();
        img.save(dir.join("img").join(&name)).unwrap();
        rows.push((name, tags));
    }
    rows
}

/// A multi-label table: the cache holds the tags as a multi-hot matrix, train-head (the auto
/// recipe) a sigmoid per class with thresholds, evaluate its mAP and set metrics, and score (base +
/// head, and the exported model) writes each image's set; all agree with the table.
#[test]
fn a_multi_label_table_trains_evaluates_scores_and_exports_label_sets() {
    let d = tmp();
    let rows = striped_images(d.path(), 72);
    let model = save_model(
        d.path(),
        "tiny.onnx",
        &CnnSpec::tiny(Layout::Nchw, Some((32, 32))),
    );
    let mut tsv = String::from("id\ttags\tsplit\n");
    for (i, (name, tags)) in rows.iter().enumerate() {
        let names: Vec<&str> = tags.iter().map(|&t| TAG_COLOURS[t].0).collect();
        let split = if i % 3 == 0 { "test" } else { "train" };
        tsv += &format!(
            "{}\t{}\t{split}\n",
            name.trim_end_matches(".png"),
            names.join("|")
        );
    }
    let table = d.path().join("labels.tsv");
    std::fs::write(&table, tsv).unwrap();
    let cache = d.path().join("tags.h5");
    let img = d.path().join("img");
    let flags = [
        "--preprocess",
        "tf",
        "--labels",
        s(&table),
        "--split-col",
        "split",
        "--label-delim",
        "|",
    ];
    extract(&model, &img, &cache, &flags);
    let c = FeatureCache::open(&cache).unwrap();
    assert!(c.meta.multi_label);
    assert_eq!(c.meta.classes, ["blue", "green", "red"]);
    let want: std::collections::HashMap<&str, &Vec<usize>> =
        rows.iter().map(|(n, t)| (n.as_str(), t)).collect();
    for split in ["train", "test"] {
        let sd = c.read_split(split).unwrap();
        for (i, p) in sd.paths.iter().enumerate() {
            let hot: Vec<usize> = (0..3).filter(|&j| sd.tags[i * 3 + j] == 1).collect();
            assert_eq!(&hot, want[p.as_str()], "{split} {p}");
        }
    }
    // summary counts an image once for each of its tags, not by its first.
    let text = ok(&["summary", s(&cache)]);
    let train_rows = rows.iter().enumerate().filter(|(i, _)| i % 3 != 0);
    let per: Vec<String> = (0..3)
        .map(|t| {
            let n = train_rows
                .clone()
                .filter(|(_, (_, g))| g.contains(&t))
                .count();
            format!("{} {n}", TAG_COLOURS[t].0)
        })
        .collect();
    assert!(
        text.contains(&format!("({})", per.join(", "))),
        "{per:?}\n{text}"
    );
    // The same tags as JSON arrays make the same cache.
    let jsonl = d.path().join("labels.jsonl");
    let mut lines = String::new();
    for (i, (name, tags)) in rows.iter().enumerate() {
        let names: Vec<&str> = tags.iter().map(|&t| TAG_COLOURS[t].0).collect();
        let split = if i % 3 == 0 { "test" } else { "train" };
        lines += &serde_json::json!({"path": name, "tags": names, "split": split}).to_string();
        lines += "\n";
    }
    std::fs::write(&jsonl, lines).unwrap();
    let from_json = d.path().join("json.h5");
    extract(
        &model,
        &img,
        &from_json,
        &[
            "--preprocess",
            "tf",
            "--labels",
            s(&jsonl),
            "--split-col",
            "split",
        ],
    );
    let j = FeatureCache::open(&from_json).unwrap();
    for split in ["train", "test"] {
        let (a, b) = (c.read_split(split).unwrap(), j.read_split(split).unwrap());
        assert_eq!((&a.paths, &a.tags), (&b.paths, &b.tags), "{split}");
        assert_eq!(a.features, b.features, "{split}");
    }

    let head = d.path().join("tags.head.h5");
    let log = ok(&["train-head", s(&cache), "--pool", "avg", "--out", s(&head)]);
    assert!(
        log.contains("3 sigmoids (multi-label)") && log.contains("thresholds: blue"),
        "{log}"
    );
    let e = super::train_evaluate::evaluate_json(&head, &cache, &[]);
    let m = &e["multi_label"];
    assert!(m["macro_ap"].as_f64().unwrap() > 0.9, "{e}");
    let html = d.path().join("tags.html");
    ok(&[
        "evaluate",
        "--head",
        s(&head),
        "--features",
        s(&cache),
        "--plot",
        "--html",
        s(&html),
    ]);
    // The HTML report: per class, links to its false positives and misses, each opening exactly
    // the photos it counts.
    let page = std::fs::read_to_string(&html).unwrap();
    let sections = super::reports::html_sections(&page);
    assert!(page.contains("<th>misses</th>"), "the per-class table");
    for (id, figures) in &sections {
        assert!(id.starts_with("tag-"), "{id}");
        assert_eq!(super::reports::html_link(&page, id), Some(*figures), "{id}");
    }
    let shown: usize = sections.iter().map(|s| s.1).sum();
    let top = e["metrics"]["top_losses"].as_array().unwrap().len();
    assert_eq!(page.matches("<img ").count(), shown + top);
    let pictures: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".png"))
        .collect();
    assert!(
        pictures.iter().any(|n| n.ends_with("test.pr.png")),
        "{pictures:?}"
    );
    assert!(
        !pictures.iter().any(|n| n.contains("confusion")),
        "{pictures:?}"
    );
    let test: Vec<&(String, Vec<usize>)> = rows.iter().step_by(3).collect();
    for (j, c) in e["metrics"]["per_class"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let support = test.iter().filter(|(_, t)| t.contains(&j)).count();
        assert_eq!(c["support"].as_u64().unwrap() as usize, support, "{c}");
    }
    // score's sets give evaluate's subset accuracy; the exported model scores the same.
    let files: Vec<String> = test
        .iter()
        .map(|(n, _)| s(&img.join(n)).to_string())
        .collect();
    let subset = |out: &str| -> f64 {
        let mut right = 0;
        for (line, (_, tags)) in out.lines().skip(1).zip(&test) {
            let set: Vec<&str> = line.split(',').nth(1).unwrap().split(' ').collect();
            let want: Vec<&str> = tags.iter().map(|&t| TAG_COLOURS[t].0).collect();
            right += usize::from(set == want);
        }
        right as f64 / test.len() as f64
    };
    let mut args = vec!["score", "--model", s(&model), "--head", s(&head)];
    args.extend(files.iter().map(String::as_str));
    let scored = ok(&args);
    let acc = m["subset_accuracy"].as_f64().unwrap();
    assert!((subset(&scored) - acc).abs() < 1e-9, "{scored}\n{e}");
    let exported = d.path().join("tags.onnx");
    ok(&[
        "export",
        "--model",
        s(&model),
        "--head",
        s(&head),
        "--out",
        s(&exported),
    ]);
    let mut args = vec!["score", "--model", s(&exported)];
    args.extend(files.iter().map(String::as_str));
    let from_export = ok(&args);
    assert!((subset(&from_export) - acc).abs() < 1e-9, "{from_export}");
    for (a, b) in scored.lines().zip(from_export.lines()).skip(1) {
        let p = |l: &str| -> Vec<f32> {
            l.split(',')
                .skip(2)
                .take(3)
                .map(|v| v.parse().unwrap())
                .collect()
        };
        close(&p(a), &p(b), 1e-4);
    }

    // What does not fit a multi-label cache is refused, naming the setting.
    fails(
        &[
            "train-head",
            s(&cache),
            "--head",
            "logistic",
            "--out",
            s(&d.path().join("l.h5")),
        ],
        &["--head", "multi-label"],
    );
    fails(
        &["train-head", s(&cache), "--threshold", "1.5"],
        &["--threshold", "[0, 1]"],
    );
    let (_d2, data, model2, single) = tiny_setup(3);
    extract(&model2, &data, &single, &["--preprocess", "tf"]);
    fails(
        &["train-head", s(&single), "--threshold", "0.5"],
        &["--threshold", "only for a multi-label cache"],
    );
    // An empty set of tags is an empty label.
    std::fs::write(&table, "000\t|\n").unwrap();
    fails(
        &extract_line(
            &model,
            &img,
            &d.path().join("bad.h5"),
            &[
                "--preprocess",
                "tf",
                "--labels",
                s(&table),
                "--label-delim",
                "|",
            ],
        ),
        &["labels.tsv", "line 1", "empty label"],
    );
}

/// `split --labels`: every image of a multi-label table placed once, each tag's share of test near
/// the fraction, and the labels.csv it writes is one `extract --labels` reads, giving the same tags.
#[test]
fn split_from_a_multi_label_table_stratifies_tags_and_writes_tables_extract_reads() {
    let d = tmp();
    let rows = striped_images(d.path(), 90);
    let mut tsv = String::from("id\ttags\n");
    for (name, tags) in &rows {
        let names: Vec<&str> = tags.iter().map(|&t| TAG_COLOURS[t].0).collect();
        tsv += &format!("{name}\t{}\n", names.join("|"));
    }
    let table = d.path().join("tags.tsv");
    std::fs::write(&table, &tsv).unwrap();
    let (img, out) = (d.path().join("img"), d.path().join("split"));
    let log = ok(&[
        "split",
        s(&img),
        "--out",
        s(&out),
        "--labels",
        s(&table),
        "--label-delim",
        "|",
        "--test-fraction",
        "0.3",
        "--val-fraction",
        "0",
    ]);
    assert!(log.contains("labels.csv"), "{log}");
    let manifest = std::fs::read_to_string(out.join("MANIFEST.tsv")).unwrap();
    let placed: Vec<&str> = manifest.lines().skip(1).collect();
    assert_eq!(placed.len(), rows.len(), "{manifest}");
    let split_of: std::collections::HashMap<String, String> = placed
        .iter()
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            (
                Path::new(c[2])
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                c[0].to_string(),
            )
        })
        .collect();
    assert!(
        split_of.values().all(|s| s == "train" || s == "test"),
        "{manifest}"
    );
    for (t, (colour, _)) in TAG_COLOURS.iter().enumerate() {
        let with: Vec<&String> = rows
            .iter()
            .filter(|(_, g)| g.contains(&t))
            .map(|(n, _)| n)
            .collect();
        let test = with
            .iter()
            .filter(|n| split_of[n.as_str()] == "test")
            .count() as f64;
        let want = 0.3 * with.len() as f64;
        assert!(
            (test - want).abs() <= 1.5,
            "{colour}: {test} of {} in test, want {want}",
            with.len()
        );
    }
    assert!(std::fs::read_to_string(out.join("test.csv"))
        .unwrap()
        .starts_with("path,label\n"));
    // The written table and folder are a multi-label dataset as they stand.
    let model = save_model(
        d.path(),
        "tiny.onnx",
        &CnnSpec::tiny(Layout::Nchw, Some((32, 32))),
    );
    let cache = d.path().join("split.h5");
    let labels = out.join("labels.csv");
    extract(
        &model,
        &out,
        &cache,
        &[
            "--preprocess",
            "tf",
            "--labels",
            s(&labels),
            "--split-col",
            "split",
            "--label-delim",
            "|",
        ],
    );
    let c = FeatureCache::open(&cache).unwrap();
    assert!(c.meta.multi_label);
    let want: std::collections::HashMap<&str, &Vec<usize>> =
        rows.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut seen = 0;
    for split in ["train", "test"] {
        let sd = c.read_split(split).unwrap();
        for (i, p) in sd.paths.iter().enumerate() {
            let name = Path::new(p).file_name().unwrap().to_str().unwrap();
            let hot: Vec<usize> = (0..3).filter(|&j| sd.tags[i * 3 + j] == 1).collect();
            assert_eq!(&hot, want[name], "{p}");
            assert!(p.starts_with(split), "{p}");
            seen += 1;
        }
    }
    assert_eq!(seen, rows.len());
    // Counts per class are for class folders: beside a table they are refused.
    let again = d.path().join("again");
    fails(
        &[
            "split",
            s(&img),
            "--out",
            s(&again),
            "--labels",
            s(&table),
            "--train",
            "5",
        ],
        &["--train"],
    );
    assert!(!again.exists());
}

/// `audit` on a cache: a train photo copied byte for byte into test is found twice over (same
/// sha256, same features) as leakage, the tables are written, and bad settings name their flag.
#[test]
fn audit_finds_a_copied_photo_as_leakage_and_writes_its_tables() {
    let (d, data, model, out) = tiny_setup(6);
    std::fs::copy(data.join("train/a/img0.png"), data.join("test/b/copy.png")).unwrap();
    extract(&model, &data, &out, &["--preprocess", "tf"]);
    let dir = d.path().join("audit");
    let o = ok(&["audit", s(&out), "--out", s(&dir), "--json", "-q", "--html"]);
    let j = super::train_evaluate::json(&o);
    assert_eq!(j["photos"], 25, "{j}");
    assert!(
        j["exact_duplicates"].as_u64().unwrap() >= 1 && j["leakage"].as_u64().unwrap() >= 1,
        "{j}"
    );
    let tsv = std::fs::read_to_string(dir.join("audit.tsv")).unwrap();
    assert!(
        tsv.lines()
            .any(|l| l.starts_with("test/b/copy.png\ttest\tleakage\t1.0")
                && l.ends_with("\ttrain/a/img0.png")),
        "{tsv}"
    );
    let oof = std::fs::read_to_string(dir.join("out_of_fold.csv")).unwrap();
    assert!(
        oof.starts_with("split,file,label,p_a,p_b\n") && oof.lines().count() == 26,
        "{oof}"
    );
    // The HTML report: one figure per finding, a pair's with both photos.
    let page = std::fs::read_to_string(dir.join("audit.html")).unwrap();
    let findings = tsv.lines().count() - 1;
    assert_eq!(page.matches("<figure").count(), findings, "{tsv}");
    let pair = page
        .split("<figure class=\"pair\"")
        .nth(1)
        .expect("a pair figure");
    let pair = pair.split("</figure>").next().unwrap();
    assert_eq!(pair.matches("<img ").count(), 2, "{pair}");
    assert!(
        pair.contains("copy.png") && pair.contains("img0.png"),
        "{pair}"
    );
    assert_eq!(j["html"]["figures"].as_u64(), Some(findings as u64), "{j}");
    fails(&["audit", s(&out), "--near", "1.5"], &["--near", "[0, 1]"]);
}
