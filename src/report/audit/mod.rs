//! `headstart audit`: what is wrong with a labelled photo collection, found from its cached
//! features. Nothing is moved or deleted; the findings go to `audit.tsv` and a summary.
//!
//! - **Likely label errors**: out-of-fold probabilities (stratified k-fold, seeded; each fold's rows
//!   are scored by a head that never saw them: scikit-learn's `LogisticRegression()` objective,
//!   C = 1, through linfa, on the pooled features; [`folds`]), then confident learning ([`confident`], as
//!   cleanlab's `find_label_issues`), each flagged photo with the class suggested for it.
//! - **Exact and near duplicates**: the sha256 of the image files (when the photos are where the
//!   cache says), and pairs whose features have a cosine similarity of at least `near` ([`near`]).
//!   A pair across train, val and test is **leakage**: the test photo was seen in training.
//! - The out-of-fold probabilities go to `out_of_fold.csv` (split, file, label, `p_<class>`).
//! - **Outliers**: photos whose mean cosine distance to their 5 nearest photos is far out (its
//!   logarithm over the third quartile by three inter-quartile ranges).
//!
//! A cache over the memory budget, or of more than [`EXACT_MAX_ROWS`] photos, is audited
//! **approximately** ([`streamed`]): read block by block and never held whole, neighbours searched
//! through inverted lists of projected features ([`approx`]), each reported pair's cosine exact.

pub mod approx;
pub mod confident;
pub mod folds;
pub mod near;
pub mod streamed;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::Array2;
use serde::Serialize;

use crate::cache::FeatureCache;
use crate::error::{Error, Result};
use crate::events::{Event, Reporter};
use crate::head::net::Pool;
use crate::report::evaluate::BLOCK_BYTES;
use crate::report::html::{self, HtmlSummary};
use crate::util::output::{Output, Replace};
use folds::fold_count;
pub use folds::{folds_of, out_of_fold, MAX_FOLD_ROWS};

/// The header of `audit.tsv`.
pub const HEADER: &str = "file\tsplit\tissue\tscore\tgiven\tsuggested\tpair";

#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub features: PathBuf,
    /// Where `audit.tsv` goes (default: `<cache name>.audit/` beside the cache).
    pub out: PathBuf,
    /// Folds of the out-of-fold probabilities; `None`: 5, fewer when a class has fewer rows.
    pub folds: Option<usize>,
    /// Cosine similarity from which two photos are near duplicates.
    pub near: f32,
    /// How spatial features are pooled to one vector per photo.
    pub pool: Pool,
    pub seed: u64,
    /// Also write `out/audit.html` ([`crate::report::html::audit`]).
    pub html: bool,
    /// Memory budget in bytes (`None`: half the machine's available memory). An exact audit holds
    /// the photos' pooled features twice; over the budget the audit is approximate.
    pub memory: Option<u64>,
    /// Audit approximately ([`streamed`]) whatever the size.
    pub approximate: bool,
}

impl AuditConfig {
    pub fn new(features: impl Into<PathBuf>) -> Self {
        let features = features.into();
        let stem = features
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = stem.strip_suffix(".features").unwrap_or(&stem).to_string();
        AuditConfig {
            out: features.with_file_name(format!("{stem}.audit")),
            features,
            folds: None,
            near: 0.95,
            pool: Pool::Avg,
            seed: 42,
            html: false,
            memory: None,
            approximate: false,
        }
    }

    fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.near) {
            return Err(Error::invalid(
                "near",
                format!("a cosine similarity in [0, 1], got {}", self.near),
            ));
        }
        if let Some(k) = self.folds {
            crate::util::limits::check("folds", k, 2, 50)?;
        }
        Ok(())
    }
}

/// One finding, a row of `audit.tsv`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Finding {
    pub file: String,
    pub split: String,
    /// `label`, `duplicate`, `leakage` or `outlier`.
    pub issue: &'static str,
    /// label: self-confidence (low is suspicious); duplicate, leakage: cosine similarity (1 for
    /// identical bytes); outlier: the mean distance to the nearest photos.
    pub score: f64,
    pub given: String,
    pub suggested: String,
    /// The other photo of a duplicate pair (its path, as `file`).
    pub pair: String,
}

