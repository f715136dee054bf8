//! End-to-end tests: they drive the real `conveyor` binary as a user would.
//!
//! One test binary for the whole repository (see docs/ARCHITECTURE.md); each area of
//! the product is a module.

mod api_call;
mod attacks;
mod bitrix;
mod check;
mod cli;
mod code;
mod corezoid;
mod crash;
mod dashboard;
mod docs;
mod doors;
mod engine;
mod faults;
mod http_api;
mod http_security;
mod messages;
mod postgres;
mod recovery;
mod retention;
mod secrets;
mod store;
mod support;
mod task_api_ops;
