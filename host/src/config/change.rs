//! Run-time changes to the engines and groups, checked exactly as the file is: an engine to add is one
//! `[[group.engine]]` table and a group one `[[group]]` table (their bodies, without the
//! header), parsed by the same types and validated as part of the whole configuration they
//! would make, so an option means the same at start-up and at run time. Errors name the
//! new table's field as `engine.FIELD` or `group.FIELD` (`group.engine[1].bind`).
//!
//! Relay chains are joined when the host starts (`engines`): a relay cannot be added at
//! run time, and neither a relay nor an engine a relay forwards to can be removed.

use snap_runtime::{Engine, GroupSpec};

use super::{engines, invalid, Config, ConfigError, EngineConfig, EngineKind, GroupConfig};

/// Renames the error's field from its place in the whole configuration (`from`) to its place
/// in the table the operator wrote (`to`).
fn relative(e: ConfigError, from: &str, to: &str) -> ConfigError {
    match e {
        ConfigError::Invalid { field, message }
            if field == from || field.starts_with(&format!("{from}.")) =>
        {
            ConfigError::Invalid {
                field: format!("{to}{}", &field[from.len()..]),
                message,
            }
        }
        e => e,
    }
}

fn no_relays(e: &EngineConfig, at: &str) -> Result<(), ConfigError> {
    if e.kind == EngineKind::Relay {
        return Err(invalid(
            format!("{at}.kind"),
            "a relay is joined to its next engine when the host starts; relays cannot be added at run time",
        ));
    }
    Ok(())
}

impl Config {
    /// This configuration with one more engine, from the body of a `[[group.engine]]`
    /// table, in group `group`: the new whole configuration and the engine's spec.
    pub fn with_engine(
        &self,
        group: &str,
        table: &str,
        cpus: usize,
    ) -> Result<(Config, EngineConfig), ConfigError> {
        let engine: EngineConfig = toml::from_str(table)?;
        no_relays(&engine, "engine")?;
        let mut next = self.clone();
        let gi = next
            .group
            .iter()
            .position(|g| g.name == group)
            .ok_or_else(|| invalid("group", format!("no group named {group:?}")))?;
        next.group[gi].engine.push(engine.clone());
        let at = format!("group[{gi}].engine[{}]", next.group[gi].engine.len() - 1);
        next.validate(cpus).map_err(|e| relative(e, &at, "engine"))?;
        Ok((next, engine))
    }

    /// This configuration with one more group, from the body of a `[[group]]` table.
    pub fn with_group(&self, table: &str, cpus: usize) -> Result<(Config, GroupConfig), ConfigError> {
        let group: GroupConfig = toml::from_str(table)?;
        for (ei, e) in group.engine.iter().enumerate() {
            no_relays(e, &format!("group.engine[{ei}]"))?;
        }
        let mut next = self.clone();
        next.group.push(group.clone());
        let at = format!("group[{}]", next.group.len() - 1);
        next.validate(cpus).map_err(|e| relative(e, &at, "group"))?;
        Ok((next, group))
    }

    /// This configuration without engine `name`. Refused for the last engine of a group
    /// (remove the group) and for relay chains' members.
    pub fn without_engine(&self, name: &str) -> Result<Config, ConfigError> {
        let mut next = self.clone();
        let (gi, ei) = next
            .group
            .iter()
            .enumerate()
            .find_map(|(gi, g)| g.engine.iter().position(|e| e.name == name).map(|ei| (gi, ei)))
            .ok_or_else(|| invalid("engine", format!("no engine named {name:?}")))?;
        self.not_in_pipeline(&self.group[gi].engine[ei])?;
        if next.group[gi].engine.len() == 1 {
            return Err(invalid(
                "engine",
                format!(
                    "{name:?} is the last engine of group {:?}; remove the group instead",
                    next.group[gi].name
                ),
            ));
        }
        next.group[gi].engine.remove(ei);
        Ok(next)
    }

