//! The report in a real browser: headless Chromium (Debian's `chromium`, one of `cargo xtask
//! deps`' packages) loads a copy of `index.html` with a small probe at the end of its body,
//! and `--dump-dom` gives back what the probe found after layout: every `<svg>`'s rendered
//! size and how many shapes it drew, and every error the page raised (script errors,
//! resources that failed, `console.error`). Any console message in Chromium's log counts as
//! an error too: the report has no scripts of its own, so it should print none. Then a
//! screenshot of the page.
//!
//! The probe goes into a copy, never into the report: the report stays script-free.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// Listens for errors from the top of the page on.
const HEAD_PROBE: &str = "<script>window.__mqErrors=[];\
    window.addEventListener('error',function(e){window.__mqErrors.push(String(e.message||\
    (e.target&&(e.target.src||e.target.href))||'error'))},true);\
    (function(){var ce=console.error;console.error=function(){window.__mqErrors.push(\
    Array.prototype.join.call(arguments,' '));ce.apply(console,arguments)}})();</script>";

/// Once the page has loaded (images and all, so that their errors are in): sizes and
/// shapes of every SVG after layout, and the errors, into an attribute.
const BODY_PROBE: &str =
    "<script>window.addEventListener('load',function(){var s=[].map.call(document.querySelectorAll('svg'),\
    function(v){var r=v.getBoundingClientRect();return {w:r.width,h:r.height,\
    shapes:v.querySelectorAll('rect,path,polyline,polygon,line,circle,text').length}});\
    document.documentElement.setAttribute('data-mq-probe',JSON.stringify({svgs:s,\
    errors:window.__mqErrors}))});</script>";

/// What the probe reports.
#[derive(Debug, Deserialize)]
pub struct Probe {
    pub svgs: Vec<SvgBox>,
    pub errors: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct SvgBox {
    pub w: f64,
    pub h: f64,
    pub shapes: usize,
}

/// What the browser check found.
#[derive(Debug)]
pub struct Checked {
    pub svgs: usize,
    pub screenshot: PathBuf,
}

/// Chromium, or why not.
pub fn chromium() -> Result<PathBuf> {
    ["chromium", "chromium-browser"]
        .iter()
        .find_map(|n| crate::sys::which(n))
        .context("chromium not found (Debian package chromium; `cargo xtask deps` installs it)")
}

fn base(cmd: &mut Command, work: &Path) {
    cmd.arg("--headless")
        // Root in a container: Chromium's sandbox needs user namespaces it may not get.
        .arg("--no-sandbox")
        .arg("--disable-gpu")
        .arg("--no-first-run")
        .arg("--allow-file-access-from-files")
        .arg("--enable-logging=stderr")
        .arg("--v=0")
        .arg(format!("--user-data-dir={}", work.join("profile").display()))
        .stdin(Stdio::null());
}

/// Runs Chromium with its stdout and stderr in files of `work` (a dumped DOM is larger than
/// a pipe's buffer, and nobody reads a pipe while we wait), under a deadline.
fn run(mut cmd: Command, work: &Path, what: &str) -> Result<(String, String)> {
    let described = crate::sys::describe(&cmd);
    let (out_path, err_path) = (work.join("stdout.txt"), work.join("stderr.txt"));
    let mut child = cmd
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()
        .with_context(|| format!("starting `{described}`"))?;
    // A hung browser must not hang the run.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what}: chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    if !status.success() {
        bail!("{what}: `{described}` failed ({status}):\n{stderr}");
    }
    Ok((stdout, stderr))
}

/// The probe's findings from a dumped DOM.
pub fn parse_probe(dom: &str) -> Result<Probe> {
    let start = dom
        .find("data-mq-probe=\"")
        .context("the page's DOM has no probe result (did the page load?)")?
        + "data-mq-probe=\"".len();
    let end = dom[start..].find('"').context("unterminated probe attribute")? + start;
    let json = dom[start..end]
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    serde_json::from_str(&json).with_context(|| format!("parsing the probe's result {json}"))
}

/// Console messages in Chromium's log (`...:CONSOLE...] "message", source: ...`).
pub fn console_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains(":CONSOLE")).collect()
}

