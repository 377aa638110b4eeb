//! Small helpers shared by the stages: a seeded random generator ([`rng`]), file hashes
//! ([`hash`]), file names as lossless text and paths read from files kept inside their root
//! ([`paths`]), bounds on sizes read from flags and files ([`limits`]), credentials kept out of text ([`redact`]), and the one way to write an output file ([`output`], with its lock in [`lock`]).

pub mod hash;
pub mod limits;
pub mod lock;
pub mod output;
pub mod paths;
pub mod redact;
pub mod rng;
