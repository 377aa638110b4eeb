//! SIMD kernels of the head's wide first layer: the fused training step ([`wide`]) and the wide
//! product used by validation, evaluate and score ([`matmul`]).

pub mod matmul;
pub mod wide;
