//! Number formats below 32 bits: exact codecs for the 8- and 4-bit floats, and the
//! block-scaled and per-channel forms that quantized weights are stored in.
//!
//! Every encoder rounds to nearest, ties to even, and saturates or overflows as its format
//! defines; `tests/codecs.rs` checks them bit for bit against `ml_dtypes`.

mod block;
mod channel;
mod minifloat;

pub use block::{BlockFormat, BlockQuantized};
pub use channel::{quantize_channels, ChannelQuantized};
pub use minifloat::{decode, encode, int_range, max_finite, round_half_even, F32Encoder, Rounding};
