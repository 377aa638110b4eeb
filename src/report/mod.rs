//! Stage 5, results: what is wrong with the photos ([`audit`]), a head's metrics on a cached split or on image folders ([`evaluate`],
//! [`metrics`]; multi-label ones in [`multilabel`]), pictures ([`plot`]), markdown reports ([`markdown`]; their folders checked in [`folders`]) and self-contained HTML ones ([`html`]), per-image predictions of
//! base + head or an exported model ([`score`]) and ImageNet top-k of a full classifier
//! ([`classify`]).

pub mod audit;
pub mod classify;
pub mod evaluate;
pub mod folders;
pub mod html;
pub mod markdown;
pub mod metrics;
pub mod multilabel;
pub mod plot;
pub mod score;

/// `v` as JSON text (pretty: indented), as the commands print it and reports embed it.
pub fn to_json(v: &impl serde::Serialize, pretty: bool) -> crate::error::Result<String> {
    let s = if pretty {
        serde_json::to_string_pretty(v)
    } else {
        serde_json::to_string(v)
    };
    s.map_err(|e| crate::error::Error::Config(format!("cannot write JSON: {e}")))
}