/// What the audit found, in numbers.
#[derive(Debug, Clone, Serialize)]
pub struct AuditSummary {
    pub features: String,
    pub audit_tsv: String,
    pub photos: usize,
    /// Folds of the label check; `None` (null) when labels were not checked.
    pub folds: Option<usize>,
    /// Accuracy of the out-of-fold predictions against the given labels; `None` (null) when
    /// labels were not checked.
    pub out_of_fold_accuracy: Option<f64>,
    pub label_issues: usize,
    pub exact_duplicates: usize,
    pub near_duplicates: usize,
    /// Duplicate pairs (exact or near) whose photos are in different splits.
    pub leakage: usize,
    pub outliers: usize,
    /// Whether the neighbours were searched approximately ([`streamed`]).
    pub approximate: bool,
    pub seconds: f64,
    /// The HTML report, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<HtmlSummary>,
    /// Every finding, as in audit.tsv.
    #[serde(skip)]
    pub findings: Vec<Finding>,
}

/// The photos of the cache's own splits (train, val, test; not augmented copies), in that order.
struct Photos {
    splits: Vec<&'static str>,
    labels: Vec<u32>,
    /// (split, path) of each row.
    names: Vec<(String, String)>,
}

fn photos(cache: &FeatureCache) -> Result<Photos> {
    let meta = &cache.meta;
    let splits: Vec<&'static str> = ["train", "val", "test"]
        .into_iter()
        .filter(|s| meta.splits.iter().any(|x| x == s))
        .collect();
    let (mut labels, mut names) = (Vec::new(), Vec::new());
    for &split in &splits {
        let d = cache.read_lists(split)?;
        labels.extend(d.labels);
        names.extend(d.paths.into_iter().map(|p| (split.to_string(), p)));
    }
    if labels.len() < 2 {
        return Err(Error::cache(
            &cache.path,
            format!(
                "{} photos in train, val and test; an audit needs at least 2",
                labels.len()
            ),
        ));
    }
    Ok(Photos {
        splits,
        labels,
        names,
    })
}

/// Visits the photos' features in order, block by block as they are read, pooled:
/// `f(first photo, pooled rows)`. The features as stored are never held whole.
fn for_each_pooled(
    cache: &FeatureCache,
    ph: &Photos,
    pool: Pool,
    mut f: impl FnMut(usize, Array2<f32>) -> Result<()>,
) -> Result<()> {
    let meta = &cache.meta;
    let row = meta.feature_shape.iter().product::<usize>().max(1);
    let mut at = 0;
    for &split in &ph.splits {
        let n = cache.split_len(split)?;
        cache.for_each_block(split, n, BLOCK_BYTES, |_, rows| {
            let k = rows.len() / row;
            f(at, pool.apply(rows, k, &meta.feature_shape, &meta.layout)?)?;
            at += k;
            Ok(())
        })?;
    }
    Ok(())
}

/// One matrix of every photo's pooled features.
fn pooled(cache: &FeatureCache, ph: &Photos, pool: Pool) -> Result<Array2<f32>> {
    let width = pool.output_dim(&cache.meta.feature_shape, &cache.meta.layout)?;
    let mut x = Array2::<f32>::zeros((ph.labels.len(), width));
    for_each_pooled(cache, ph, pool, |at, p| {
        x.slice_mut(ndarray::s![at..at + p.nrows(), ..]).assign(&p);
        Ok(())
    })?;
    Ok(x)
}

/// Most photos audited exactly: the all-pairs scan grows with their square (100,000 photos of
/// 1280 features take about 4 minutes on 2 cores; 2 million would take days).
pub const EXACT_MAX_ROWS: usize = 100_000;

/// The memory budget in bytes.
fn budget(cfg: &AuditConfig) -> u64 {
    cfg.memory
        .unwrap_or_else(crate::head::stream::default_budget)
}

/// Bytes the fold heads' fits hold besides the photos: a float64 copy of each fit's training rows,
/// for as many fits as run at once.
fn fits_need(rows: usize, width: usize) -> u64 {
    let at_once = rayon::current_num_threads().min(5) as u64;
    at_once * (rows.min(MAX_FOLD_ROWS) * width * 8) as u64
}

