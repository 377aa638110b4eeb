//! SIMD kernels of the head's wide first layer: the fused training step ([`wide`]) and the wide
//! product used by validation, evaluate and score ([`matmul`]).
//!
//! Each kernel picks the best instruction set the CPU has ([`isa`]); [`limit_isa`] lowers that for
//! the calling thread, so tests run the AVX2 and portable paths on an AVX-512 machine too.

pub mod matmul;
pub mod wide;

use std::cell::Cell;

/// The instruction sets the kernels are written for, from least to most capable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Portable,
    /// AVX2 with FMA.
    Avx2,
    Avx512,
}

thread_local! {
    static LIMIT: Cell<Isa> = const { Cell::new(Isa::Avx512) };
}

/// What the CPU has.
fn detected() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Isa::Avx2;
        }
    }
    Isa::Portable
}

/// The instruction set kernels called from this thread use: the CPU's best, within this thread's
/// limit.
pub fn isa() -> Isa {
    detected().min(LIMIT.with(|l| l.get()))
}

/// Restores the previous limit when dropped.
#[cfg(test)]
pub struct IsaLimit(Isa);

#[cfg(test)]
impl Drop for IsaLimit {
    fn drop(&mut self) {
        LIMIT.with(|l| l.set(self.0));
    }
}

/// Limits the kernels called from this thread to `isa` (and below) until the guard is dropped
/// (tests run every kernel path on one machine this way).
#[cfg(test)]
pub fn limit_isa(isa: Isa) -> IsaLimit {
    IsaLimit(LIMIT.with(|l| l.replace(isa)))
}
