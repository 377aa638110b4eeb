//! `headstart finetune`: unfreeze the top block(s) of the base, train them with the head (candle),
//! and write the fine-tuned model back to ONNX.

use std::path::PathBuf;

use headstart::error::{Error, Result};
use headstart::finetune::{finetune, FinetuneConfig, SplitPoint};
use headstart::head::fit::OptimizerSpec;
use headstart::head::net::{parse_spec, DEFAULT_HEAD};
use headstart::head::settings::OptimizerName;

use crate::common::{model_path, AugmentArg, DisplayArgs, ModelRunArgs, OptimizerArg, PoolArg};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The ONNX base model (the same file the head's features came from).
    #[arg(long)]
    pub model: PathBuf,
    /// Image folder: DIR/<class>/* or DIR/{train,val,test}/<class>/*.
    #[arg(long)]
    pub data: PathBuf,
    /// A head trained on this model's features; without it, phase 1 trains one (--freeze-epochs).
    #[arg(long)]
    pub head: Option<PathBuf>,
    /// Unfreeze from a block the model's preset names (vgg16: block5, block4; efficientnet_lite0:
    /// head, stage7, stage6).
    #[arg(
        long,
        conflicts_with = "from_layer",
        required_unless_present = "from_layer"
    )]
    pub unfreeze: Option<String>,
    /// Unfreeze from this node (its name, a part of it such as block5_conv1, or its output tensor).
    #[arg(long)]
    pub from_layer: Option<String>,
    /// Fine-tune epochs (phase 2).
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Head-only epochs with the block frozen (phase 1, without --head).
    #[arg(long, default_value_t = 5)]
    pub freeze_epochs: usize,
    #[arg(long, default_value_t = 20)]
    pub batch_size: usize,
    /// Phase 2 optimizer.
    #[arg(long, value_enum, default_value = "rmsprop")]
    pub optimizer: OptimizerArg,
    /// Phase 2 learning rate (low: the top already knows its job).
    #[arg(value_parser = crate::common::finite_f64, long, default_value_t = 1e-5)]
    pub lr: f64,
    /// SGD momentum, phase 2 [default: 0].
    #[arg(value_parser = crate::common::finite_f32, long)]
    pub momentum: Option<f32>,
    /// L2 weight decay (decoupled for adamw), phase 2.
    #[arg(value_parser = crate::common::finite_f32, long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Phase 1 head layers (train-head's grammar).
    #[arg(long = "head-spec", default_value = DEFAULT_HEAD)]
    pub head_spec: String,
    /// Phase 1 learning rate (RMSprop, as train-head).
    #[arg(value_parser = crate::common::finite_f64, long, default_value_t = 2e-5)]
    pub head_lr: f64,
    /// How the top's output becomes a vector for a new head.
    #[arg(long, value_enum, default_value = "flatten")]
    pub pool: PoolArg,
    /// Also train on left-right mirrored train images (cached once, no decoding later).
    #[arg(long, value_enum)]
    pub augment: Option<AugmentArg>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Fraction of train held out for validation when the data has no val split.
    #[arg(value_parser = crate::common::finite_f64, long, default_value_t = 0.2)]
    pub val_split: f64,
    /// Keep the phase 2 weights of the epoch with the lowest validation loss.
    #[arg(long)]
    pub restore_best: bool,
    /// Stop phase 2 after this many epochs without a lower validation loss.
    #[arg(long)]
    pub patience: Option<usize>,
    /// The fine-tuned model: base with the trained top + head, as one ONNX file.
    #[arg(long)]
    pub out: PathBuf,
    /// Cache of the frozen part's outputs [default: <out name>.inputs.h5].
    #[arg(long)]
    pub cache: Option<PathBuf>,
    #[command(flatten)]
    pub run: ModelRunArgs,
    #[command(flatten)]
    pub display: DisplayArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

impl Args {
    /// Validates into a [`FinetuneConfig`].
    pub fn to_config(&self) -> Result<FinetuneConfig> {
        let split = match (&self.unfreeze, &self.from_layer) {
            (Some(b), None) => SplitPoint::Block(b.clone()),
            (None, Some(l)) => SplitPoint::FromLayer(l.clone()),
            _ => {
                return Err(Error::Config(
                    "give one of --unfreeze BLOCK or --from-layer NODE".into(),
                ))
            }
        };
        let mut cfg = FinetuneConfig::new(&self.model, &self.data, &self.out, split);
        if let Some(c) = &self.cache {
            cfg.cache = c.clone();
        }
        cfg.head = self.head.clone();
        cfg.head_train.spec = parse_spec(&self.head_spec).map_err(|e| match e {
            Error::Invalid { msg, .. } => Error::invalid("head_spec", msg),
            e => e,
        })?;
        cfg.head_train.epochs = self.freeze_epochs;
        cfg.head_train.batch_size = self.batch_size;
        cfg.head_train.seed = self.seed;
        cfg.head_train.optimizer.lr = self.head_lr;
        cfg.pool = self.pool.into();
        cfg.epochs = self.epochs;
        cfg.batch_size = self.batch_size;
        cfg.optimizer = OptimizerSpec {
            kind: OptimizerName::from(self.optimizer).kind(self.momentum, false, None)?,
            lr: self.lr,
            weight_decay: self.weight_decay,
        };
        cfg.seed = self.seed;
        cfg.val_split = self.val_split;
        cfg.restore_best = self.restore_best;
        cfg.patience = self.patience;
        let ex = &mut cfg.extract;
        self.run.apply(ex)?;
        ex.augment_flip = self.augment == Some(AugmentArg::Flip);
        // Every setting is checked before a model given by name is fetched.
        cfg.validate()?;
        let model = model_path(&self.model)?;
        cfg.extract.model = model.clone();
        cfg.model = model;
        Ok(cfg)
    }
}

/// Fine-tunes (tables and progress as it goes), then one closing line or the JSON summary.
pub fn run(a: &Args) -> Result<()> {
    let cfg = a.to_config()?;
    keep_freed_memory();
    let s = finetune(&cfg, &a.display.term())?;
    if a.json {
        println!("{}", headstart::report::to_json(&s, false)?);
        return Ok(());
    }
    let acc = |v: Option<(f64, f64)>| v.map_or("-".to_string(), |(_, a)| format!("{a:.4}"));
    println!(
        "finetune: {} values from '{}' trained, {:.1} s per epoch; test accuracy head only {}, fine-tuned {}; parity {} -> {}",
        s.trained_params,
        s.split_tensor,
        s.seconds_per_epoch,
        acc(s.test_head_only),
        acc(s.test_finetuned),
        s.parity_max_abs.map_or("-".to_string(), |d| format!("{d:.1e}")),
        s.out.display()
    );
    Ok(())
}

/// glibc hands large freed buffers back to the kernel and maps fresh, zeroed pages for the next one;
/// a training step allocates the same large tensors every time, so keep them in the heap instead
/// (10-20% faster steps on the VGG block measured here). Process-wide, so done here, not in the library.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt is thread-safe and only changes allocator thresholds.
    unsafe {
        if libc::mallopt(libc::M_MMAP_THRESHOLD, i32::MAX) == 0 {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        }
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