/// Bytes an exact audit holds: the photos' pooled features twice (the photos and the normalised
/// copy of the neighbour scan), their probabilities, a block of the features as stored while they
/// are pooled, and the fits' copies.
fn exact_need(cfg: &AuditConfig, cache: &FeatureCache) -> Result<u64> {
    let meta = &cache.meta;
    let (mut rows, mut largest) = (0usize, 0usize);
    for split in ["train", "val", "test"] {
        if meta.splits.iter().any(|s| s == split) {
            let n = cache.split_len(split)?;
            rows += n;
            largest = largest.max(n);
        }
    }
    let width = cfg.pool.output_dim(&meta.feature_shape, &meta.layout)?;
    // Two pooled copies (the photos and the neighbour scan's normalised copy), and a block of
    // the features as stored while they are pooled.
    let stored = largest as u64 * meta.feature_shape.iter().product::<usize>() as u64 * 4;
    let probs = (rows * meta.classes.len() * 4) as u64;
    Ok(probs
        + (2 * rows as u64 * width as u64) * 4
        + stored.min(BLOCK_BYTES as u64)
        + fits_need(rows, width))
}

/// The error of a scan that found more than [`near::MAX_PAIRS`] near duplicates.
fn too_many_pairs(cfg: &AuditConfig, n: usize) -> Error {
    Error::invalid(
        "near",
        format!(
            "{}: at a cosine of {} more than {} pairs of its {n} photos are near duplicates: the features hardly tell these photos apart at that similarity; give a higher --near (e.g. 0.99)",
            cfg.features.display(),
            cfg.near,
            near::MAX_PAIRS
        ),
    )
}

/// The sha256 of each photo's file, when every file is below the cache's data root; `None` (said
/// as a notice) when they are not there.
fn file_hashes(
    cache: &FeatureCache,
    names: &[(String, String)],
    rep: &dyn Reporter,
) -> Option<Vec<String>> {
    let root = PathBuf::from(&cache.meta.data_root);
    // Paths that leave the photos' folder (a crafted cache) are not read.
    let files: Vec<PathBuf> = match names
        .iter()
        .map(|(_, p)| crate::util::paths::contained(p, &cache.path, "path").map(|r| root.join(r)))
        .collect::<crate::error::Result<_>>()
    {
        Ok(f) => f,
        Err(e) => {
            rep.report(Event::Notice(&format!("exact duplicates not checked: {e}")));
            return None;
        }
    };
    if let Some(missing) = files.iter().find(|f| !f.is_file()) {
        rep.report(Event::Notice(&format!(
            "exact duplicates not checked: {} is not there (the photos are not where the cache was made)",
            missing.display()
        )));
        return None;
    }
    use rayon::prelude::*;
    files
        .par_iter()
        .map(|f| crate::util::hash::sha256_file(f).ok())
        .collect()
}

/// Whether `p` is an audit.tsv (the rule by which an audit replaces its output).
pub fn is_audit(p: &Path) -> bool {
    std::fs::read(p).is_ok_and(|b| b.starts_with(HEADER.as_bytes()))
}

impl Photos {
    /// A finding about photo `i`, with its given class (no suggestion, no pair).
    fn finding(&self, i: usize, issue: &'static str, score: f64, classes: &[String]) -> Finding {
        Finding {
            file: self.names[i].1.clone(),
            split: self.names[i].0.clone(),
            issue,
            score,
            given: classes[self.labels[i] as usize].clone(),
            suggested: String::new(),
            pair: String::new(),
        }
    }
}

/// Pairs of photos with the same file bytes (earlier, later), each with similarity 1.
fn exact_pairs(hashes: &[String]) -> HashMap<(usize, usize), f64> {
    let (mut pairs, mut first) = (HashMap::new(), HashMap::new());
    for (i, s) in hashes.iter().enumerate() {
        match first.get(s.as_str()) {
            Some(&j) => {
                pairs.insert((j, i), 1.0);
            }
            None => {
                first.insert(s.as_str(), i);
            }
        }
    }
    pairs
}

/// The likely label errors that confident learning finds in out-of-fold `probs`, and the accuracy
/// of those probabilities against the given labels.
fn label_findings(ph: &Photos, probs: &Array2<f32>, classes: &[String]) -> (f64, Vec<Finding>) {
    let right = probs
        .outer_iter()
        .zip(&ph.labels)
        .filter(|(r, &l)| crate::report::metrics::argmax(r.iter()) == l as usize)
        .count();
    let found = confident::find_label_issues(probs.view(), &ph.labels)
        .into_iter()
        .map(|issue| {
            let mut f = ph.finding(issue.row, "label", issue.self_confidence, classes);
            f.suggested = classes[issue.suggested as usize].clone();
            f
        })
        .collect();
    (right as f64 / ph.labels.len() as f64, found)
}

