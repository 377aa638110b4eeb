//! Token outputs of transformer bases: what a cache records of their pooling, and the pooling
//! itself. A ViT's output is a sequence `[N, T, D]` (a class token, any register tokens, then one
//! token per patch), pooled to one row `[N, D]` (or `[N, 2D]`) before it is cached, scored or
//! exported.
//!
//! The pooling comes from `extract --pool`, else from the model's metadata (`headstart fetch` writes
//! the pooling the model's authors use for linear probes, e.g. the class token beside the mean of
//! the patch tokens for DINOv2). How many leading tokens are not patches (the class token and the
//! registers) comes from the model's config (`--prefix-tokens`, or the metadata `fetch` writes from
//! `config.json`), never from a guess: a mean over patch tokens without it is refused.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};

/// Metadata key: the pooling of a token output (`cls`, `mean`, `cls+mean` or `none`).
pub const POOL_META: &str = "headstart_token_pool";
/// Metadata key: the leading tokens that are not patches (class token plus registers).
pub const PREFIX_META: &str = "headstart_prefix_tokens";

/// How a token sequence `[T, D]` becomes one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPool {
    /// Kept whole (`[T, D]`).
    None,
    /// The class token (token 0).
    Cls,
    /// The mean of the patch tokens (after the prefix).
    Mean,
    /// The class token, then the mean of the patch tokens (`2D` wide).
    ClsMean,
}

impl TokenPool {
    pub fn parse(s: &str) -> Option<TokenPool> {
        Some(match s {
            "none" => TokenPool::None,
            "cls" => TokenPool::Cls,
            "mean" => TokenPool::Mean,
            "cls+mean" => TokenPool::ClsMean,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            TokenPool::None => "none",
            TokenPool::Cls => "cls",
            TokenPool::Mean => "mean",
            TokenPool::ClsMean => "cls+mean",
        }
    }

    fn uses_cls(self) -> bool {
        matches!(self, TokenPool::Cls | TokenPool::ClsMean)
    }

    fn uses_mean(self) -> bool {
        matches!(self, TokenPool::Mean | TokenPool::ClsMean)
    }
}

/// The pooling of a base's token output and how many leading tokens are not patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tokens {
    pub pool: TokenPool,
    /// Leading tokens that are not patches: the class token and any registers.
    pub prefix: usize,
}

impl Default for Tokens {
    fn default() -> Self {
        Tokens::NONE
    }
}

/// What the caller asked for: `--pool` and `--prefix-tokens` (each `None` when not given).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenRequest {
    pub pool: Option<TokenPool>,
    pub prefix: Option<usize>,
}

impl Tokens {
    /// Outputs used as they are.
    pub const NONE: Tokens = Tokens {
        pool: TokenPool::None,
        prefix: 0,
    };

    /// The request that gives this pooling again (a head's, for the base it was trained on).
    pub fn request(&self) -> TokenRequest {
        TokenRequest {
            pool: Some(self.pool),
            prefix: Some(self.prefix),
        }
    }

    /// Whether rows are pooled at all.
    pub fn pools(&self) -> bool {
        self.pool != TokenPool::None
    }

    /// How this reads in a report: `cls+mean (1 prefix token)`.
    pub fn describe(&self) -> String {
        match self.pool {
            TokenPool::None => "none".into(),
            p => format!(
                "{} ({} prefix token{})",
                p.name(),
                self.prefix,
                if self.prefix == 1 { "" } else { "s" }
            ),
        }
    }

    /// The pooling a feature cache (or a head trained on one) records: `token_pool` and
    /// `prefix_tokens` as stored; errors say what is wrong with them.
    pub fn recorded(pool: &str, prefix: usize) -> std::result::Result<Tokens, String> {
        let pool = TokenPool::parse(pool)
            .ok_or_else(|| format!("token_pool '{pool}' is not cls, mean, cls+mean or none"))?;
        Ok(match pool {
            TokenPool::None => Tokens::NONE,
            pool => Tokens { pool, prefix },
        })
    }

