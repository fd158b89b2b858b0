//! `snapctl upgrade`'s report for people: the two processes, then how each engine moved
//! (its brownout, while it kept serving, and its blackout, while its apps and flows
//! waited). `--json` prints the host's report as is instead.

use std::fmt::Write;

use snap_ipc::control::UpgradeReport;

/// The report as text.
pub fn render(r: &UpgradeReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "upgraded: pid {} -> pid {} in {:.1} ms",
        r.old_pid, r.new_pid, r.total_ms
    );
    let _ = writeln!(
        out,
        "{:<16} {:<9} {:>12} {:>12} {:>7} {:>12}",
        "ENGINE", "KIND", "BROWNOUT_MS", "BLACKOUT_MS", "ROUNDS", "STATE_BYTES"
    );
    for e in &r.engines {
        let _ = writeln!(
            out,
            "{:<16} {:<9} {:>12.3} {:>12.3} {:>7} {:>12}",
            e.name, e.kind, e.brownout_ms, e.blackout_ms, e.rounds, e.state_bytes
        );
    }
    out
}
