//! CLI tests: plots, reports, the library and progress lines.

use super::*;

/// `--plot` and `--report` write PNGs of the expected size and one report with both runs.
#[test]
fn plots_and_report_are_written() {
    let (d, _data, _model, cache) = tiny_features(&["a", "b", "c"], 4, 1);
    let head = d.path().join("h.h5");
    let rep = d.path().join("report");
    ok(&[
        "train-head",
        s(&cache),
        "--out",
        s(&head),
        "--epochs",
        "3",
        "-q",
        "--plot",
        "--report",
        s(&rep),
    ]);
    ok(&[
        "evaluate",
        "--head",
        s(&head),
        "--features",
        s(&cache),
        "--plot",
    ]);
    ok(&[
        "evaluate",
        "--head",
        s(&head),
        "--features",
        s(&cache),
        "--report",
        s(&rep),
    ]);
    for (p, w, h) in [
        (d.path().join("h.curves.png"), 1100, 420),
        (rep.join("curves.png"), 1100, 420),
        (d.path().join("h.test.confusion.png"), 510, 430),
        (rep.join("evaluate.test.confusion.png"), 510, 430),
    ] {
        let img = image::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!((img.width(), img.height()), (w, h), "{}", p.display());
        // Not blank: a plot has many colours.
        let rgb = img.to_rgb8();
        let distinct: std::collections::HashSet<_> = rgb.pixels().map(|p| p.0).collect();
        assert!(distinct.len() > 10, "{} looks blank", p.display());
    }
    assert!(
        !d.path().join("h.test.roc.png").exists(),
        "ROC is for two classes only"
    );
    // Three epochs at the seed's 2e-5 leave mistakes: their grid (4 columns of 200 px tiles).
    let e = json(&ok(&[
        "evaluate",
        "--head",
        s(&head),
        "--features",
        s(&cache),
        "--json",
        "--top",
        "5",
    ]));
    assert_eq!(e["metrics"]["top_losses"].as_array().unwrap().len(), 5);
    let grid = image::open(d.path().join("h.test.top_losses.png")).unwrap();
    assert_eq!((grid.width(), grid.height()), (4 * 210 + 10, 2 * 268 + 50));
    let md = std::fs::read_to_string(rep.join("report.md")).unwrap();
    for want in [
        "# train-head:",
        "## Learning curves",
        "![curves](curves.png)",
        "# Evaluation of",
        "evaluate.test.confusion.png",
        "evaluate.test.top_losses.png",
        "## History",
    ] {
        assert!(md.contains(want), "'{want}' not in report.md:\n{md}");
    }
}

/// The library reports through `events::Reporter` and prints nothing itself: train-head's settings,
/// one row per epoch and the kept epoch arrive as events, in order.
#[test]
fn library_calls_report_through_the_reporter() {
    use headstart::cache::synthetic::{synthetic, SyntheticSpec};
    use headstart::events::Collect;
    use headstart::head::train_head::{train_head, HeadChoice, TrainHeadConfig};
    let d = tmp();
    let cache = d.path().join("s.features.h5");
    let (meta, splits) = synthetic(&SyntheticSpec {
        shape: vec![8],
        splits: vec![("train".into(), 40), ("val".into(), 20)],
        classes: 2,
        separation: 2.0,
        seed: 3,
        dtype: headstart::cache::Dtype::F32,
    })
    .unwrap();
    headstart::cache::write_arrays(
        &headstart::util::output::Output::new(&cache),
        &meta,
        &splits,
    )
    .unwrap();
    let mut cfg = TrainHeadConfig::new(&cache);
    cfg.head = HeadChoice::Mlp(headstart::head::fit::TrainConfig {
        epochs: 4,
        ..Default::default()
    });
    let rep = Collect::default();
    let s = train_head(&cfg, &rep).unwrap();
    let lines = rep.messages();
    assert!(lines[0].starts_with("train-head: "), "{lines:?}");
    let rows: Vec<&String> = lines
        .iter()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert_eq!(rows.len(), 4, "{lines:?}");
    assert_eq!(s.history.epochs.len(), 4);
    assert!(
        lines.iter().any(|l| l.starts_with("kept epoch 4 of 4")),
        "{lines:?}"
    );
    assert!(cfg.out.exists() && cfg.history.exists());
}