    /// The pooling for a model whose output `output` has `shape` (with the batch dimension; -1 for
    /// a dynamic one): the request first, then the model's metadata. A rank-3 output with neither
    /// is refused (a whole token sequence is rarely what a head should see, and stored whole it
    /// is T times the size); pooling a non-token output is refused too. Errors name the model.
    pub fn resolve(
        req: TokenRequest,
        meta: &BTreeMap<String, String>,
        output: &str,
        shape: &[i64],
        model: &Path,
    ) -> Result<Tokens> {
        let shown = shape
            .iter()
            .map(|d| if *d < 0 { "?".into() } else { d.to_string() })
            .collect::<Vec<_>>()
            .join(", ");
        let meta_pool = match meta.get(POOL_META) {
            Some(v) => Some(TokenPool::parse(v).ok_or_else(|| {
                Error::model(
                    model,
                    format!("metadata {POOL_META} = '{v}' is not cls, mean, cls+mean or none"),
                )
            })?),
            None => None,
        };
        let meta_prefix = match meta.get(PREFIX_META) {
            Some(v) => Some(v.parse::<usize>().map_err(|_| {
                Error::model(
                    model,
                    format!("metadata {PREFIX_META} = '{v}' is not a count"),
                )
            })?),
            None => None,
        };
        let is_tokens = shape.len() == 3;
        let pool = match (req.pool, meta_pool) {
            (Some(p), _) => p,
            (None, Some(p)) => p,
            (None, None) if is_tokens => {
                return Err(Error::model(
                    model,
                    format!(
                        "output '{output}' is a token sequence [{shown}] and the model does not say how to pool it: \
                         give --pool cls, mean, cls+mean or none (with --prefix-tokens for the class and register tokens)"
                    ),
                ))
            }
            (None, None) => TokenPool::None,
        };
        if pool == TokenPool::None {
            return Ok(Tokens::NONE);
        }
        if !is_tokens {
            return Err(Error::model(
                model,
                format!(
                    "--pool {} pools a token output [N, T, D]; output '{output}' is [{shown}]",
                    pool.name()
                ),
            ));
        }
        let prefix = match (req.prefix, meta_prefix) {
            (Some(p), _) | (None, Some(p)) => p,
            (None, None) if !pool.uses_mean() => 1,
            (None, None) => {
                return Err(Error::model(
                    model,
                    format!(
                        "--pool {} averages the patch tokens, and the model does not say how many leading tokens \
                         are class or register tokens: give --prefix-tokens (1 for a ViT with a class token, \
                         1 + registers for one with registers)",
                        pool.name()
                    ),
                ))
            }
        };
        let tokens = Tokens { pool, prefix };
        if shape[1] > 0 {
            tokens.check(&[shape[1] as usize, shape[2].max(1) as usize], model)?;
        }
        Ok(tokens)
    }

    /// Refuses a per-image shape `[T, D]` this pooling cannot apply to, naming the model.
    fn check(&self, dims: &[usize], model: &Path) -> Result<()> {
        if !self.pools() {
            return Ok(());
        }
        let [t, d] = dims else {
            return Err(Error::model(
                model,
                format!(
                    "--pool {} needs [T, D] per image, got {dims:?}",
                    self.pool.name()
                ),
            ));
        };
        if *t == 0 || *d == 0 {
            return Err(Error::model(
                model,
                format!("the token output is empty ({t} tokens of {d})"),
            ));
        }
        if self.pool.uses_cls() && self.prefix == 0 {
            return Err(Error::model(
                model,
                "the model has no class token (0 prefix tokens): use --pool mean",
            ));
        }
        if self.pool.uses_mean() && self.prefix >= *t {
            return Err(Error::model(
                model,
                format!(
                    "{} prefix tokens leave no patch tokens of the output's {t}",
                    self.prefix
                ),
            ));
        }
        Ok(())
    }

    /// The per-image shape after pooling `[T, D]`.
    pub fn pooled_shape(&self, dims: &[usize]) -> Vec<usize> {
        match (self.pool, dims) {
            (TokenPool::None, _) => dims.to_vec(),
            (TokenPool::ClsMean, [_, d]) => vec![2 * d],
            (_, [_, d]) => vec![*d],
            _ => dims.to_vec(),
        }
    }

