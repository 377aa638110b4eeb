//! What a score file was written with, kept beside it as `OUT.run.json`: the classifier (head or
//! exported model, by sha256), the base model or feature cache, and the test-time augmentation.
//! `--resume` refuses a file whose record differs, so rows of two heads or models never end up in
//! one file; a file of an earlier release (no record) is resumed as before, and gets one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ScoreConfig;
use crate::error::{Error, Result};
use crate::util::output::{Output, Replace};

const FORMAT: &str = "headstart-score-run/2";
/// Records of earlier releases: no `--threshold`, `--top-k` or preprocessing in them (not compared).
const FORMAT_1: &str = "headstart-score-run/1";

/// The record of a score run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct RunRecord {
    format: String,
    /// The head's sha256, or `export` for an exported model (its sha256 is `model`'s).
    classifier: String,
    /// The base or exported model's sha256, or the feature cache's fingerprint and split.
    source: String,
    tta_flip: bool,
    /// With `tta_flip`: what is mirrored (`input`, the preprocessed input; records of earlier
    /// releases, which mirrored the photo before its crop, have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mirror: Option<String>,
    /// `--threshold`, when given (not in records of format 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    threshold: Option<f32>,
    /// `--top-k`, when given (not in records of format 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    top_k: Option<usize>,
    /// An exported model's preprocessing as given (`--preprocess`, `--mean`, ..., `--layout`; a
    /// head brings its own, recorded by its sha256); not in records of format 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    preprocess: Option<String>,
}

impl RunRecord {
    /// The record of the run `cfg` describes, reading `source` (a model's sha256, or a cache's
    /// fingerprint and split).
    pub(super) fn of(cfg: &ScoreConfig, source: String) -> Result<RunRecord> {
        let classifier = match &cfg.head {
            Some(h) => crate::util::hash::sha256_file(h)?,
            None => "export".into(),
        };
        Ok(RunRecord {
            format: FORMAT.into(),
            classifier,
            source,
            tta_flip: cfg.tta_flip,
            mirror: cfg.tta_flip.then(|| "input".to_string()),
            threshold: cfg.threshold,
            top_k: cfg.top_k,
            preprocess: cfg
                .head
                .is_none()
                .then(|| format!("{:?} {:?}", cfg.overrides, cfg.layout)),
        })
    }

    /// Where the record of `out` is kept.
    pub(super) fn path(out: &Path) -> PathBuf {
        let mut name = out.as_os_str().to_os_string();
        name.push(".run.json");
        PathBuf::from(name)
    }

    /// The record kept beside the score file `out`, if there is one (a file of an earlier release
    /// has none).
    fn read(out: &Path) -> Result<Option<RunRecord>> {
        let path = Self::path(out);
        crate::util::paths::check_regular(&path)?;
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(None);
        };
        let rec = serde_json::from_str(&text).map_err(|e| {
            Error::output(
                &path,
                format!("is not a score run record ({e}); remove it or choose another --out"),
            )
        })?;
        Ok(Some(rec))
    }

    /// The first way `other`'s run differs from this one's that would put unlike rows in one
    /// file: (what, this run's, the other's).
    fn differs(&self, other: &RunRecord) -> Option<(&'static str, String, String)> {
        let shown = |t: Option<String>| t.unwrap_or_else(|| "none".into());
        let mut pairs = vec![
            (
                "classifier (head sha256)",
                self.classifier.clone(),
                other.classifier.clone(),
            ),
            (
                "model or features",
                self.source.clone(),
                other.source.clone(),
            ),
            (
                "--tta flip",
                on(self.tta_flip).into(),
                on(other.tta_flip).into(),
            ),
        ];
        // A record of format 1 did not write these: unknown, not "none".
        if self.format != FORMAT_1 && other.format != FORMAT_1 {
            let threshold = |r: &RunRecord| shown(r.threshold.map(|t| t.to_string()));
            let top_k = |r: &RunRecord| shown(r.top_k.map(|k| k.to_string()));
            let pre = |r: &RunRecord| shown(r.preprocess.clone());
            pairs.extend([
                ("--threshold", threshold(self), threshold(other)),
                ("--top-k", top_k(self), top_k(other)),
                ("the exported model's preprocessing", pre(self), pre(other)),
            ]);
        }
        pairs.into_iter().find(|(_, a, b)| a != b)
    }

    /// Refuses to resume `out` when its record says another run wrote it.
    pub(super) fn check_resume(&self, out: &Path) -> Result<()> {
        let path = Self::path(out);
        // A record left after its file was removed speaks for nothing.
        if !out.exists() {
            return Ok(());
        }
        let Some(old) = Self::read(out)? else {
            return Ok(());
        };
        if let Some((what, now, there)) = self.differs(&old) {
            return Err(Error::output(
                out,
                format!("was written by another run ({what}: {there} there, {now} now, as {} records); --resume continues only the same run: choose another --out, or --force to replace it", path.display()),
            ));
        }
        if self.tta_flip && old.tta_flip && old.mirror != self.mirror {
            return Err(Error::output(
                out,
                "was written with --tta flip by an earlier release, which mirrored the photo before its crop: its rows would be averaged with another mirror than this run's; --force scores it again",
            ));
        }
        Ok(())
    }

    /// Writes the record of `out` (replacing only a record).
    pub(super) fn write(&self, out: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Config(format!("score run record: {e}")))?;
        let is_record = |p: &Path| {
            crate::util::paths::check_regular(p).is_ok()
                && std::fs::metadata(p).is_ok_and(|m| m.is_file())
                && std::fs::read_to_string(p)
                    .ok()
                    .and_then(|t| serde_json::from_str::<RunRecord>(&t).ok())
                    .is_some_and(|r| r.format == FORMAT || r.format == FORMAT_1)
        };
        Output::new(&Self::path(out))
            .input(out)
            .replace(Replace::If {
                what: "a score run record",
                check: &is_record,
            })
            .write_bytes((text + "\n").as_bytes())
    }
}

