// SPDX-License-Identifier: GPL-2.0-only
//! The loaders' logger: to stderr, with the time of day on errors only, no colours (their
//! output is read from logs and test captures).

use anyhow::{Context, Result};
use simplelog::LevelFilter;

/// Logs at info; `-v` adds debug, `-vv` trace.
pub fn init_logging(verbose: u8) -> Result<()> {
    let level = match verbose {
        0 => LevelFilter::Info,
        1 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    simplelog::TermLogger::init(
        level,
        simplelog::ConfigBuilder::new()
            .set_time_level(LevelFilter::Error)
            .set_location_level(LevelFilter::Off)
            .set_target_level(LevelFilter::Off)
            .set_thread_level(LevelFilter::Off)
            .build(),
        simplelog::TerminalMode::Stderr,
        simplelog::ColorChoice::Never,
    )
    .context("initialising the logger")
}