/// Out-of-fold probabilities (none for a multi-label cache) and neighbours, from one matrix of
/// every photo: the exact audit.
fn exact(
    cfg: &AuditConfig,
    cache: &FeatureCache,
    ph: &Photos,
    folds: Option<(&[usize], usize)>,
    rep: &dyn Reporter,
) -> Result<(Option<Array2<f32>>, near::Neighbours)> {
    let x = pooled(cache, ph, cfg.pool)?;
    let classes = cache.meta.classes.len();
    let probs = folds
        .map(|(fold, k)| out_of_fold(&x, &ph.labels, classes, fold, k, rep))
        .transpose()?;
    let n = ph.labels.len();
    rep.report(Event::Start {
        task: "neighbours",
        total: n as u64,
        done: 0,
    });
    let mut done = 0;
    let nb = near::scan(&x, cfg.near, 5, |d| {
        rep.report(Event::Advance((d - done) as u64));
        done = d;
    })
    .map_err(|_| too_many_pairs(cfg, n))?;
    rep.report(Event::Finish);
    Ok((probs, nb))
}

/// Whether label errors are looked for: not on a multi-label cache, nor when a class has fewer than
/// 2 photos (a head of the other folds must see every class); each said as a notice.
fn checks_labels(ph: &Photos, classes: &[String], multi_label: bool, rep: &dyn Reporter) -> bool {
    let thin = (0..classes.len()).find(|&c| {
        ph.labels
            .iter()
            .filter(|&&l| l as usize == c)
            .take(2)
            .count()
            < 2
    });
    if multi_label {
        rep.report(Event::Notice(
            "a multi-label cache: label errors are not looked for (duplicates and outliers are)",
        ));
    } else if classes.len() < 2 {
        rep.report(Event::Notice(
            "a cache of one class: label errors are not looked for (duplicates and outliers are)",
        ));
        return false;
    } else if let Some(c) = thin {
        rep.report(Event::Notice(&format!(
            "class '{}' has fewer than 2 photos: label errors are not looked for (duplicates and outliers are)",
            classes[c]
        )));
    }
    !multi_label && thin.is_none()
}

/// The duplicate and leakage findings, most similar first, from the photos' file hashes (when the
/// files were there) and the near pairs: (exact pairs, near pairs not exact, pairs across splits,
/// findings).
fn pair_findings(
    ph: &Photos,
    hashes: Option<&[String]>,
    near: &[(usize, usize, f32)],
    classes: &[String],
) -> (usize, usize, usize, Vec<Finding>) {
    let mut pairs = hashes.map_or_else(HashMap::new, exact_pairs);
    let mut exact = pairs.len();
    let mut near_count = 0;
    let same_bytes = |i: usize, j: usize| hashes.is_some_and(|h| h[i] == h[j]);
    for &(i, j, s) in near {
        // Copies pair with the first copy above; two later copies of one file, found as
        // neighbours, are an exact pair too.
        if pairs.contains_key(&(i, j)) {
            continue;
        }
        if same_bytes(i, j) {
            pairs.insert((i, j), 1.0);
            exact += 1;
        } else {
            pairs.insert((i, j), s as f64);
            near_count += 1;
        }
    }
    let mut sorted: Vec<((usize, usize), f64)> = pairs.into_iter().collect();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let (mut leakage, mut findings) = (0, Vec::new());
    for ((i, j), s) in sorted {
        let across = ph.names[i].0 != ph.names[j].0;
        leakage += usize::from(across);
        // The later photo of the pair (a test one when it crosses) is the one listed.
        let mut f = ph.finding(j, if across { "leakage" } else { "duplicate" }, s, classes);
        f.pair = ph.names[i].1.clone();
        findings.push(f);
    }
    (exact, near_count, leakage, findings)
}

