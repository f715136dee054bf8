//! The crash test: SIGKILL at random moments, restart, prove nothing was lost or done twice.
