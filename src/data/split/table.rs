//! `split --labels TABLE`: every image a label table names ([`crate::data::labels`]) placed in
//! train, val or test, a fraction of each class in val and in test. Single-label tables are
//! stratified class by class (each class shuffled by its own seeded generator); multi-label tables
//! by iterative stratification (Sechidis, Tsoumakas and Vlahavas 2011): the rarest tag's images are
//! dealt first, each to the split that still wants most of that tag. The output is the images at
//! `OUT/<split>/<path below the source>`, `MANIFEST.tsv`, `labels.csv` (path below OUT, label, split:
//! `extract --data OUT --labels OUT/labels.csv --split-col split` reads it) and one labels file per
//! split (`train.csv`, `val.csv`, `test.csv`).

use std::collections::BTreeMap;

use rayon::prelude::*;

use super::{class_rng, write, Planned, SplitConfig, SplitSummary, SPLITS};
use crate::data::decode::decode;
use crate::data::labels::{scan_table, LabelTable};
use crate::data::scan::Item;
use crate::error::{Error, Result};
use crate::events::{Event, Reporter};
use crate::util::rng::Rng;

/// The label files a table split writes at the top of its output.
pub(super) const LABEL_FILES: [&str; 4] = ["labels.csv", "train.csv", "val.csv", "test.csv"];

/// The val and test fractions: each in [0, 1), together under 1 (train keeps the rest).
pub(super) fn check_fractions((val, test): (f64, f64)) -> Result<()> {
    for (name, f) in [("val_fraction", val), ("test_fraction", test)] {
        if !(0.0..1.0).contains(&f) {
            return Err(Error::invalid(name, format!("must be in [0, 1), got {f}")));
        }
    }
    if val + test >= 1.0 {
        return Err(Error::invalid(
            "test_fraction",
            format!("val {val} + test {test} leave nothing for train"),
        ));
    }
    Ok(())
}

/// Each item's split (0 train, 1 val, 2 test), class by class: `round(fraction x n)` of each
/// class's shuffled images in test, then val.
pub fn stratify_classes(
    items: &[Item],
    classes: &[String],
    (val, test): (f64, f64),
    seed: u64,
) -> Vec<usize> {
    let mut out = vec![0; items.len()];
    for (c, name) in classes.iter().enumerate() {
        let mut idx: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].label as usize == c)
            .collect();
        class_rng(seed, name).shuffle(&mut idx);
        let n = idx.len() as f64;
        let (k_test, k_val) = ((test * n).round() as usize, (val * n).round() as usize);
        for (k, &i) in idx.iter().enumerate() {
            out[i] = if k < k_test {
                2
            } else if k < k_test + k_val {
                1
            } else {
                0
            };
        }
    }
    out
}

/// Each item's split (0 train, 1 val, 2 test) by iterative stratification of its tags (sorted
/// class indices): while images are left, the tag with the fewest left is taken, and each of its
/// images (in seeded order) goes to the split with the largest remaining demand for that tag
/// (ties: the largest remaining demand overall, then the seeded generator); the split's demand for
/// each of the image's tags and overall drops by one. Splits with fraction 0 get nothing.
pub fn stratify_tags(
    tags: &[Vec<u32>],
    classes: usize,
    fractions: (f64, f64),
    seed: u64,
) -> Vec<usize> {
    let r = [1.0 - fractions.0 - fractions.1, fractions.0, fractions.1];
    let n = tags.len();
    let mut per_tag = vec![0f64; classes];
    for t in tags {
        for &c in t {
            per_tag[c as usize] += 1.0;
        }
    }
    let mut want: [f64; 3] = r.map(|f| f * n as f64);
    let mut want_tag: Vec<[f64; 3]> = per_tag.iter().map(|&k| r.map(|f| f * k)).collect();
    let mut rng = Rng(seed ^ 0x5717_a71f);
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    let mut out = vec![usize::MAX; n];
    let mut left = n;
    let mut left_tag = per_tag.clone();
    let open: Vec<usize> = (0..3).filter(|&j| r[j] > 0.0).collect();
    while left > 0 {
        let rarest = (0..classes)
            .filter(|&c| left_tag[c] > 0.0)
            .min_by(|&a, &b| left_tag[a].total_cmp(&left_tag[b]).then(a.cmp(&b)));
        for &i in &order {
            if out[i] != usize::MAX || rarest.is_some_and(|c| !tags[i].contains(&(c as u32))) {
                continue;
            }
            let key = |j: usize| rarest.map_or(0.0, |c| want_tag[c][j]);
            let best = open
                .iter()
                .map(|&j| key(j))
                .fold(f64::NEG_INFINITY, f64::max);
            let tied: Vec<usize> = open.iter().copied().filter(|&j| key(j) == best).collect();
            let most = tied
                .iter()
                .map(|&j| want[j])
                .fold(f64::NEG_INFINITY, f64::max);
            let tied: Vec<usize> = tied.into_iter().filter(|&j| want[j] == most).collect();
            let j = tied[rng.below(tied.len())];
            out[i] = j;
            want[j] -= 1.0;
            for &c in &tags[i] {
                want_tag[c as usize][j] -= 1.0;
                left_tag[c as usize] -= 1.0;
            }
            left -= 1;
        }
    }
    out
}

