//! `headstart split`: a seeded per-class train / val / test sample out of a raw image dump.

use std::path::PathBuf;

use clap::ValueEnum;
use headstart::data::split::{split, LabelFrom, PlaceMode, SplitConfig, SPLITS};
use headstart::error::Result;

use crate::common::DisplayArgs;

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
    /// The raw dump: class folders (e.g. PetImages), or one folder of CLASS.N.jpg files.
    pub src: PathBuf,
    /// Output folder: OUT/{train,val,test}/<class>/ and OUT/MANIFEST.tsv.
    #[arg(long)]
    pub out: PathBuf,
    /// Training images per class.
    #[arg(long)]
    pub train: usize,
    /// Test images per class.
    #[arg(long)]
    pub test: usize,
    /// Validation images per class (train-head takes its validation rows from train when 0).
    #[arg(long, default_value_t = 0)]
    pub val: usize,
    /// Sampling seed: the same seed gives the same split.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// How files are placed in the output.
    #[arg(long, value_enum, default_value = "link")]
    pub mode: ModeArg,
    /// Where a file's class comes from.
    #[arg(long, value_enum, default_value = "folder")]
    pub label_from: LabelArg,
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
        train: a.train,
        val: a.val,
        test: a.test,
        seed: a.seed,
        mode: match a.mode {
            ModeArg::Link => PlaceMode::Link,
            ModeArg::Symlink => PlaceMode::Symlink,
            ModeArg::Copy => PlaceMode::Copy,
        },
        label_from: match a.label_from {
            LabelArg::Folder => LabelFrom::Folder,
            LabelArg::Prefix => LabelFrom::Prefix,
        },
        force: a.force,
    };
    let s = split(&cfg, &a.display.term())?;
    for (class, (found, counts)) in &s.classes {
        let per: Vec<String> = SPLITS
            .iter()
            .zip(counts)
            .filter(|(_, n)| **n > 0)
            .map(|(split, n)| format!("{n} {split}"))
            .collect();
        println!("{class}: {} (of {found} files)", per.join(", "));
    }
    if !s.broken.is_empty() {
        println!(
            "{} broken file(s) skipped and replaced (listed in {})",
            s.broken.len(),
            a.out.join("SKIPPED.tsv").display()
        );
    }
    if s.not_images > 0 {
        println!("{} non-image file(s) ignored", s.not_images);
    }
    println!(
        "wrote {} (MANIFEST.tsv lists every file with its sha256)",
        a.out.display()
    );
    Ok(())
}
