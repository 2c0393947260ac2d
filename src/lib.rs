//! clickup-bridge
pub mod routes_file;
pub mod transform;
pub mod verify;
