//! Stage 1, data: find the images ([`scan`], or their labels in a table: [`labels`]), read and
//! decode them ([`decode`]) and turn them into model tensors ([`preprocess`]), and the architecture presets that say how
//! ([`presets`]); images in object storage are listed and downloaded through [`remote`]; lists of photos to
//! leave out ([`exclude`]).

pub mod augment;
pub mod decode;
pub mod exclude;
pub mod labels;
pub mod preprocess;
pub mod presets;
pub mod remote;
pub mod scan;
pub mod split;
