//! Tests of [`super`] (the score writer and its resume parsing).

use super::output::*;
use super::*;

fn write_csv(rows: &[&str]) -> Vec<u8> {
    let buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>> = Default::default();
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let classes = ["cat".to_string(), "dog".to_string()];
    let mut w = Writer::new(Format::Csv, Box::new(Shared(buf.clone())), &classes);
    w.header().unwrap();
    for (i, p) in rows.iter().enumerate() {
        if i % 3 == 2 {
            w.error(p, "cannot decode: bad \"data\",\nreally").unwrap();
        } else {
            w.row(p, &[0.25, 0.75]).unwrap();
        }
    }
    w.flush().unwrap();
    drop(w);
    let v = buf.lock().unwrap().clone();
    v
}

/// File names with commas, quotes and newlines are written quoted and read back whole; a file
/// torn at any byte keeps exactly the records written before the tear.
#[test]
fn csv_rows_round_trip_and_torn_records_are_cut() {
    let rows = [
        "plain.jpg",
        "with,comma.jpg",
        "with \"quote\".jpg",
        "line\nbreak.jpg",
        "ünïcode 名.png",
        "\"\n,\".png",
    ];
    let bytes = write_csv(&rows);
    let (done, complete, header) = csv_records(&bytes);
    assert_eq!(complete, bytes.len());
    assert_eq!(
        header.unwrap(),
        ["path", "predicted", "p_cat", "p_dog", "error"]
    );
    let want: std::collections::HashSet<String> = rows.iter().map(|s| s.to_string()).collect();
    assert_eq!(done, want);
    // Record ends: the whole file cut after k records.
    let ends: Vec<usize> = (0..=rows.len())
        .map(|k| csv_records(&write_csv(&rows[..k])).1)
        .collect();
    for cut in 0..bytes.len() {
        let (done, complete, _) = csv_records(&bytes[..cut]);
        // Before the header is whole nothing is kept.
        let (k, end) = ends
            .iter()
            .rposition(|&e| e <= cut)
            .map_or((0, 0), |k| (k, ends[k]));
        assert_eq!(complete, end, "cut at {cut}");
        assert_eq!(done.len(), k, "cut at {cut}");
        for r in &rows[..k] {
            assert!(done.contains(*r), "cut at {cut}: {r:?} missing");
        }
    }
}

#[test]
fn torn_json_lines_are_cut() {
    let text = b"{\"path\":\"a\\nb.jpg\",\"predicted\":\"cat\",\"top\":[[\"cat\",1.0]]}\n{\"path\":\"c.jpg\",\"pred";
    let classes = ["cat".to_string(), "dog".to_string()];
    let mut probe = Writer::new(Format::Jsonl, Box::new(std::io::sink()), &classes);
    probe.top_k = Some(1);
    let (done, complete) = jsonl_records(text, &probe).unwrap();
    assert_eq!(done.into_iter().collect::<Vec<_>>(), ["a\nb.jpg"]);
    assert_eq!(text[complete - 1], b'\n');
    // A whole line this run would not write (other classes) is refused, naming the line.
    let other = b"{\"path\":\"a.jpg\",\"predicted\":\"car\",\"top\":[]}\n";
    let e = jsonl_records(other, &probe).unwrap_err();
    assert!(e.contains("line 1") && e.contains("car"), "{e}");
}
