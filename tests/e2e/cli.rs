//! End-to-end tests of every CLI command, in a temporary data dir.

#[allow(unused_imports)]
use crate::support::{DataDir, http_server};