    /// Pools `n` rows of per-image shape `dims` = `[T, D]` held in `values`; returns the rows and
    /// their shape. Means are summed in f64.
    pub fn apply(
        &self,
        values: Vec<f32>,
        n: usize,
        dims: &[usize],
        model: &Path,
    ) -> Result<(Vec<f32>, Vec<usize>)> {
        if !self.pools() {
            return Ok((values, dims.to_vec()));
        }
        self.check(dims, model)?;
        let (t, d) = (dims[0], dims[1]);
        let width = self.pooled_shape(dims)[0];
        let mut out = Vec::with_capacity(n * width);
        let patches = (t - self.prefix) as f64;
        let mut sum = vec![0f64; d];
        for row in values.chunks_exact(t * d).take(n) {
            if self.pool.uses_cls() {
                out.extend_from_slice(&row[..d]);
            }
            if self.pool.uses_mean() {
                sum.iter_mut().for_each(|s| *s = 0.0);
                for tok in row[self.prefix * d..].chunks_exact(d) {
                    for (s, &v) in sum.iter_mut().zip(tok) {
                        *s += v as f64;
                    }
                }
                out.extend(sum.iter().map(|s| (s / patches) as f32));
            }
        }
        Ok((out, vec![width]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pools_class_token_and_patch_mean_after_the_registers() {
        // 2 images, 4 tokens (class, one register, two patches), 2 dims.
        let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let p = Path::new("m.onnx");
        let t = |pool| Tokens { pool, prefix: 2 };
        let (cls, s) = t(TokenPool::Cls).apply(x.clone(), 2, &[4, 2], p).unwrap();
        assert_eq!((cls, s), (vec![0., 1., 8., 9.], vec![2]));
        let (mean, _) = t(TokenPool::Mean).apply(x.clone(), 2, &[4, 2], p).unwrap();
        assert_eq!(mean, vec![5., 6., 13., 14.]);
        let (both, s) = t(TokenPool::ClsMean)
            .apply(x.clone(), 2, &[4, 2], p)
            .unwrap();
        assert_eq!((both, s), (vec![0., 1., 5., 6., 8., 9., 13., 14.], vec![4]));
        let (same, s) = Tokens::NONE.apply(x.clone(), 2, &[4, 2], p).unwrap();
        assert_eq!((same, s), (x, vec![4, 2]));
    }

    #[test]
    fn resolves_from_request_then_metadata_and_refuses_guesses() {
        let p = Path::new("vit.onnx");
        let shape = [-1, 257, 384];
        let m = meta(&[(POOL_META, "cls+mean"), (PREFIX_META, "1")]);
        let t =
            Tokens::resolve(TokenRequest::default(), &m, "last_hidden_state", &shape, p).unwrap();
        assert_eq!(
            t,
            Tokens {
                pool: TokenPool::ClsMean,
                prefix: 1
            }
        );
        let req = TokenRequest {
            pool: Some(TokenPool::Mean),
            prefix: Some(5),
        };
        let t = Tokens::resolve(req, &m, "x", &shape, p).unwrap();
        assert_eq!(
            t,
            Tokens {
                pool: TokenPool::Mean,
                prefix: 5
            }
        );
        // A token output with no pooling anywhere: refused, naming the output and the flag.
        let e = Tokens::resolve(
            TokenRequest::default(),
            &meta(&[]),
            "last_hidden_state",
            &shape,
            p,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("vit.onnx") && e.contains("last_hidden_state") && e.contains("--pool"),
            "{e}"
        );
        // A mean without knowing the prefix: refused; the class token alone needs no count.
        let req = TokenRequest {
            pool: Some(TokenPool::Mean),
            prefix: None,
        };
        let e = Tokens::resolve(req, &meta(&[]), "x", &shape, p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--prefix-tokens"), "{e}");
        let req = TokenRequest {
            pool: Some(TokenPool::Cls),
            prefix: None,
        };
        assert_eq!(
            Tokens::resolve(req, &meta(&[]), "x", &shape, p)
                .unwrap()
                .prefix,
            1
        );
        // Pooling a CNN's features, and a prefix as long as the sequence: refused.
        let req = TokenRequest {
            pool: Some(TokenPool::Cls),
            prefix: None,
        };
        let e = Tokens::resolve(req, &meta(&[]), "features", &[-1, 1280], p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("[?, 1280]"), "{e}");
        let req = TokenRequest {
            pool: Some(TokenPool::Mean),
            prefix: Some(257),
        };
        assert!(Tokens::resolve(req, &meta(&[]), "x", &shape, p).is_err());
        let bad = meta(&[(POOL_META, "max")]);
        assert!(Tokens::resolve(TokenRequest::default(), &bad, "x", &shape, p).is_err());
        // CNN outputs pass through untouched.
        let t = Tokens::resolve(
            TokenRequest::default(),
            &meta(&[]),
            "f",
            &[-1, 512, 7, 7],
            p,
        )
        .unwrap();
        assert_eq!(t, Tokens::NONE);
    }
}