/// Runs the audit of `cfg.features` and writes `cfg.out/audit.tsv`.
pub fn audit(cfg: &AuditConfig, rep: &dyn Reporter) -> Result<AuditSummary> {
    let t0 = Instant::now();
    cfg.validate()?;
    let tsv = cfg.out.join("audit.tsv");
    let out = Output::new(&tsv).input(&cfg.features).replace(Replace::If {
        what: "an audit.tsv",
        check: &is_audit,
    });
    let cache = FeatureCache::open(&cfg.features)?;
    let features = [cfg.features.as_path()];
    crate::report::folders::check_folder(&cfg.out, &features, &features)?;
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    out.check()?;
    // Both outputs are checked before any work.
    let oof = cfg.out.join("out_of_fold.csv");
    probabilities_output(cfg, &oof, &is_probabilities).check()?;
    let html_path = cfg.out.join("audit.html");
    if cfg.html {
        html::check(&html_path, &features)?;
    }
    let classes = cache.meta.classes.clone();
    let ph = photos(&cache)?;
    let n = ph.labels.len();
    let k = fold_count(cfg, &ph.labels, classes.len());
    let fold = folds_of(&ph.labels, classes.len(), k, cfg.seed);
    let folds = checks_labels(&ph, &classes, cache.meta.multi_label, rep).then_some((&fold[..], k));
    let (need, budget) = (exact_need(cfg, &cache)?, budget(cfg));
    let approximate = cfg.approximate || n > EXACT_MAX_ROWS || need > budget;
    if approximate && cfg.near < 0.8 {
        rep.report(Event::Notice(&format!(
            "the approximate search compares each photo with its nearest lists only: at a cosine of {} it finds part of the pairs (it is meant for near duplicates, 0.9 and above)",
            cfg.near
        )));
    }
    let labels_by = match folds {
        Some(_) => format!("out-of-fold probabilities by {k}-fold cross-validation"),
        None => "no label check".into(),
    };
    rep.report(Event::Line(&format!(
        "audit: {n} photos, {} classes; {labels_by}; {}",
        classes.len(),
        if approximate {
            "neighbours approximate (inverted lists of projected features; each pair's cosine exact)"
        } else {
            "neighbours exact (every pair compared)"
        }
    )));
    let (probs, nb) = if approximate {
        streamed::audit(cfg, &cache, &ph, folds, budget, rep)?
    } else {
        exact(cfg, &cache, &ph, folds, rep)?
    };
    let mut findings = Vec::new();
    let (accuracy, label_findings, oof_csv) = match &probs {
        Some(p) => {
            let (a, f) = label_findings(&ph, p, &classes);
            (Some(a), f, Some(probabilities_csv(&oof, p, &ph, &classes)?))
        }
        None => (None, Vec::new(), None),
    };
    let label_issues = label_findings.len();
    findings.extend(label_findings);

    // Duplicates and leakage.
    let hashes = file_hashes(&cache, &ph.names, rep);
    let (exact, near_count, leakage, pair_findings) =
        pair_findings(&ph, hashes.as_deref(), &nb.pairs, &classes);
    findings.extend(pair_findings);

    warn_if_degenerate(&nb.knn_distance, n, rep);
    // Outliers.
    let outliers = near::far_out(&nb.knn_distance);
    for &i in &outliers {
        findings.push(ph.finding(i, "outlier", nb.knn_distance[i] as f64, &classes));
    }

    write_tables(cfg, &out, &oof, &findings, oof_csv.as_deref())?;
    let mut s = AuditSummary {
        features: cfg.features.display().to_string(),
        audit_tsv: tsv.display().to_string(),
        photos: n,
        folds: folds.map(|(_, k)| k),
        out_of_fold_accuracy: accuracy,
        label_issues,
        exact_duplicates: exact,
        near_duplicates: near_count,
        leakage,
        outliers: outliers.len(),
        approximate,
        seconds: 0.0,
        html: None,
        findings,
    };
    if cfg.html {
        s.html = Some(html::audit::write(
            &s,
            &cache.meta.data_root,
            &html_path,
            &[&cfg.features],
        )?);
    }
    s.seconds = t0.elapsed().as_secs_f64();
    Ok(s)
}

/// `audit.tsv` and `out_of_fold.csv` (when labels were checked) together: a failed second write
/// used to leave the new probabilities beside the old table. Without probabilities, an earlier
/// audit's are removed: they would be taken for this one's.
fn write_tables(
    cfg: &AuditConfig,
    out: &Output,
    oof: &Path,
    findings: &[Finding],
    oof_csv: Option<&[u8]>,
) -> Result<()> {
    let write = |text: &[u8]| {
        let text = text.to_vec();
        Box::new(move |tmp: &Path| std::fs::write(tmp, &text).map_err(|e| Error::io(tmp, e)))
            as crate::util::output::WriteTmp
    };
    let oof_out = probabilities_output(cfg, oof, &is_probabilities);
    let mut parts = vec![(out, write(table(findings).as_bytes()))];
    if let Some(csv) = oof_csv {
        parts.push((&oof_out, write(csv)));
    }
    crate::util::output::write_together(parts)?;
    // The check before any work made sure it is an audit's file.
    if oof_csv.is_none() && oof.exists() {
        std::fs::remove_file(oof).map_err(|e| Error::io(oof, e))?;
    }
    Ok(())
}