/// The images that decode, and the broken ones with the reason (each listed, none replaced: a
/// table split places every image it can read).
fn readable(
    cfg: &SplitConfig,
    items: Vec<Item>,
    rep: &dyn Reporter,
) -> (Vec<Item>, Vec<(std::path::PathBuf, String)>) {
    rep.report(Event::Start {
        task: "check",
        total: items.len() as u64,
        done: 0,
    });
    let checked: Vec<Option<String>> = items
        .par_iter()
        .map(|it| {
            let r = decode(&cfg.src.join(it.path()))
                .err()
                .map(|e| e.to_string());
            rep.report(Event::Advance(1));
            r
        })
        .collect();
    rep.report(Event::Finish);
    let (mut good, mut broken) = (Vec::new(), Vec::new());
    for (it, err) in items.into_iter().zip(checked) {
        match err {
            None => good.push(it),
            Some(e) => {
                rep.report(Event::Warning(&format!("skipped: {e}")));
                broken.push((cfg.src.join(it.path()), e));
            }
        }
    }
    (good, broken)
}

/// The character that joins a multi-label image's tags in the written tables: the table's own
/// delimiter (a space without one), else the first of `|`, `;` and `,` that no class name holds.
/// Class names holding every one of them are refused: the tables could not be read back.
fn joiner(t: &LabelTable, classes: &[String]) -> Result<char> {
    let first = t.label_delim.unwrap_or(' ');
    [first, ' ', '|', ';', ',']
        .into_iter()
        .find(|&d| !classes.iter().any(|c| c.contains(d)))
        .ok_or_else(|| {
            Error::dataset(
                &t.file,
                "its tags hold every delimiter the written tables could use (space, |, ; and ,): rename them",
            )
        })
}

