//! Lists of photos to leave out (`train-head --exclude`, `split --exclude`): an `audit.tsv`, or a
//! text file of paths, one a line. Nothing is deleted or moved; the photos are only not used.
//!
//! A line is a path relative to the data folder, as the cache and audit.tsv write them
//! (`train/cat/cat.12.jpg`). A tab-separated line (an audit.tsv row, with or without its header)
//! gives its first field; a `leakage` row also its last (the pair's other photo): leaving out
//! both copies of a leaked photo is what keeps it out of training whichever split it is in. Empty
//! lines, `#` comments and a header line starting `file<TAB>` are skipped.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::util::paths::nfc;

/// The photos a list names.
#[derive(Debug, Clone, PartialEq)]
pub struct Exclusion {
    pub source: PathBuf,
    /// The sha256 of the list as read (recorded with the head).
    pub sha256: String,
    pub files: BTreeSet<String>,
    /// `files` in Unicode NFC, for names spelt in another normalisation.
    nfc_files: BTreeSet<String>,
}

impl Exclusion {
    /// Reads a list; a list over the label tables' size limit, a line that is an absolute path or
    /// climbs out of the data folder (`..`), and a list naming no file are refused, naming the line.
    pub fn read(path: &Path) -> Result<Exclusion> {
        let (bytes, sha256) = crate::data::labels::read_table(path)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| Error::dataset(path, format!("not UTF-8 text: {e}")))?;
        let mut files = BTreeSet::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') || line.starts_with("file\t") {
                continue;
            }
            let fields: Vec<&str> = line.split('\t').collect();
            // A row of audit.tsv (with its header or without, as `grep` leaves it): its names
            // are escaped.
            let audit_row = fields.len() == 7 && ISSUES.contains(&fields[2]);
            let fields: Vec<String> = fields
                .iter()
                .map(|f| {
                    if audit_row {
                        unescape_field(f)
                    } else {
                        f.to_string()
                    }
                })
                .collect();
            let mut add = |p: &str| -> Result<()> {
                files.insert(
                    clean(p)
                        .map_err(|msg| Error::dataset(path, format!("line {}: {msg}", i + 1)))?,
                );
                Ok(())
            };
            add(&fields[0])?;
            if audit_row && fields[2] == "leakage" && !fields[6].is_empty() {
                add(&fields[6])?;
            }
        }
        if files.is_empty() {
            return Err(Error::dataset(path, "lists no file to leave out"));
        }
        Ok(Exclusion {
            source: path.to_path_buf(),
            sha256,
            nfc_files: files.iter().map(|f| nfc(f)).collect(),
            files,
        })
    }

    /// Whether the list names `rel`, in any Unicode normalisation (an NFC list finds NFD names).
    pub fn contains(&self, rel: &str) -> bool {
        self.files.contains(rel) || self.nfc_files.contains(&nfc(rel))
    }

    /// The listed files that are not in `known` (at most `limit` of them, and how many in all).
    pub fn unknown<'a>(&'a self, known: &BTreeSet<&str>, limit: usize) -> (Vec<&'a str>, usize) {
        let known_nfc: BTreeSet<String> = known.iter().map(|k| nfc(k)).collect();
        let all: Vec<&str> = self
            .files
            .iter()
            .map(String::as_str)
            .filter(|f| !known.contains(f) && !known_nfc.contains(&nfc(f)))
            .collect();
        let n = all.len();
        (all.into_iter().take(limit).collect(), n)
    }

    /// A refusal for listed files that are in none of the places looked at (`where_`).
    pub fn not_found(&self, known: &BTreeSet<&str>, where_: &str) -> Result<()> {
        let (first, n) = self.unknown(known, 3);
        if n == 0 {
            return Ok(());
        }
        Err(Error::dataset(
            &self.source,
            format!(
                "{n} of its {} files are not in {where_} (first: {}); list paths relative to the data folder, as audit.tsv does (e.g. train/cat/cat.1.jpg)",
                self.files.len(),
                crate::data::labels::first_few(&first)
            ),
        ))
    }
}

/// The issues of an audit.tsv row.
const ISSUES: [&str; 4] = ["label", "duplicate", "leakage", "outlier"];

/// A field of a tab-separated table as audit.tsv writes it: `%`, tab, line feed and carriage return
/// as `%25`, `%09`, `%0A`, `%0D` (a file name may hold any of them), everything else as it is.
pub fn escape_field(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\t' => out.push_str("%09"),
            '\n' => out.push_str("%0A"),
            '\r' => out.push_str("%0D"),
            c => out.push(c),
        }
    }
    out
}

/// The inverse of [`escape_field`].
pub fn unescape_field(s: &str) -> String {
    s.replace("%09", "\t")
        .replace("%0A", "\n")
        .replace("%0D", "\r")
        .replace("%25", "%")
}

