//! The TOML table a change sends: from a file (`--file`) or the command line (`--toml`),
//! passed as text for the host to parse and check (so that every key means what it means
//! in the host's configuration, and errors name it as the host does).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

/// Largest table accepted: far beyond any engine or group, well inside the control
/// protocol's message limit.
const MAX_TABLE: u64 = 64 * 1024;

/// Where the table comes from: exactly one of the two.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct TableOpts {
    /// A file holding the table's body (its keys, without the `[[...]]` header).
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// The table's body inline, one or more lines: each --toml is a line, e.g.
    /// --toml 'name = "echo1"' --toml 'kind = "echo"'.
    #[arg(long, value_name = "TOML")]
    toml: Vec<String>,
}

impl TableOpts {
    /// The table's text.
    pub fn read(&self) -> anyhow::Result<String> {
        if !self.toml.is_empty() {
            let text = self.toml.join("\n");
            if text.len() as u64 > MAX_TABLE {
                bail!("--toml is {} bytes; at most {MAX_TABLE} are accepted", text.len());
            }
            return Ok(text);
        }
        let path = self.file.as_ref().expect("clap requires --file or --toml");
        let len = std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        if len > MAX_TABLE {
            bail!(
                "{} is {len} bytes; at most {MAX_TABLE} are accepted",
                path.display()
            );
        }
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }
}