    /// This configuration without group `name`. Refused if the group holds a relay
    /// relay chain's member.
    pub fn without_group(&self, name: &str) -> Result<Config, ConfigError> {
        let mut next = self.clone();
        let gi = next
            .group
            .iter()
            .position(|g| g.name == name)
            .ok_or_else(|| invalid("group", format!("no group named {name:?}")))?;
        for e in &next.group[gi].engine {
            self.not_in_pipeline(e)?;
        }
        if super::pipeline::hosts_stages(self, name) {
            return Err(invalid(
                "group",
                format!("group {name:?} runs pipeline stages, built at start-up; it cannot be removed at run time"),
            ));
        }
        next.group.remove(gi);
        Ok(next)
    }

    fn not_in_pipeline(&self, e: &EngineConfig) -> Result<(), ConfigError> {
        let name = &e.name;
        if let Some(p) = e.options.as_ref().and_then(super::pony::pipeline_of) {
            return Err(invalid(
                "engine",
                format!("{name:?} is the Pony engine of pipeline {p:?} (built at start-up); it cannot be removed at run time"),
            ));
        }
        if e.kind == EngineKind::Relay {
            return Err(invalid(
                "engine",
                format!("{name:?} is a relay, joined to its next engine at start-up; it cannot be removed at run time"),
            ));
        }
        let relay = self
            .group
            .iter()
            .flat_map(|g| &g.engine)
            .find(|r| r.next.as_deref() == Some(name.as_str()));
        if let Some(relay) = relay {
            return Err(invalid(
                "engine",
                format!(
                    "{name:?} is the next engine of relay {:?} (joined at start-up); it cannot be removed at run time",
                    relay.name
                ),
            ));
        }
        Ok(())
    }
}

impl EngineConfig {
    /// Builds this engine on its own (binding its sockets), for a run-time add. Errors name
    /// the field as `engine.FIELD`.
    pub fn build_standalone(&self) -> Result<Box<dyn Engine>, ConfigError> {
        engines::build_standalone(self, "engine")
    }
}

