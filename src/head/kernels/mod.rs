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

/// Flushes denormal floats to zero on this thread while alive (x86 MXCSR FTZ and DAZ), as
/// TensorFlow's CPU kernels do. RMSprop/Adam state that decays towards zero would otherwise become
/// denormal late in training and every operation on it would slow down many times over.
pub struct FlushDenormals {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

impl FlushDenormals {
    #[allow(deprecated)] // _mm_getcsr/_mm_setcsr: the documented replacement is inline assembly.
    pub fn new() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
            // SAFETY: reading and setting the FTZ (bit 15) and DAZ (bit 6) flags of MXCSR only
            // changes how this thread rounds denormal results and inputs.
            unsafe {
                let saved = _mm_getcsr();
                _mm_setcsr(saved | 0x8040);
                FlushDenormals { saved }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        FlushDenormals {}
    }
}

impl Default for FlushDenormals {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for FlushDenormals {
    #[allow(deprecated)]
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: restores the flags saved by `new` on the same thread.
        unsafe {
            std::arch::x86_64::_mm_setcsr(self.saved)
        }
    }
}
