//! routes.yaml text -> node tree with positions and `${VAR}` expanded.
pub mod diag;
pub mod env;
pub mod reader;
pub mod yaml;
