//! Tests of [`super`] (labels.rs).

use super::*;

fn folder(files: &[&str]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for f in files {
        let p = d.path().join("img").join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"x").unwrap();
    }
    d
}

fn table(d: &tempfile::TempDir, name: &str, text: &str) -> LabelTable {
    let p = d.path().join(name);
    std::fs::write(&p, text).unwrap();
    LabelTable::new(p)
}

fn scan(d: &tempfile::TempDir, t: &LabelTable) -> Result<Dataset> {
    scan_table(&d.path().join("img"), t).map(|(ds, _)| ds)
}

fn err(r: Result<Dataset>) -> String {
    r.expect_err("a refusal").to_string()
}

#[test]
fn ids_with_or_without_extension_header_detected_splits_ordered_like_folders() {
    let d = folder(&["b.jpg", "a.png", "sub/c.jpeg", "d.jpg"]);
    let t = table(
        &d,
        "labels.csv",
        "id,label,fold\nb,dog,train\na.png,cat,test\nsub/c,dog,train\nd,cat,train\n",
    );
    let mut t2 = t.clone();
    t2.split_col = Some("fold".into());
    let ds = scan(&d, &t2).unwrap();
    assert_eq!(ds.classes, ["cat", "dog"]);
    let names: Vec<&str> = ds.splits.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["train", "test"]);
    let train: Vec<(&str, u32)> = ds.splits[0]
        .items
        .iter()
        .map(|i| (i.rel_path.as_str(), i.label))
        .collect();
    assert_eq!(train, [("d.jpg", 0), ("b.jpg", 1), ("sub/c.jpeg", 1)]);
    // Without the split column every row is train; the header is found without names too.
    let ds = scan(&d, &t).unwrap();
    assert_eq!(ds.splits.len(), 1);
    assert_eq!(ds.splits[0].items.len(), 4);
    // TSV and JSON Lines say the same.
    let tsv = table(&d, "l.tsv", "b\tdog\na.png\tcat\nsub/c\tdog\nd\tcat\n");
    assert_eq!(scan(&d, &tsv).unwrap().splits[0].items, ds.splits[0].items);
    let jl = table(
        &d,
        "l.jsonl",
        "{\"path\":\"b\",\"label\":\"dog\"}\n{\"path\":\"a.png\",\"label\":\"cat\"}\n\n{\"path\":\"sub/c\",\"label\":\"dog\"}\n{\"path\":\"d\",\"label\":\"cat\"}\n",
    );
    assert_eq!(scan(&d, &jl).unwrap().splits[0].items, ds.splits[0].items);
}

#[test]
fn every_bad_table_is_one_error_naming_the_line() {
    let d = folder(&["a.jpg", "a.png", "b.jpg", "c.jpg"]);
    let e = err(scan(&d, &table(&d, "t.csv", "b.jpg,cat\nx,dog\ny,dog\n")));
    assert!(
        e.contains("t.csv") && e.contains("2 id(s) match no image") && e.contains("'x' (line 2)"),
        "{e}"
    );
    let e = err(scan(&d, &table(&d, "t.csv", "b.jpg,cat\nb,dog\n")));
    assert!(
        e.contains("line 2") && e.contains("'cat'") && e.contains("line 1"),
        "{e}"
    );
    let e = err(scan(&d, &table(&d, "t.csv", "b.jpg,cat\na,dog\n")));
    assert!(e.contains("line 2") && e.contains("matches 2 files"), "{e}");
    let e = err(scan(&d, &table(&d, "t.csv", "b.jpg,cat\nc.jpg, \n")));
    assert!(e.contains("line 2") && e.contains("empty label"), "{e}");
    let e = err(scan(&d, &table(&d, "t.csv", "b.jpg,cat\nc.jpg\n")));
    assert!(e.contains("line 2") && e.contains("no label"), "{e}");
    let e = err(scan(
        &d,
        &table(&d, "t.csv", "b.jpg,cat\n../etc/passwd,dog\n"),
    ));
    assert!(e.contains("line 2") && e.contains("inside its root"), "{e}");
    let mut t = table(&d, "t.csv", "p,l,s\nb.jpg,cat,train\nc.jpg,dog,holdout\n");
    t.split_col = Some("s".into());
    let e = err(scan(&d, &t));
    assert!(e.contains("line 3") && e.contains("holdout"), "{e}");
    t.split_col = Some("fold".into());
    let e = err(scan(&d, &t));
    assert!(
        e.contains("no split column 'fold'") && e.contains("p, l, s"),
        "{e}"
    );
    let e = err(scan(
        &d,
        &table(
            &d,
            "t.jsonl",
            "{\"path\":\"b.jpg\",\"label\":\"cat\"}\n[1]\n",
        ),
    ));
    assert!(
        e.contains("line 2") && e.contains("not a JSON object"),
        "{e}"
    );
    let e = err(scan(&d, &table(&d, "t.csv", "\n\n")));
    assert!(e.contains("no rows"), "{e}");
}

#[test]
fn images_without_a_row_are_warned_of_or_refused_and_single_image_classes_warned() {
    let d = folder(&["a.jpg", "b.jpg", "c.jpg"]);
    let mut t = table(&d, "t.csv", "a,cat\nb,dog\nb.jpg,dog\n");
    let ds = scan(&d, &t).unwrap();
    let w: Vec<&str> = ds.warnings.iter().map(|(_, w)| w.as_str()).collect();
    assert!(
        w.iter()
            .any(|w| w.contains("1 image(s)") && w.contains("c.jpg")),
        "{w:?}"
    );
    assert!(
        w.iter().any(|w| w.contains("1 row(s) list an image again")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.contains("class 'cat' has a single image")),
        "{w:?}"
    );
    t.strict = true;
    let e = err(scan(&d, &t));
    assert!(e.contains("c.jpg") && e.contains("strict"), "{e}");
}

