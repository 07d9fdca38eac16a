//! Storage: the object store and its client, the layout of a run in it
//! (checkpoints, manifests published last, resume states), leases, and
//! atomic writes of local files.

pub mod checkpoint;
pub mod files;
pub mod lease;
pub mod location;
pub mod store;
pub mod store_client;
