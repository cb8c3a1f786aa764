//! tilepipe's image engine, shared by the master and the workers: tile
//! geometry, halo cutting, operations and the Kafka wire format. Pure: no I/O.

pub mod codec;
pub mod frame;
pub mod geometry;
pub mod jpeg;
pub mod noise;
pub mod ops;
pub mod shrink;
pub mod wire;

pub use frame::{Channels, Frame};
pub use geometry::{Rect, TileGrid};
pub use ops::Operation;
