// SPDX-License-Identifier: GPL-2.0-only
//! Timing bounds checked in a TCG guest: a vCPU can stall for milliseconds at any time, and
//! about one run in several is dominated by such stalls, so a test measures up to three
//! times and asserts its unchanged bound on the last run, with every run's value printed.
//! The sched_ext VM tests use this; what every run must show (counts, states) is asserted
//! inside the run, not retried.

/// Up to three runs of `run` until `holds` accepts one. Returns every run's value and
/// whether the last one held, for the caller to assert once the scheduler is stopped.
pub fn up_to_three_runs<T>(mut run: impl FnMut() -> T, holds: impl Fn(&T) -> bool) -> (Vec<T>, bool) {
    let mut values = Vec::new();
    for _ in 0..3 {
        let v = run();
        let held = holds(&v);
        values.push(v);
        if held {
            return (values, true);
        }
    }
    (values, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_at_the_first_run_that_holds() {
        let mut n = 0;
        let (values, held) = up_to_three_runs(
            || {
                n += 1;
                n
            },
            |&v| v == 2,
        );
        assert_eq!((values, held), (vec![1, 2], true));
    }

    #[test]
    fn gives_up_after_three_runs() {
        let (values, held) = up_to_three_runs(|| 7, |&v| v < 5);
        assert_eq!((values, held), (vec![7, 7, 7], false));
    }
}
