//! Values out of events: JSONPath extraction and Handlebars rendering.
pub mod helpers;
pub mod jsonpath;
pub mod render;
