//! `headstart plan`: cut a dataset into shards for array jobs (Slurm, Kubernetes, AWS Batch).

use std::path::PathBuf;

use headstart::error::Result;
use headstart::runs::plan::TARGET_SHARD_IMAGES;
use headstart::runs::remote::RemoteRun;
use headstart::runs::write_plan;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Image folder: DIR/<class>/* or DIR/{train,val,test}/<class>/*; or an object-storage URL
    /// laid out the same way (s3://bucket/prefix, gs://, az://; the `cloud` build).
    #[arg(long)]
    pub data: PathBuf,
    /// Number of shards (default: about 50,000 images each).
    #[arg(long)]
    pub shards: Option<usize>,
    /// The run folder to create (plan.json and manifest/), or an object-storage URL.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: &Args) -> Result<()> {
    let plan = match a
        .out
        .to_str()
        .filter(|u| headstart::data::remote::is_url(u))
    {
        Some(url) => RemoteRun::open(url)?.write_plan(&a.data, a.shards)?,
        None => write_plan(&a.data, a.shards, &a.out)?,
    };
    let (min, max) = (
        plan.shard_images.iter().min().copied().unwrap_or(0),
        plan.shard_images.iter().max().copied().unwrap_or(0),
    );
    println!(
        "planned {} images of {} ({} classes; {}) into {} shards of {min}-{max} images -> {}",
        plan.images,
        plan.source,
        plan.classes.len(),
        plan.splits
            .iter()
            .map(|s| format!("{} {}", s.name, s.images))
            .collect::<Vec<_>>()
            .join(", "),
        plan.shards,
        a.out.join("plan.json").display()
    );
    if max > 2 * TARGET_SHARD_IMAGES
        || (min < TARGET_SHARD_IMAGES / 5 && plan.images >= 2 * TARGET_SHARD_IMAGES / 5)
    {
        eprintln!(
            "note: shards of 10,000-100,000 images keep the per-task overhead small and a lost task cheap; --shards {} would give about {TARGET_SHARD_IMAGES} each",
            headstart::runs::plan::recommend_shards(plan.images)
        );
    }
    println!(
        "next: run `headstart extract --run {} --model M` as an array of {} tasks (indices 0-{}), then `headstart merge {} --out features.h5`",
        a.out.display(),
        plan.shards,
        plan.shards - 1,
        a.out.display()
    );
    Ok(())
}
