//! `headstart split`: a seeded per-class train / val / test sample out of a raw image dump.

use std::path::PathBuf;

use clap::ValueEnum;
use headstart::data::split::{split, LabelFrom, PlaceMode, SplitConfig, SPLITS};
use headstart::error::Result;

use crate::common::{DisplayArgs, TableArgs};

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum ModeArg {
    /// Hard links (no extra space; a copy where the file system refuses).
    Link,
    /// Symbolic links to the source files.
    Symlink,
    Copy,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum LabelArg {
    /// One sub-folder per class (PetImages/Cat, PetImages/Dog).
    Folder,
    /// The file name before its first dot (cat.123.jpg), all in one folder.
    Prefix,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The raw dump: class folders (e.g. PetImages), or one folder of CLASS.N.jpg files; with
    /// --labels, the folder of the images the table names.
    pub src: PathBuf,
    /// Output folder: OUT/{train,val,test}/<class>/ and OUT/MANIFEST.tsv (with --labels:
    /// OUT/<split>/<path>, OUT/labels.csv and OUT/{train,val,test}.csv).
    #[arg(long)]
    pub out: PathBuf,
    /// Training images per class.
    #[arg(long, required_unless_present = "labels", conflicts_with = "labels")]
    pub train: Option<usize>,
    /// Test images per class.
    #[arg(long, required_unless_present = "labels", conflicts_with = "labels")]
    pub test: Option<usize>,
    /// Validation images per class (train-head takes its validation rows from train when 0).
    #[arg(long, conflicts_with = "labels")]
    pub val: Option<usize>,
    #[command(flatten)]
    pub table: TableArgs,
    /// With --labels: the fraction of each class's images in val.
    #[arg(value_parser = crate::common::finite_f64, long, default_value_t = 0.1, requires = "labels")]
    pub val_fraction: f64,
    /// With --labels: the fraction of each class's images in test.
    #[arg(value_parser = crate::common::finite_f64, long, default_value_t = 0.2, requires = "labels")]
    pub test_fraction: f64,
    /// Sampling seed: the same seed gives the same split.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// How files are placed in the output.
    #[arg(long, value_enum, default_value = "link")]
    pub mode: ModeArg,
    /// Where a file's class comes from [default: folder].
    #[arg(long, value_enum, conflicts_with = "labels")]
    pub label_from: Option<LabelArg>,
    /// Leave out the photos listed in FILE (an audit.tsv, or paths one a line): any source file
    /// with the same bytes as a listed one is not placed.
    #[arg(long, value_name = "FILE")]
    pub exclude: Option<PathBuf>,
    /// The folder the paths of --exclude are relative to (e.g. the folder a cache was extracted
    /// from) [default: SRC].
    #[arg(long, value_name = "DIR", requires = "exclude")]
    pub exclude_root: Option<PathBuf>,
    /// Replace an earlier split at --out.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub display: DisplayArgs,
}

pub fn run(a: &Args) -> Result<()> {
    let cfg = SplitConfig {
        src: a.src.clone(),
        out: a.out.clone(),
        train: a.train.unwrap_or(0),
        val: a.val.unwrap_or(0),
        test: a.test.unwrap_or(0),
        seed: a.seed,
        mode: match a.mode {
            ModeArg::Link => PlaceMode::Link,
            ModeArg::Symlink => PlaceMode::Symlink,
            ModeArg::Copy => PlaceMode::Copy,
        },
        label_from: match a.label_from {
            None | Some(LabelArg::Folder) => LabelFrom::Folder,
            Some(LabelArg::Prefix) => LabelFrom::Prefix,
        },
        force: a.force,
        labels: a.table.table(),
        fractions: (a.val_fraction, a.test_fraction),
        exclude: a.exclude.clone().map(|e| (e, a.exclude_root.clone())),
    };
    let s = split(&cfg, &a.display.term())?;
    for (class, (found, counts)) in &s.classes {
        let per: Vec<String> = SPLITS
            .iter()
            .zip(counts)
            .filter(|(_, n)| **n > 0)
            .map(|(split, n)| format!("{n} {split}"))
            .collect();
        let of = if a.table.labels.is_some() {
            "images"
        } else {
            "files"
        };
        println!("{class}: {} (of {found} {of})", per.join(", "));
    }
    if !s.broken.is_empty() {
        println!(
            "{} broken file(s) skipped{} (listed in {})",
            s.broken.len(),
            if a.table.labels.is_some() {
                ""
            } else {
                " and replaced"
            },
            a.out.join("SKIPPED.tsv").display()
        );
    }
    if s.excluded > 0 {
        println!("{} listed photo(s) left out (--exclude)", s.excluded);
    }
    if s.not_images > 0 {
        println!("{} non-image file(s) ignored", s.not_images);
    }
    println!(
        "wrote {} (MANIFEST.tsv lists every file with its sha256)",
        a.out.display()
    );
    if a.table.labels.is_some() {
        println!(
            "labels: {} (path, label, split), and train.csv, val.csv, test.csv",
            a.out.join("labels.csv").display()
        );
    }
    Ok(())
}
