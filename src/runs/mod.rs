//! Runs over many machines: a plan cuts a dataset into shards ([`shards`]: plan, shard assignment,
//! markers and status), each array task of a scheduler extracts or scores one shard, and [`merge`]
//! joins them into one cache (or one score file) equal to a single run. A run folder is local or on
//! object storage ([`remote`], a local mirror published object by object); [`listing`] plans a bucket
//! whose listing does not fit in memory through a spill file.

pub mod listing;
pub mod merge;
pub mod remote;
pub mod shards;
