//! Stage 1, data: find the images ([`scan`]), decode and turn them into model tensors
//! ([`preprocess`]), and the architecture presets that say how ([`presets`]).

pub mod augment;
pub mod preprocess;
pub mod presets;
pub mod scan;
pub mod split;
