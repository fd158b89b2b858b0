//! The registry of stage kinds: every kind a `[[pipeline.stage]]` can name in `kind`, each
//! built in one place from its `settings` (the same TOML text `snapctl stage update`
//! sends at run time, so a setting means the same at start-up and later).

use snap_pipeline::{PassStage, Stage};
use snap_policy::stage::{AclStage, OverlayStage, ShaperStage};

/// Which stage to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageKind {
    /// `snap_pipeline::PassStage`: forwards every packet (the framework's own cost).
    Pass,
    /// `snap_policy::stage::AclStage`: allow/deny rules on peer, Pony service, direction.
    Acl,
    /// `snap_policy::stage::ShaperStage`: per-tenant token buckets on a timing wheel.
    Shaper,
    /// `snap_policy::stage::OverlayStage`: tenant encapsulation and checked decapsulation.
    Overlay,
}

impl StageKind {
    /// Every kind, in the order error messages list them.
    pub const ALL: [StageKind; 4] = [Self::Pass, Self::Acl, Self::Shaper, Self::Overlay];

    /// The name used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Acl => "acl",
            Self::Shaper => "shaper",
            Self::Overlay => "overlay",
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
        // The policy kinds need their settings to exist at all (rules, wheel, tables).
        let stage: Box<dyn Stage> = match self {
            Self::Pass => {
                let mut stage = Box::new(PassStage);
                stage.update(settings).map_err(|e| e.to_string())?;
                stage
            }
            Self::Acl => Box::new(AclStage::new(settings).map_err(|e| e.to_string())?),
            Self::Shaper => Box::new(ShaperStage::new(settings).map_err(|e| e.to_string())?),
            Self::Overlay => Box::new(OverlayStage::new(settings).map_err(|e| e.to_string())?),
        };
        Ok(stage)
    }
}

/// The `settings` table as the text a stage parses.
pub(super) fn settings_text(settings: Option<&toml::Table>) -> String {
    settings.map(|t| t.to_string()).unwrap_or_default()
}
