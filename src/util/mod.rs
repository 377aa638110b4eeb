//! Small helpers shared by the stages: a seeded random generator ([`rng`]), progress display
//! ([`progress`]).

pub mod progress;
pub mod rng;
