//! Small helpers shared by the stages: a seeded random generator ([`rng`]), file hashes
//! ([`hash`]) and file names as lossless text ([`paths`]).

pub mod hash;
pub mod paths;
pub mod rng;