#[test]
fn a_byte_order_mark_and_dotted_ids_are_read_and_a_guessed_header_is_said() {
    let d = folder(&["a.jpg", "b.jpg"]);
    let mut t = table(&d, "t.csv", "\u{feff}path,label\n./a.jpg,cat\nb,dog\n");
    t.path_col = Some("path".into());
    let ds = scan(&d, &t).unwrap();
    assert_eq!(ds.classes, ["cat", "dog"]);
    t.path_col = None;
    let ds = scan(&d, &t).unwrap();
    assert_eq!(ds.len(), 2);
    assert!(
        ds.warnings
            .iter()
            .any(|(_, w)| w.contains("line 1 is taken as the header")),
        "{:?}",
        ds.warnings
    );
    // One row that names no image is an unknown id, not a header.
    let e = err(scan(&d, &table(&d, "one.csv", "typo.jpg,cat\n")));
    assert!(e.contains("1 id(s) match no image"), "{e}");
}

#[test]
fn the_sha256_is_the_tables() {
    let d = folder(&["a.jpg", "b.jpg"]);
    let t = table(&d, "t.csv", "a,cat\nb,dog\n");
    let (_, sha) = scan_table(&d.path().join("img"), &t).unwrap();
    assert_eq!(sha, format!("{:x}", Sha256::digest(b"a,cat\nb,dog\n")));
}

/// An id typed in NFC finds the file named in NFD (as macOS writes names), with or without its
/// extension, and the guessed header is still a header; when the NFD and NFC spellings are two
/// files, each exact id finds its own, and an id in a third spelling of both is refused.
#[test]
fn ids_in_another_unicode_normalisation_find_their_file() {
    let (nfd, nfc) = ("cafe\u{301}", "caf\u{e9}");
    let d = folder(&[&format!("{nfd}.jpg"), "b.jpg"]);
    let t = table(&d, "l.csv", &format!("id,label\n{nfc},cat\nb,dog\n"));
    let ds = scan(&d, &t).unwrap();
    let rels: Vec<&str> = ds.splits[0]
        .items
        .iter()
        .map(|i| i.rel_path.as_str())
        .collect();
    assert_eq!(rels, [format!("{nfd}.jpg").as_str(), "b.jpg"]);
    let t = table(&d, "l2.csv", &format!("{nfc}.jpg,cat\nb.jpg,dog\n"));
    assert_eq!(scan(&d, &t).unwrap().splits[0].items.len(), 2);

    // Two files whose names differ only in normalisation: each exact id finds its own, and an id
    // in a third spelling of both (marks out of canonical order) is refused, naming both.
    let (odd, nfd, nfc) = ("e\u{301}\u{323}", "e\u{323}\u{301}", "\u{1eb9}\u{301}");
    let d = folder(&[&format!("{nfd}.jpg"), &format!("{nfc}.jpg")]);
    let t = table(&d, "l.csv", &format!("{nfd}.jpg,cat\n{nfc}.jpg,dog\n"));
    let ds = scan(&d, &t).unwrap();
    assert_eq!(ds.classes, ["cat", "dog"]);
    let t = table(&d, "l3.csv", &format!("{odd}.jpg,cat\n{nfc}.jpg,dog\n"));
    let e = err(scan(&d, &t));
    assert!(e.contains("line 1") && e.contains("matches 2 files"), "{e}");
}

/// A label spelt in NFC on one row and NFD on another is one class (it was two that print alike).
#[test]
fn labels_in_two_unicode_normalisations_are_one_class() {
    let d = folder(&["a.jpg", "b.jpg", "c.jpg"]);
    let t = table(
        &d,
        "l.csv",
        "path,label\na.jpg,caf\u{e9}\nb.jpg,cafe\u{301}\nc.jpg,dog\n",
    );
    let ds = scan(&d, &t).unwrap();
    assert_eq!(ds.classes, ["caf\u{e9}", "dog"]);
    let mut tags = table(
        &d,
        "t.csv",
        "path,tags\na.jpg,caf\u{e9};x\nb.jpg,cafe\u{301}\nc.jpg,x\n",
    );
    tags.label_delim = Some(';');
    assert_eq!(scan(&d, &tags).unwrap().classes, ["caf\u{e9}", "x"]);
}

/// `--path-col` naming the second column: the label is then the first (it defaulted to the
/// second as well, making each photo its own class); one column for both is refused.
#[test]
fn the_label_column_defaults_to_one_that_is_not_the_paths() {
    let d = folder(&["a.jpg", "b.jpg", "c.jpg", "d.jpg"]);
    let mut t = table(
        &d,
        "l.csv",
        "label,file,fold\ncat,a.jpg,train\ndog,b.jpg,train\ncat,c.jpg,test\ndog,d.jpg,test\n",
    );
    t.path_col = Some("file".into());
    let ds = scan(&d, &t).unwrap();
    assert_eq!(ds.classes, ["cat", "dog"]);
    t.split_col = Some("fold".into());
    let ds = scan(&d, &t).unwrap();
    assert_eq!(ds.classes, ["cat", "dog"]);
    assert_eq!(ds.splits.len(), 2);
    t.label_col = Some("file".into());
    let e = err(scan(&d, &t));
    assert!(
        e.contains("the label column is also the path column"),
        "{e}"
    );
}