/// `--progress json` gives scripts one JSON object per line on stderr: progress that ends at the
/// total, and each skipped file as a warning event naming it.
#[test]
fn json_progress_lines_for_scripts() {
    let (_d, data, m, out) = tiny_setup(3);
    std::fs::write(data.join("train/a/broken.jpg"), b"not a jpeg").unwrap();
    let o = run(&extract_line(
        &m,
        &data,
        &out,
        &["--preprocess", "tf", "--progress", "json"],
    ));
    assert!(o.status.success(), "{}", text(&o));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = events
        .iter()
        .rfind(|e| e["event"] == "progress")
        .expect("progress events");
    assert_eq!(last["done"], 13);
    assert_eq!(last["total"], 13);
    let warning = events
        .iter()
        .find(|e| e["event"] == "warning")
        .expect("a warning event");
    assert!(
        warning["message"].as_str().unwrap().contains("broken.jpg"),
        "{warning}"
    );
}

/// The photo sections of an HTML report: (id, figures inside) in file order.
pub(crate) fn html_sections(html: &str) -> Vec<(String, usize)> {
    html.split("<section class=\"cell\" id=\"")
        .skip(1)
        .map(|part| {
            let id = part.split('"').next().unwrap().to_string();
            let body = part.split("</section>").next().unwrap();
            (id, body.matches("<figure").count())
        })
        .collect()
}

/// The count a report links to section `id` with (`<a href="#id">N</a>`).
pub(crate) fn html_link(html: &str, id: &str) -> Option<usize> {
    let at = html.find(&format!("<a href=\"#{id}\">"))?;
    let rest = &html[at..];
    rest[rest.find('>')? + 1..rest.find("</a>")?].parse().ok()
}

/// `evaluate --html`: one self-contained file whose confusion cells each open a section holding
/// exactly the photos counted in the cell, plus the top losses, every thumbnail an embedded JPEG;
/// learning curves drawn; it replaces only an earlier report and never an input.
#[test]
fn html_report_opens_each_confusion_cell_on_its_photos() {
    let (d, _data, _model, cache) = tiny_features(&["a", "b", "c"], 4, 1);
    let head = d.path().join("h.h5");
    train_head(&cache, &head, &["--epochs", "3", "-q"]);
    let html = d.path().join("r.html");
    // `evaluate --head h.h5 --features f.h5 --html OUT` and `extra`.
    let to_html = |out: &Path, extra: &[&str]| -> Vec<String> {
        let line = [
            "evaluate",
            "--head",
            s(&head),
            "--features",
            s(&cache),
            "--html",
            s(out),
        ];
        line.iter().chain(extra).map(|a| a.to_string()).collect()
    };
    fn argv(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let e = evaluate_json(&head, &cache, &["--top", "5"]);
    let log = ok(&argv(&to_html(&html, &["--top", "5"])));
    assert!(log.contains("wrote ") && log.contains("r.html"), "{log}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!doctype html>\n"), "{}", &page[..80]);
    assert!(
        !page.contains("<script") && !page.contains("http"),
        "self-contained"
    );
    let confusion = e["metrics"]["confusion"].as_array().unwrap();
    let sections = html_sections(&page);
    let mut in_cells = 0;
    for (t, row) in confusion.iter().enumerate() {
        for (p, n) in row.as_array().unwrap().iter().enumerate() {
            let n = n.as_u64().unwrap() as usize;
            let id = format!("cell-{t}-{p}");
            let section = sections.iter().find(|(s, _)| *s == id);
            if n == 0 {
                assert!(section.is_none() && html_link(&page, &id).is_none(), "{id}");
                continue;
            }
            assert_eq!(html_link(&page, &id), Some(n), "{id}'s link");
            assert_eq!(section.map(|s| s.1), Some(n), "{id}'s photos");
            in_cells += n;
        }
    }
    assert_eq!(in_cells, 12);
    let top = e["metrics"]["top_losses"].as_array().unwrap().len();
    assert_eq!(page.matches("<img ").count(), in_cells + top);
    assert_eq!(
        page.matches("src=\"data:image/jpeg;base64,/9j/").count(),
        in_cells + top,
        "every thumbnail an embedded JPEG"
    );
    assert_eq!(page.matches("<polyline").count(), 4, "train and val curves");
    // It replaces its own report, but neither an input nor a file that is not a report.
    ok(&argv(&to_html(&html, &[])));
    fails(&argv(&to_html(&cache, &[])), &["is an input"]);
    let notes = d.path().join("notes.html");
    std::fs::write(&notes, "<p>mine</p>").unwrap();
    fails(&argv(&to_html(&notes, &[])), &["notes.html"]);
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "<p>mine</p>");
}
