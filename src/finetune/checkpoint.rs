//! Phase 2 checkpoints: after every epoch `<out>.ckpt.h5` holds the trainable values, the optimizer
//! state, the generators and the history, under a fingerprint of the settings. A rerun with the same
//! settings continues after the last finished epoch; the file is removed when the run completes.

use std::path::Path;

use crate::cache::{read_str_attr, write_str_attr};
use crate::error::{Error, Result};
use crate::head::fit::History;

/// One saved state of phase 2.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub fingerprint: String,
    /// Epochs finished.
    pub epoch: usize,
    /// Trainable values: the top's, then the head's.
    pub vars: Vec<Vec<f32>>,
    pub opt_steps: u64,
    pub opt_slots: Vec<Vec<f32>>,
    /// Shuffling and dropout generator states.
    pub rngs: [u64; 2],
    pub history: History,
}

/// The `format` attribute of a checkpoint file.
const FORMAT: &str = "headstart-finetune-checkpoint";

/// Whether `path` is a fine-tune checkpoint (HDF5 with its `format` attribute).
pub fn is_checkpoint(path: &Path) -> bool {
    crate::cache::h5::open_read(path)
        .is_ok_and(|f| read_str_attr(&f, "format").is_ok_and(|v| v == FORMAT))
}

/// The replacement rule of a checkpoint: only a checkpoint is replaced (or removed at the end), so
/// a user's file that happens to be called `<out>.ckpt.h5` is refused, not overwritten.
pub fn replace_checkpoint() -> crate::util::output::Replace<'static> {
    crate::util::output::Replace::If {
        what: "a headstart finetune checkpoint",
        check: &is_checkpoint,
    }
}

impl Checkpoint {
    /// Writes through the one output writer (the checkpoint is fine-tune's own file, replaced at
    /// every save): a crash leaves the previous checkpoint.
    pub fn save(&self, path: &Path) -> Result<()> {
        let out = crate::util::output::Output::new(path).replace(replace_checkpoint());
        crate::cache::save_via_tmp(&out, |tmp| self.write(tmp))
    }

    fn write(&self, path: &Path) -> hdf5::Result<()> {
        let f = crate::cache::create_h5(path)?;
        write_str_attr(&f, "format", FORMAT)?;
        write_str_attr(&f, "fingerprint", &self.fingerprint)?;
        let history = serde_json::to_string(&self.history).expect("history serialises");
        write_str_attr(&f, "history", &history)?;
        let nums = [
            self.epoch as u64,
            self.opt_steps,
            self.rngs[0],
            self.rngs[1],
        ];
        f.new_attr::<u64>()
            .shape(4)
            .create("counters")?
            .write_raw(&nums)?;
        let put = |name: String, v: &[f32]| -> hdf5::Result<()> {
            f.new_dataset::<f32>()
                .shape(v.len())
                .create(name.as_str())?
                .write_raw(v)
        };
        for (i, v) in self.vars.iter().enumerate() {
            put(format!("var_{i:04}"), v)?;
        }
        for (i, v) in self.opt_slots.iter().enumerate() {
            put(format!("slot_{i:04}"), v)?;
        }
        f.flush()
    }

    /// Reads a checkpoint; errors name the file.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        Self::read(path).map_err(|e| Error::cache(path, format!("unreadable checkpoint: {e}")))
    }

    fn read(path: &Path) -> std::result::Result<Checkpoint, String> {
        let f = hdf5::File::open(path).map_err(|e| e.to_string())?;
        let s = |n: &str| read_str_attr(&f, n).map_err(|e| format!("{n}: {e}"));
        if s("format")? != FORMAT {
            return Err("not a finetune checkpoint".into());
        }
        let history: History = serde_json::from_str(&s("history")?).map_err(|e| e.to_string())?;
        let c: Vec<u64> = f
            .attr("counters")
            .and_then(|a| a.read_raw::<u64>())
            .map_err(|e| e.to_string())?;
        let [epoch, opt_steps, r0, r1] = c[..] else {
            return Err(format!("counters: {} values, expected 4", c.len()));
        };
        let mut names = f.member_names().map_err(|e| e.to_string())?;
        names.sort();
        let (mut vars, mut opt_slots) = (Vec::new(), Vec::new());
        for n in names {
            let v = f
                .dataset(&n)
                .and_then(|d| d.read_raw::<f32>())
                .map_err(|e| format!("{n}: {e}"))?;
            if n.starts_with("var_") {
                vars.push(v);
            } else if n.starts_with("slot_") {
                opt_slots.push(v);
            }
        }
        Ok(Checkpoint {
            fingerprint: s("fingerprint")?,
            epoch: epoch as usize,
            vars,
            opt_steps,
            opt_slots,
            rngs: [r0, r1],
            history,
        })
    }
}