/// Loads `html` (a report) in headless Chromium: every `<svg>` of the file must be rendered
/// with a size and shapes, and the page must raise no error; then saves a screenshot to
/// `screenshot`. `work` is a scratch directory.
pub fn check(html: &Path, work: &Path, screenshot: &Path) -> Result<Checked> {
    let chromium = chromium()?;
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let page = std::fs::read_to_string(html).with_context(|| format!("reading {}", html.display()))?;
    let expected = page.matches("<svg").count();
    let probed = page
        .replacen("<head>", &format!("<head>{HEAD_PROBE}"), 1)
        .replacen("</body>", &format!("{BODY_PROBE}</body>"), 1);
    if !probed.contains(HEAD_PROBE) || !probed.contains(BODY_PROBE) {
        bail!("{} has no <head> or no </body>", html.display());
    }
    let copy = work.join("probed.html");
    std::fs::write(&copy, probed).with_context(|| format!("writing {}", copy.display()))?;

    let mut cmd = Command::new(&chromium);
    base(&mut cmd, work);
    cmd.arg("--dump-dom").arg(format!("file://{}", copy.display()));
    let (dom, stderr) = run(cmd, work, "loading the report")?;
    let probe = parse_probe(&dom)?;
    let mut problems: Vec<String> = probe.errors.iter().map(|e| format!("page error: {e}")).collect();
    problems.extend(console_lines(&stderr).iter().map(|l| format!("console: {l}")));
    if probe.svgs.len() != expected {
        problems.push(format!(
            "{} <svg> in the file, {} in the rendered page",
            expected,
            probe.svgs.len()
        ));
    }
    for (i, s) in probe.svgs.iter().enumerate() {
        if !(s.w >= 50.0 && s.h >= 50.0) || s.shapes < 3 {
            problems.push(format!("plot {i} does not render: {s:?}"));
        }
    }
    if !problems.is_empty() {
        bail!("the report fails in Chromium:\n  {}", problems.join("\n  "));
    }

    let mut cmd = Command::new(&chromium);
    base(&mut cmd, work);
    cmd.arg("--hide-scrollbars")
        .arg("--window-size=1100,1600")
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(format!("file://{}", html.display()));
    run(cmd, work, "taking a screenshot")?;
    let size = screenshot.metadata().map(|m| m.len()).unwrap_or(0);
    if size < 1000 {
        bail!("the screenshot {} is empty ({size} bytes)", screenshot.display());
    }
    Ok(Checked {
        svgs: probe.svgs.len(),
        screenshot: screenshot.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xtask-browser-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn probe_results_and_console_lines_are_read_from_chromium_output() {
        let dom = "<html data-mq-probe=\"{&quot;svgs&quot;:[{&quot;w&quot;:900,&quot;h&quot;:460,\
                   &quot;shapes&quot;:40}],&quot;errors&quot;:[&quot;a &lt;b&gt;&quot;]}\"><body>";
        let p = parse_probe(dom).unwrap();
        assert_eq!(p.svgs.len(), 1);
        assert_eq!(p.svgs[0].shapes, 40);
        assert_eq!(p.errors, ["a <b>"]);
        assert!(parse_probe("<html><body>").is_err());
        let log = "[1:1:1204/1:INFO:CONSOLE:2] \"boom\", source: file:///x (2)\n[1:1:INFO:other] fine\n";
        assert_eq!(console_lines(log).len(), 1);
    }

    /// The real report page (rendered from a summary with a real plot, 200 KB like a real
    /// report) in real headless Chromium: it loads clean, its plot renders, the screenshot is
    /// written; a page with an empty plot and a missing image fails with both named.
    #[test]
    fn a_rendered_report_loads_clean_in_chromium_and_a_broken_one_does_not() {
        let dir = scratch("ok");
        let s = crate::experiments::render::tests::summary();
        let chart = crate::experiments::charts::Bars {
            title: "t".into(),
            y_desc: "µs".into(),
            groups: vec!["a".into(), "b".into()],
            series: vec![crate::experiments::charts::Series {
                name: "s".into(),
                values: vec![Some(1.0), Some(2.0)],
            }],
            log: false,
        };
        let svg = crate::experiments::charts::bars(&chart).unwrap();
        let html = crate::experiments::render::html(&s, &[("interference".into(), vec![svg])]);
        // Larger than a pipe's buffer once dumped, as a real report is.
        let html = html.replacen("</body>", &format!("<p>{}</p></body>", "row ".repeat(50_000)), 1);
        let page = dir.join("index.html");
        std::fs::write(&page, &html).unwrap();
        let shot = dir.join("shot.png");
        let checked = check(&page, &dir.join("work"), &shot).unwrap();
        assert_eq!(checked.svgs, 1);
        assert!(shot.metadata().unwrap().len() > 1000);

        // An empty plot and a page that raises an error are both caught.
        let broken = html
            .replacen("<figure>", "<figure><svg width=\"0\" height=\"0\"></svg>", 1)
            .replacen("</body>", "<img src=\"missing.png\"></body>", 1);
        let bad = dir.join("bad.html");
        std::fs::write(&bad, broken).unwrap();
        let err = check(&bad, &dir.join("work2"), &dir.join("bad.png"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not render"), "{err}");
        assert!(err.contains("page error") || err.contains("console"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
