//! Request shapes of the ClickUp and Jira APIs.
pub mod clickup;
pub mod jira;
