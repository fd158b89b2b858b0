//! Helpers shared by pony's integration tests.

pub mod netns;
