//! Stage 5, results: a head's metrics on a cached split or on image folders ([`evaluate`],
//! [`metrics`]), pictures ([`plot`]) and markdown reports ([`markdown`]), per-image predictions of
//! base + head or an exported model ([`score`]) and ImageNet top-k of a full classifier
//! ([`classify`]).

pub mod classify;
pub mod evaluate;
pub mod markdown;
pub mod metrics;
pub mod plot;
pub mod score;
