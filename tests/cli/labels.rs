//! CLI tests: labels from a table (`extract --labels`).

use super::*;

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
    assert!(log.contains("12 images, 0 skipped"), "{log}");
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
        &extract_line(
            &model,
            &data,
            &out,
            &["--preprocess", "tf", "--labels", s(&table)],
        ),
        &[
            "labels.tsv",
            "1 id(s) match no image",
            "'train/a/nope' (line 2)",
        ],
    );
    assert!(!out.exists(), "{t}");
    std::fs::write(&table, "train/a/img0\ta\ntrain/b/img0\t\n").unwrap();
    fails(
        &extract_line(
            &model,
            &data,
            &out,
            &["--preprocess", "tf", "--labels", s(&table)],
        ),
        &["labels.tsv", "line 2", "empty label"],
    );
    // Images without a row are said; --strict refuses them.
    std::fs::write(&table, "train/a/img0\ta\ntrain/b/img0\tb\n").unwrap();
    let log = extract(
        &model,
        &data,
        &out,
        &["--preprocess", "tf", "--labels", s(&table)],
    );
    assert!(log.contains("have no row in the table"), "{log}");
    assert!(log.contains("2 images, 0 skipped"), "{log}");
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
