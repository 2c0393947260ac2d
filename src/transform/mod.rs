//! Values out of events: JSONPath extraction and Handlebars rendering.
pub mod jsonpath;
pub mod render;