/// Whether `p` is an audit's `out_of_fold.csv` (the rule by which an audit replaces it).
fn is_probabilities(p: &Path) -> bool {
    std::fs::read(p).is_ok_and(|b| b.starts_with(b"split,file,label,p_"))
}

/// The writer of `out_of_fold.csv` at `path`.
fn probabilities_output<'a>(
    cfg: &AuditConfig,
    path: &Path,
    is_ours: &'a dyn Fn(&Path) -> bool,
) -> Output<'a> {
    Output::new(path).input(&cfg.features).replace(Replace::If {
        what: "an audit's out_of_fold.csv",
        check: is_ours,
    })
}

/// `out_of_fold.csv`: each photo's out-of-fold probabilities (`p_<class>` columns), the input of
/// confident learning, for other tools (cleanlab's `find_label_issues` takes them as they are).
fn probabilities_csv(
    path: &Path,
    probs: &Array2<f32>,
    ph: &Photos,
    classes: &[String],
) -> Result<Vec<u8>> {
    let bad = |e: csv::Error| Error::output(path, format!("cannot write: {e}"));
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut head = vec!["split".to_string(), "file".into(), "label".into()];
    head.extend(classes.iter().map(|c| format!("p_{c}")));
    w.write_record(&head).map_err(bad)?;
    for (i, r) in probs.outer_iter().enumerate() {
        let (split, file) = &ph.names[i];
        let label = &classes[ph.labels[i] as usize];
        let p = r.iter().map(|v| v.to_string());
        w.write_record(
            [split.clone(), file.clone(), label.clone()]
                .into_iter()
                .chain(p),
        )
        .map_err(bad)?;
    }
    w.into_inner()
        .map_err(|e| Error::output(path, format!("cannot write: {e}")))
}

/// `audit.tsv`: the header, then one finding a line (tabs and newlines in names replaced).
fn table(findings: &[Finding]) -> String {
    let clean = |s: &str| crate::data::exclude::escape_field(s);
    let mut s = format!("{HEADER}\n");
    for f in findings {
        s += &format!(
            "{}\t{}\t{}\t{:.6}\t{}\t{}\t{}\n",
            clean(&f.file),
            f.split,
            f.issue,
            f.score,
            clean(&f.given),
            clean(&f.suggested),
            clean(&f.pair)
        );
    }
    s
}

impl AuditSummary {
    /// The summary lines the command prints.
    pub fn report(&self) -> String {
        format!(
            "photos: {}\n{}\nlikely label errors: {}\nexact duplicates: {}\nnear duplicates: {}{}\nleakage (duplicates across splits): {}\noutliers: {}\nwrote {} in {:.1} s\n",
            self.photos, match (self.folds, self.out_of_fold_accuracy) {
                (Some(k), Some(a)) => format!("out-of-fold accuracy ({k}-fold): {a:.4}"),
                _ => "out-of-fold accuracy: none (labels not checked)".into(),
            }, self.label_issues, self.exact_duplicates,
            self.near_duplicates, if self.approximate { " (searched approximately)" } else { "" },
            self.leakage, self.outliers, self.audit_tsv, self.seconds
        ) + &self.html.as_ref().map_or(String::new(), HtmlSummary::line)
    }
}

/// Features that do not tell photos apart (all zero, or one row for all) find nothing: said, when
/// every photo's neighbour distance `d` is the same.
fn warn_if_degenerate(d: &[f32], n: usize, rep: &dyn Reporter) {
    let (lo, hi) = d
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if n > 2 && !d.is_empty() && hi - lo < 1e-6 {
        rep.report(Event::Warning(&format!(
            "every photo lies at the same distance ({lo:.4}) from its neighbours: the features do not tell the photos apart (all zero, or one row for all?), so the duplicate and outlier counts mean nothing; extract them again"
        )));
    }
}

#[cfg(test)]
mod tests;
