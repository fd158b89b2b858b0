// SPDX-License-Identifier: GPL-2.0-only
//! The policy's flags, flattened into each loader's `clap` options: the class budget
//! (runtime out of every period, per CPU) and the two slices, with the bounds both loaders
//! accept.

use anyhow::{bail, Result};
use mq_class::Budget;

/// Slice bounds in µs.
const SLICE_US_RANGE: std::ops::RangeInclusive<u64> = 10..=1_000_000;

/// The MicroQuanta policy's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    /// MicroQuanta bandwidth period, in microseconds.
    #[arg(long, default_value_t = 40)]
    pub period_us: u64,

    /// MicroQuanta runtime per period while normal tasks compete, in microseconds (at most
    /// the period).
    #[arg(long, default_value_t = 20)]
    pub runtime_us: u64,

    /// Round-robin slice among MicroQuanta (class) threads sharing a CPU, in microseconds
    /// (scx_microquanta ends a turn up to a quarter slice late; scx_mqland at the first tick
    /// after it).
    #[arg(long, default_value_t = 1000)]
    pub class_slice_us: u64,

    /// Time slice of normal tasks (every task outside the class), in microseconds.
    #[arg(long, default_value_t = 3000)]
    pub normal_slice_us: u64,
}

impl PolicyArgs {
    /// The default group's budget.
    pub fn budget(&self) -> Budget {
        Budget {
            period_us: self.period_us,
            runtime_us: self.runtime_us,
        }
    }

    /// Checks the bounds, naming the flag that is out of them.
    pub fn validate(&self) -> Result<()> {
        self.budget()
            .check("--period-us", "--runtime-us")
            .map_err(anyhow::Error::msg)?;
        for (flag, value) in [
            ("--normal-slice-us", self.normal_slice_us),
            ("--class-slice-us", self.class_slice_us),
        ] {
            if !SLICE_US_RANGE.contains(&value) {
                bail!(
                    "{flag} {value} is outside {}..={} µs",
                    SLICE_US_RANGE.start(),
                    SLICE_US_RANGE.end()
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Opts {
        #[command(flatten)]
        policy: PolicyArgs,
    }

    fn parse(args: &[&str]) -> Result<PolicyArgs> {
        let opts = Opts::try_parse_from(std::iter::once("test").chain(args.iter().copied()))?;
        opts.policy.validate()?;
        Ok(opts.policy)
    }

    #[test]
    fn the_defaults_are_the_kernel_patchs_40_20_and_valid() {
        let p = parse(&[]).unwrap();
        assert_eq!((p.period_us, p.runtime_us), (40, 20));
        assert_eq!((p.class_slice_us, p.normal_slice_us), (1000, 3000));
    }

    #[test]
    fn each_bound_names_its_flag() {
        for (args, flag) in [
            (&["--period-us", "1"][..], "--period-us 1"),
            (
                &["--period-us", "40", "--runtime-us", "50"][..],
                "--runtime-us 50",
            ),
            (&["--runtime-us", "0"][..], "--runtime-us 0"),
            (&["--class-slice-us", "5"][..], "--class-slice-us 5"),
            (&["--normal-slice-us", "2000000"][..], "--normal-slice-us 2000000"),
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(flag), "{args:?}: {err}");
        }
    }
}
