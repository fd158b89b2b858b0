//! The registry of stage kinds: every kind a `[[pipeline.stage]]` can name in `kind`, each
//! built in one place from its `settings` (the same TOML text `snapctl stage update`
//! sends at run time, so a setting means the same at start-up and later).

use snap_pipeline::{PassStage, Stage};

/// Which stage to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageKind {
    /// `snap_pipeline::PassStage`: forwards every packet (the framework's own cost).
    Pass,
}

impl StageKind {
    /// Every kind, in the order error messages list them.
    pub const ALL: [StageKind; 1] = [Self::Pass];

    /// The name used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
        }
    }

    /// The kind called `name`, or an error listing the known ones.
    pub fn from_name(name: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|k| k.as_str() == name).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
            format!("unknown stage kind {name:?} (known: {})", known.join(", "))
        })
    }

    /// A stage of this kind with `settings` (TOML text; empty for none). Stages are
    /// sans-IO, so building one is also how its settings are validated.
    pub fn build(self, settings: &str) -> Result<Box<dyn Stage>, String> {
        let mut stage: Box<dyn Stage> = match self {
            Self::Pass => Box::new(PassStage),
        };
        stage.update(settings).map_err(|e| e.to_string())?;
        Ok(stage)
    }
}

/// The `settings` table as the text a stage parses.
pub(super) fn settings_text(settings: Option<&toml::Table>) -> String {
    settings.map(|t| t.to_string()).unwrap_or_default()
}