/// `split --labels`: see the module documentation.
pub(super) fn split_table(
    cfg: &SplitConfig,
    t: &LabelTable,
    excluded: &std::collections::HashSet<String>,
    rep: &dyn Reporter,
) -> Result<SplitSummary> {
    if t.split_col.is_some() {
        return Err(Error::invalid(
            "split_col",
            "split makes the splits: give a table without a split column",
        ));
    }
    let (ds, _) = scan_table(&cfg.src, t)?;
    for (p, why) in &ds.warnings {
        rep.report(Event::Warning(&format!("{}: {why}", p.display())));
    }
    let items: Vec<Item> = ds.splits.into_iter().flat_map(|s| s.items).collect();
    let files: Vec<std::path::PathBuf> = items.iter().map(|i| cfg.src.join(i.path())).collect();
    let (items, left_out) = super::kept(items, &super::not_listed(&files, excluded)?);
    let (items, broken) = readable(cfg, items, rep);
    let split_of = if ds.multi_label {
        let tags: Vec<Vec<u32>> = items.iter().map(|i| i.tags.clone()).collect();
        stratify_tags(&tags, ds.classes.len(), cfg.fractions, cfg.seed)
    } else {
        stratify_classes(&items, &ds.classes, cfg.fractions, cfg.seed)
    };
    let join = joiner(t, &ds.classes)?;
    if ds.multi_label && Some(join) != t.label_delim {
        let why = match t.label_delim {
            Some(_) => "a tag holds the table's own delimiter",
            None => "the table gave its tags as lists",
        };
        rep.report(Event::Notice(&format!(
            "the written tables join tags with {join:?} ({why}): read them back with --label-delim {join:?}"
        )));
    }
    let mut summary = SplitSummary {
        broken,
        excluded: left_out,
        ..Default::default()
    };
    let mut counts: BTreeMap<String, (usize, [usize; 3])> = BTreeMap::new();
    let mut planned = Vec::new();
    let mut all = csv::WriterBuilder::new().from_writer(Vec::new());
    let mut per: Vec<csv::Writer<Vec<u8>>> = (0..3)
        .map(|_| csv::WriterBuilder::new().from_writer(Vec::new()))
        .collect();
    let csv_err = |e: csv::Error| Error::Config(format!("split: cannot write a labels table: {e}"));
    all.write_record(["path", "label", "split"])
        .map_err(csv_err)?;
    for w in &mut per {
        w.write_record(["path", "label"]).map_err(csv_err)?;
    }
    for (it, &j) in items.iter().zip(&split_of) {
        let names: Vec<&str> = if ds.multi_label {
            it.tags
                .iter()
                .map(|&c| ds.classes[c as usize].as_str())
                .collect()
        } else {
            vec![ds.classes[it.label as usize].as_str()]
        };
        for n in &names {
            let e = counts.entry(n.to_string()).or_default();
            e.0 += 1;
            e.1[j] += 1;
        }
        let label = names.join(&join.to_string());
        let rel = std::path::Path::new(SPLITS[j]).join(it.path());
        let text = crate::util::paths::to_text(&rel);
        all.write_record([text.as_str(), &label, SPLITS[j]])
            .map_err(csv_err)?;
        per[j]
            .write_record([text.as_str(), &label])
            .map_err(csv_err)?;
        planned.push(Planned {
            split: SPLITS[j],
            class: label,
            src: cfg.src.join(it.path()),
            rel,
        });
    }
    for class in &ds.classes {
        let (all, [train, ..]) = counts.get(class).copied().unwrap_or_default();
        if train == 0 {
            rep.report(Event::Warning(&format!(
                "class '{class}' has no train image ({all} in all): a head trained on this split cannot learn it; label more photos of it or lower the val and test fractions"
            )));
        }
    }
    summary.classes = counts;
    let text = |w: csv::Writer<Vec<u8>>| -> Result<String> {
        let bytes = w.into_inner().map_err(|e| Error::Config(e.to_string()))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    let mut extra = vec![("labels.csv", text(all)?)];
    for (name, w) in ["train.csv", "val.csv", "test.csv"].into_iter().zip(per) {
        extra.push((name, text(w)?));
    }
    write(cfg, &planned, &extra, &summary)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 600 images with 1-3 of 6 tags of very different frequencies: every image in one split, and
    /// each tag's share of test and val within a few images of the fractions (where a random split
    /// of the rarest tag is off by several), the same for the same seed.
    #[test]
    fn iterative_stratification_keeps_each_tags_share_in_every_split() {
        let mut rng = Rng(3);
        let weights = [0.6, 0.3, 0.15, 0.08, 0.04, 0.02];
        let tags: Vec<Vec<u32>> = (0..600)
            .map(|_| {
                let mut t: Vec<u32> = (0..6u32)
                    .filter(|&c| (rng.next_u64() % 1000) as f64 / 1000.0 < weights[c as usize])
                    .collect();
                if t.is_empty() {
                    t.push((rng.next_u64() % 2) as u32);
                }
                t
            })
            .collect();
        let f = (0.1, 0.2);
        let a = stratify_tags(&tags, 6, f, 42);
        assert_eq!(a, stratify_tags(&tags, 6, f, 42));
        assert!(a.iter().all(|&j| j < 3));
        let sizes: Vec<usize> = (0..3)
            .map(|j| a.iter().filter(|&&x| x == j).count())
            .collect();
        assert!(
            (sizes[2] as f64 - 120.0).abs() <= 6.0 && (sizes[1] as f64 - 60.0).abs() <= 6.0,
            "{sizes:?}"
        );
        for c in 0..6u32 {
            let with: Vec<usize> = (0..600).filter(|&i| tags[i].contains(&c)).collect();
            for (j, frac) in [(1usize, f.0), (2, f.1)] {
                let got = with.iter().filter(|&&i| a[i] == j).count() as f64;
                let want = frac * with.len() as f64;
                assert!(
                    (got - want).abs() <= 1.5,
                    "tag {c} split {j}: {got} of {}, want {want}",
                    with.len()
                );
            }
        }
        // A zero fraction gets nothing.
        let b = stratify_tags(&tags, 6, (0.0, 0.25), 1);
        assert!(!b.contains(&1));
    }

    /// Single-label: round(fraction x n) of each class, whatever the other classes hold.
    #[test]
    fn classes_are_stratified_one_by_one() {
        let items: Vec<Item> = (0..60)
            .map(|i| Item {
                rel_path: format!("{i}.jpg"),
                label: u32::from(i >= 50),
                tags: vec![],
            })
            .collect();
        let classes = vec!["a".to_string(), "b".to_string()];
        let s = stratify_classes(&items, &classes, (0.1, 0.2), 7);
        let count = |c: u32, j: usize| {
            (0..60)
                .filter(|&i| items[i].label == c && s[i] == j)
                .count()
        };
        assert_eq!((count(0, 2), count(0, 1), count(0, 0)), (10, 5, 35));
        assert_eq!((count(1, 2), count(1, 1), count(1, 0)), (2, 1, 7));
        assert_eq!(s, stratify_classes(&items, &classes, (0.1, 0.2), 7));
    }

    #[test]
    fn fractions_are_checked() {
        assert!(check_fractions((0.1, 0.2)).is_ok());
        assert!(check_fractions((0.5, 0.5)).is_err());
        assert!(check_fractions((-0.1, 0.2)).is_err());
    }
}
