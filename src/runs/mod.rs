//! Runs over many machines, one stage beside the pipeline: a plan cuts a dataset into shards
//! ([`plan`]: the run folder's layout, shard assignment, the shard index a scheduler gives; [`listing`]:
//! plans of listings too large for memory, through a spill file), each array task runs one shard
//! through the one driver ([`driver`], with the two sharded commands in [`jobs`]: `extract --run`
//! and `score --run`), completion markers say what is done ([`markers`]: created only if absent,
//! status, resubmission lines), and [`mod@merge`] joins the shards into one cache or one score file equal
//! to a single run. A run folder is local or on object storage ([`remote`]: a local mirror,
//! published object by object).

pub mod driver;
pub mod jobs;
pub mod listing;
pub mod markers;
pub mod merge;
pub mod plan;
pub mod remote;

pub use driver::ShardOutcome;
pub use jobs::{extract_shard, score_shard};
pub use listing::write_plan;
pub use markers::{Marker, RunStatus, ScoreMarker};
pub use merge::{merge, merge_scores, resolve_features, MergeSummary};
pub use plan::Plan;
