// SPDX-License-Identifier: GPL-2.0-only
//! Each report's tag (`mq_report`) names the binary that prints it: `cargo xtask` runs the
//! program by that name and reads its report back by that tag.

use std::path::Path;

use mq_report::{demo, efficiency, idle, modes, pony, sched, upgrade, wakeup_trace, Tagged};

#[test]
fn each_report_tag_names_its_binary() {
    for (exe, program) in [
        (env!("CARGO_BIN_EXE_mq-demo"), demo::Report::TAG.program),
        (env!("CARGO_BIN_EXE_mq-bench-sched"), sched::Report::TAG.program),
        (env!("CARGO_BIN_EXE_mq-bench-modes"), modes::Report::TAG.program),
        (env!("CARGO_BIN_EXE_mq-bench-pony"), pony::Report::TAG.program),
        (
            env!("CARGO_BIN_EXE_mq-bench-upgrade"),
            upgrade::Report::TAG.program,
        ),
        (
            env!("CARGO_BIN_EXE_mq-bench-efficiency"),
            efficiency::Report::TAG.program,
        ),
        (env!("CARGO_BIN_EXE_mq-bench-idle"), idle::Report::TAG.program),
        (
            env!("CARGO_BIN_EXE_mq-trace-wakeups"),
            wakeup_trace::Report::TAG.program,
        ),
    ] {
        assert_eq!(Path::new(exe).file_name().unwrap(), program, "{exe}");
    }
}