/// The record of scoring images with `cfg` (its model's sha256 as the source), as JSON: what a
/// sharded run's score marker keeps, so a shard scored by another head or with other options is
/// told apart ([`records_differ`]).
pub fn images_record(cfg: &ScoreConfig) -> Result<serde_json::Value> {
    let rec = RunRecord::of(cfg, crate::onnx::model_sha256(&cfg.model)?)?;
    serde_json::to_value(rec).map_err(|e| Error::Config(format!("score run record: {e}")))
}

/// How the run recorded as `b` differs from the one recorded as `a`, in words ("--threshold: 0.9
/// in the first, none in the second"); `None` when they agree.
pub fn records_differ(a: &serde_json::Value, b: &serde_json::Value) -> Option<String> {
    // Compared as records, not as JSON: a threshold read back from text may differ from the f32
    // it was written from in its last f64 digit.
    let parse = |v: &serde_json::Value| serde_json::from_value::<RunRecord>(v.clone()).ok();
    match (parse(a), parse(b)) {
        (Some(ra), Some(rb)) => ra
            .differs(&rb)
            .map(|(what, x, y)| format!("{what}: {x} in the first, {y} in the second")),
        _ => (a != b).then(|| "their records differ".into()),
    }
}

fn on(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(threshold: Option<f32>) -> RunRecord {
        RunRecord {
            format: FORMAT.into(),
            classifier: "c".into(),
            source: "s".into(),
            tta_flip: false,
            mirror: None,
            threshold,
            top_k: None,
            preprocess: None,
        }
    }

    /// A record read back from its text is the record written, whatever the threshold (compared
    /// as JSON values, 0.013 came back one f64 digit off: a requeued shard was refused).
    #[test]
    fn a_record_read_back_agrees_with_itself_and_tells_other_runs_apart() {
        for i in 1..1000 {
            let v = serde_json::to_value(record(Some(i as f32 / 1000.0))).unwrap();
            let back: serde_json::Value =
                serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
            assert_eq!(records_differ(&v, &back), None, "threshold {i}/1000");
        }
        let a = serde_json::to_value(record(Some(0.5))).unwrap();
        let b = serde_json::to_value(record(None)).unwrap();
        let how = records_differ(&a, &b).unwrap();
        assert!(how.contains("--threshold: 0.5 in the first, none"), "{how}");
        // A record of format 1 kept no threshold: unknown there, so not compared.
        let old = RunRecord {
            format: FORMAT_1.into(),
            ..record(None)
        };
        assert_eq!(record(Some(0.9)).differs(&old), None);
        let other_head = RunRecord {
            classifier: "d".into(),
            ..old
        };
        assert!(record(None).differs(&other_head).is_some());
    }
}
