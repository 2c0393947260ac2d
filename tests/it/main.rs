#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Integration tests: the real daemon, real SQLite files, real HTTP.
//! One binary so the crate links once.

mod admin;
mod authoring;
mod browser;
mod check;
mod cli;
mod console;
mod deliver;
mod deploy;
mod direct;
mod hardening;
mod https;
mod inbound;
mod instances;
mod lifecycle;
mod links;
mod openapi;
mod ordering;
mod pg;
mod readme;
mod recovery;
mod senders;
mod store;
mod store_copy;
mod store_health;
mod support;
mod targets;
mod tidy;
mod webhooks;