/// A listed path as the cache writes it (`/` separators, no `./`), or why it cannot be one. A
/// backslash separates folders only on Windows: elsewhere it is part of a file's name.
fn clean(p: &str) -> std::result::Result<String, String> {
    let p = p.trim();
    let drive = cfg!(windows) && p.as_bytes().get(1) == Some(&b':');
    if p.starts_with('/') || drive {
        return Err(format!(
            "{p} is an absolute path; list paths relative to the data folder"
        ));
    }
    let separators: &[char] = if cfg!(windows) { &['/', '\\'] } else { &['/'] };
    let parts: Vec<&str> = p
        .split(separators)
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(format!("{p} leaves the data folder (..)"));
    }
    if parts.is_empty() {
        return Err(format!("'{p}' names no file"));
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list typed in NFC names the files spelt in NFD (macOS), and knows them as known.
    #[test]
    fn names_in_another_unicode_normalisation_are_the_same_file() {
        let d = tempfile::tempdir().unwrap();
        let list = d.path().join("ex.txt");
        std::fs::write(&list, "cat/caf\u{e9}.jpg\n").unwrap();
        let e = Exclusion::read(&list).unwrap();
        let nfd = "cat/cafe\u{301}.jpg";
        assert!(e.contains(nfd));
        assert!(!e.contains("cat/cafe.jpg"));
        let known: BTreeSet<&str> = [nfd].into_iter().collect();
        assert_eq!(e.unknown(&known, 3).1, 0);
        // On disk: the NFD file is found under the NFC name, through an NFD folder too.
        let dir = d.path().join("cafe\u{301}");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cafe\u{301}.jpg"), b"x").unwrap();
        let found = crate::util::paths::locate(d.path(), "caf\u{e9}/caf\u{e9}.jpg").unwrap();
        assert_eq!(found, dir.join("cafe\u{301}.jpg"));
        assert!(crate::util::paths::locate(d.path(), "caf\u{e9}/other.jpg").is_none());
    }

    #[cfg(unix)]
    #[test]
    fn a_backslash_or_a_colon_is_part_of_a_name_on_unix() {
        assert_eq!(clean("train/cat/a\\b.jpg").unwrap(), "train/cat/a\\b.jpg");
        assert_eq!(clean("./c:at/x.jpg").unwrap(), "c:at/x.jpg");
        assert!(clean("/etc/x.jpg").is_err());
        assert!(clean("cat/../../x.jpg").is_err());
    }

    #[test]
    fn names_with_tabs_and_line_breaks_come_back_from_an_audit_row() {
        let name = "train/cat/a\tb\nc%09.jpg";
        let row = format!(
            "{}\ttrain\tduplicate\t1.000000\tcat\t\ttrain/cat/x.jpg\n",
            escape_field(name)
        );
        assert!(!escape_field(name).contains(['\t', '\n']));
        let got = list(&row).unwrap();
        assert!(got.contains(name), "{:?}", got.files);
        // A plain list is taken as it is.
        assert!(list("train/cat/100%09.jpg\n")
            .unwrap()
            .contains("train/cat/100%09.jpg"));
    }

    fn list(text: &str) -> Result<Exclusion> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("list.tsv");
        std::fs::write(&p, text).unwrap();
        Exclusion::read(&p)
    }

    #[test]
    fn audit_rows_and_plain_paths_are_read_leakage_with_its_pair() {
        let e = list(
            "file\tsplit\tissue\tscore\tgiven\tsuggested\tpair\n\
             train/dog/cat.1.jpg\ttrain\tlabel\t0.01\tdog\tcat\t\n\
             test/cat/c.jpg\ttest\tleakage\t0.99\tcat\t\ttrain/cat/c.jpg\n\
             train/a/x.jpg\ttrain\tduplicate\t1\ta\t\ttrain/a/y.jpg\n\
             # a comment\n\n./val//b/z.png\r\n",
        )
        .unwrap();
        let want = [
            "test/cat/c.jpg",
            "train/a/x.jpg",
            "train/cat/c.jpg",
            "train/dog/cat.1.jpg",
            "val/b/z.png",
        ];
        assert_eq!(e.files.iter().collect::<Vec<_>>(), want);
        assert!(
            !e.contains("train/a/y.jpg"),
            "a duplicate keeps its first copy"
        );
    }

    #[test]
    fn bad_lists_are_refused_naming_the_line() {
        let msg = |t: &str| list(t).unwrap_err().to_string();
        assert!(msg("a.jpg\n/abs/b.jpg\n").contains("line 2: /abs/b.jpg is an absolute path"));
        assert!(msg("a/../../etc/passwd\n").contains("line 1: a/../../etc/passwd leaves"));
        assert!(msg("# nothing\n\n").contains("lists no file"));
        let e = list("a.jpg\nb.jpg\n").unwrap();
        let known = BTreeSet::from(["a.jpg"]);
        let err = e.not_found(&known, "the cache").unwrap_err().to_string();
        assert!(
            err.contains("1 of its 2 files are not in the cache (first: b.jpg)"),
            "{err}"
        );
    }
}