impl GroupConfig {
    /// Builds this group's engines and its runtime spec, for a run-time add. Errors name
    /// the field as `group.engine[N].FIELD`.
    pub fn build_standalone(&self) -> Result<GroupSpec, ConfigError> {
        let engines = self
            .engine
            .iter()
            .enumerate()
            .map(|(ei, e)| engines::build_standalone(e, &format!("group.engine[{ei}]")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.spec(engines))
    }
}

impl Config {
    /// This configuration with pipeline stage `name`'s settings replaced by `settings`
    /// (the body of its `settings` table). Checks only that the stage exists and the text
    /// is a TOML table: the stage itself parses and applies it, or refuses it.
    pub fn with_stage_settings(&self, name: &str, settings: &str) -> Result<Config, ConfigError> {
        let table: toml::Table = toml::from_str(settings)?;
        let mut next = self.clone();
        let stage = next
            .pipeline
            .iter_mut()
            .flat_map(|p| &mut p.stage)
            .find(|s| s.name == name)
            .ok_or_else(|| invalid("engine", format!("no pipeline stage named {name:?}")))?;
        stage.settings = (!table.is_empty()).then_some(table);
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        [[group]]
        name = "a"
        mode = "spreading"
        [[group.engine]]
        name = "e0"
        kind = "echo"
        [[group]]
        name = "d"
        mode = "dedicated"
        cores = [1]
        [[group.engine]]
        name = "d0"
        kind = "echo"
        [[group]]
        name = "p"
        mode = "spreading"
        [[group.engine]]
        name = "r"
        kind = "relay"
        next = "n"
        [[group.engine]]
        name = "n"
        kind = "echo"
    "#;

    fn base() -> Config {
        Config::parse(BASE, 2).unwrap()
    }

    fn err<T: std::fmt::Debug>(r: Result<T, ConfigError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn an_engine_table_is_checked_as_in_the_file_with_its_own_field_paths() {
        let c = base();
        let (next, e) = c
            .with_engine("a", "name = \"e1\"\nkind = \"echo\"\nwork_ns = 5", 2)
            .unwrap();
        assert_eq!(e.work_ns, 5);
        assert_eq!(next.group[0].engine.len(), 2);
        assert!(c.group[0].engine.len() == 1, "the original is untouched");
        let cases = [
            (
                "name = \"e0\"\nkind = \"echo\"",
                "engine.name: duplicate engine name",
            ),
            (
                "name = \"x\"\nkind = \"echo\"\nwork_ns = 99999999999",
                "engine.work_ns",
            ),
            ("name = \"x\"\nkind = \"udp_echo\"", "engine.bind: required"),
            (
                "name = \"x\"\nkind = \"echo\"\noptions = {}",
                "engine.options: only applies",
            ),
            (
                "name = \"x\"\nkind = \"relay\"\nnext = \"e0\"",
                "engine.kind: a relay",
            ),
            ("name = \"x\"\nkind = \"warp\"", "unknown kind"),
            (
                "name = \"x\"\nkind = \"echo\"\ncolour = 1",
                "unknown field `colour`",
            ),
        ];
        for (table, expected) in cases {
            let e = err(c.with_engine("a", table, 2));
            assert!(e.contains(expected), "{table:?}: {e}");
        }
        let e = err(c.with_engine("zz", "name = \"x\"\nkind = \"echo\"", 2));
        assert!(e.contains("group: no group named \"zz\""), "{e}");
    }

    #[test]
    fn a_group_table_is_checked_as_in_the_file_with_its_own_field_paths() {
        let c = base();
        let table = "name = \"b\"\nmode = \"compacting\"\n[[engine]]\nname = \"b0\"\nkind = \"echo\"";
        let (next, g) = c.with_group(table, 2).unwrap();
        assert_eq!(g.engine.len(), 1);
        assert_eq!(next.group.len(), 4);
        let cases = [
            (
                "name = \"a\"\nmode = \"spreading\"\n[[engine]]\nname = \"x\"\nkind = \"echo\"",
                "group.name: duplicate group name",
            ),
            (
                "name = \"b\"\nmode = \"dedicated\"\n[[engine]]\nname = \"x\"\nkind = \"echo\"",
                "group.cores: dedicated mode needs",
            ),
            (
                "name = \"b\"\nmode = \"spreading\"\ncores = [1]\n[[engine]]\nname = \"x\"\nkind = \"echo\"",
                "dedicated cores cannot be shared",
            ),
            ("name = \"b\"\nmode = \"spreading\"", "group.engine: at least one"),
            (
                "name = \"b\"\nmode = \"spreading\"\n[[engine]]\nname = \"e0\"\nkind = \"echo\"",
                "group.engine[0].name: duplicate engine name",
            ),
            (
                "name = \"b\"\nmode = \"spreading\"\nmicroquanta = { runtime_us = 9, period_us = 8 }\n[[engine]]\nname = \"x\"\nkind = \"echo\"",
                "group.microquanta: group \"b\": runtime_us 9 must be between 1 and period_us (8)",
            ),
        ];
        for (table, expected) in cases {
            let e = err(c.with_group(table, 2));
            assert!(e.contains(expected), "{table:?}: {e}");
        }
    }

    #[test]
    fn removals_keep_groups_non_empty_and_relay_chains_whole() {
        let c = base();
        let (with, _) = c.with_engine("a", "name = \"e1\"\nkind = \"echo\"", 2).unwrap();
        let without = with.without_engine("e1").unwrap();
        assert_eq!(without, c);
        assert!(err(c.without_engine("e0")).contains("last engine of group \"a\""));
        assert!(err(c.without_engine("zz")).contains("no engine named"));
        assert!(err(c.without_engine("r")).contains("is a relay"));
        let (with, _) = c.with_engine("p", "name = \"p2\"\nkind = \"echo\"", 2).unwrap();
        assert!(err(with.without_engine("n")).contains("next engine of relay \"r\""));
        assert!(err(c.without_group("p")).contains("is a relay"));
        assert_eq!(c.without_group("a").unwrap().group.len(), 2);
        assert!(err(c.without_group("zz")).contains("no group named"));
    }
}
