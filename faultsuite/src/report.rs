//! The verdicts for a person: as text for a terminal, and as one self-contained HTML page (no script, no file
//! beside it) with the availability tables and a chart of latency over time per kind of operation, fault windows
//! shaded. The charts are SVG written here: a scatter plot on a log scale is a few rectangles, circles and lines,
//! and plotters' text needs fonts from the system (fontconfig) or bundled with the binary.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::checker::availability::{Availability, PerClass, Shares, Spread};
use crate::checker::register::{RegisterReport, Verdict, Window};
use crate::checker::set::SetReport;
use crate::checker::Validity;
use crate::history::{Class, History, Kind, Operation, Status};
use crate::Analysis;

/// An instant of the run, to the microsecond the history keeps.
fn instant(t: Duration) -> String {
    format!("t+{:.6}s", t.as_secs_f64())
}

fn duration(d: Duration) -> String {
    format!("{d:.1?}")
}

fn share(shares: &Shares) -> String {
    match shares.answered() {
        Some(answered) => format!(
            "{:.1}% answered ({} ok, {} failed, {} unknown)",
            answered * 100.0,
            shares.ok,
            shares.fail,
            shares.unknown
        ),
        None => "no operations".into(),
    }
}

fn spread(spread: &Option<Spread>) -> String {
    match spread {
        Some(s) => format!(
            "{} / {} / {}",
            duration(s.min),
            duration(s.median),
            duration(s.max)
        ),
        None => "never".into(),
    }
}

fn verdict_line(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Linearizable => "linearizable".into(),
        Verdict::NotLinearizable { .. } => "NOT linearizable".into(),
        Verdict::Unknown { reason } => format!("unknown ({reason})"),
    }
}

/// One line per operation of a failing window: its interval, its client and what it did.
fn window_lines(history: &History, window: &Window) -> Vec<String> {
    let line = |op: &Operation| {
        let end = if op.op.status() == Status::Unknown {
            "…".to_string()
        } else {
            instant(op.completed)
        };
        format!(
            "{} – {}  process {}  {}",
            instant(op.invoked),
            end,
            op.process,
            op.op
        )
    };
    window.ops.iter().map(|&i| line(&history.ops[i])).collect()
}

fn earlier_unknown(window: &Window) -> Option<String> {
    (window.earlier_unknown > 0).then(|| {
        format!("and {} operations of unknown outcome invoked before it, which may take effect inside it", window.earlier_unknown)
    })
}

/// The verdicts, for a terminal.
pub fn text(history: &History, analysis: &Analysis) -> String {
    let mut out = String::new();
    let register = &analysis.register;
    let _ = writeln!(
        out,
        "registers (linearizability): {}",
        register.validity().name()
    );
    for key in &register.keys {
        let _ = writeln!(
            out,
            "  key {}: {} ({} operations, {} unknown, {} configurations, {})",
            key.key,
            verdict_line(&key.verdict),
            key.operations,
            key.unknown,
            key.states,
            duration(key.elapsed)
        );
        if let Verdict::NotLinearizable { window } = &key.verdict {
            let _ = writeln!(
                out,
                "    smallest failing window {} – {}:",
                instant(window.from),
                instant(window.to)
            );
            for line in window_lines(history, window)
                .into_iter()
                .chain(earlier_unknown(window))
            {
                let _ = writeln!(out, "      {line}");
            }
        }
    }
    let set = &analysis.set;
    let _ = writeln!(out, "sets: {}", set.validity().name());
    for key in &set.keys {
        let _ = writeln!(
            out,
            "  key {}: {} acknowledged, lost {:?}, unexpected {:?}, {} unknown present, {} absent{}",
            key.key,
            key.acknowledged,
            key.lost,
            key.unexpected,
            key.unknown_present,
            key.unknown_absent,
            if key.read_at.is_none() { " (no final read answered)" } else { "" }
        );
    }
    let availability = &analysis.availability;
    let _ = writeln!(out, "availability:");
    for class in Class::ALL {
        let _ = writeln!(
            out,
            "  {}: {}",
            class.name(),
            share(availability.overall.get(class))
        );
    }
    for fault in &availability.faults {
        let _ = writeln!(
            out,
            "  {} ({} window{}): first ok after the heal (min / median / max): reads {}, writes {}",
            fault.name,
            fault.windows,
            if fault.windows == 1 { "" } else { "s" },
            spread(&fault.recovery.read),
            spread(&fault.recovery.write)
        );
    }
    let _ = writeln!(
        out,
        "overall: {} ({} operations, {} faults)",
        analysis.validity().name(),
        history.ops.len(),
        history.faults.len()
    );
    out
}

const STYLE: &str = "
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
.valid { color: #2a7d2a; } .INVALID { color: #c0392b; font-weight: bold; } .unknown { color: #b9770e; }
pre { background: #f6f6f6; padding: 0.6em; }
svg text { font-size: 11px; fill: #333; }
circle.ok { fill: #2a9d8f; } circle.fail { fill: #e9a23b; } circle.unknown { fill: #d62828; }
rect.fault { fill: #777; fill-opacity: 0.15; }
line.axis { stroke: #333; } line.grid { stroke: #ddd; }
";

/// Writes the HTML report to `path`.
pub fn write(path: &Path, history: &History, analysis: &Analysis) -> anyhow::Result<()> {
    std::fs::write(path, html(history, analysis))
        .with_context(|| format!("writing {}", path.display()))
}

/// The whole report, as one HTML page.
pub fn html(history: &History, analysis: &Analysis) -> String {
    let validity = analysis.validity();
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Fault suite report: " (validity.name()) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "Fault suite report: " span class=(validity.name()) { (validity.name()) } }
                p {
                    (history.ops.len()) " operations, " (history.faults.len()) " fault windows, over "
                    (duration(history.end())) "."
                }
                h2 { "Registers: linearizability " span class=(analysis.register.validity().name()) { "(" (analysis.register.validity().name()) ")" } }
                (register_section(history, &analysis.register))
                h2 { "Sets: lost and unexpected elements " span class=(analysis.set.validity().name()) { "(" (analysis.set.validity().name()) ")" } }
                (set_section(&analysis.set))
                h2 { "Availability" }
                (availability_section(&analysis.availability))
                h2 { "Latency over time" }
                p { "Each point is an operation: when it was invoked, and how long until the client had its answer or gave up (log scale). Green ok, amber failed, red unknown; grey bands are fault windows." }
                @for kind in Kind::ALL {
                    @if history.ops.iter().any(|op| op.op.kind() == kind) {
                        h3 { (kind.name()) }
                        (latency_chart(history, kind))
                    }
                }
            }
        }
    };
    page.into_string()
}

fn register_section(history: &History, report: &RegisterReport) -> Markup {
    html! {
        @if report.keys.is_empty() {
            p { "No register operations." }
        } @else {
            table {
                tr { th { "key" } th { "verdict" } th { "operations" } th { "unknown" } th { "configurations" } th { "time" } }
                @for key in &report.keys {
                    tr {
                        td { (key.key) }
                        td class=(validity_of(&key.verdict).name()) { (verdict_line(&key.verdict)) }
                        td { (key.operations) } td { (key.unknown) } td { (key.states) } td { (duration(key.elapsed)) }
                    }
                }
            }
            @for key in &report.keys {
                @if let Verdict::NotLinearizable { window } = &key.verdict {
                    h3 { "Key " (key.key) ": smallest failing window, " (instant(window.from)) " – " (instant(window.to)) }
                    p { "These operations cannot be linearized on their own, whatever the register held before them." }
                    pre { @for line in window_lines(history, window).into_iter().chain(earlier_unknown(window)) { (line) "\n" } }
                }
            }
        }
    }
}

fn validity_of(verdict: &Verdict) -> Validity {
    match verdict {
        Verdict::Linearizable => Validity::Valid,
        Verdict::NotLinearizable { .. } => Validity::Invalid,
        Verdict::Unknown { .. } => Validity::Unknown,
    }
}

fn set_section(report: &SetReport) -> Markup {
    html! {
        @if report.keys.is_empty() {
            p { "No set operations." }
        } @else {
            table {
                tr { th { "key" } th { "verdict" } th { "acknowledged" } th { "lost" } th { "unexpected" } th { "unknown, present" } th { "unknown, absent" } }
                @for key in &report.keys {
                    tr {
                        td { (key.key) }
                        td class=(key.validity().name()) {
                            (key.validity().name())
                            @if key.read_at.is_none() { " (no final read answered)" }
                        }
                        td { (key.acknowledged) }
                        td { (format!("{:?}", key.lost)) }
                        td { (format!("{:?}", key.unexpected)) }
                        td { (key.unknown_present) } td { (key.unknown_absent) }
                    }
                }
            }
        }
    }
}

fn recovered(time: &Option<Duration>) -> String {
    time.map_or("never".into(), duration)
}

fn availability_section(availability: &Availability) -> Markup {
    let classes = |shares: &PerClass<Shares>| html! { td { (share(&shares.read)) } td { (share(&shares.write)) } };
    html! {
        table {
            tr { th { "" } th { "reads" } th { "writes (write, cas, add)" } }
            tr { td { "whole run" } (classes(&availability.overall)) }
        }
        @if !availability.windows.is_empty() {
            h3 { "Each fault window" }
            p { "Operations invoked while the fault held; recovery is from the heal to the first ok that completed after it." }
            table {
                tr { th { "fault" } th { "started" } th { "healed" } th { "reads during" } th { "writes during" } th { "reads recovered" } th { "writes recovered" } }
                @for window in &availability.windows {
                    tr {
                        td { (window.fault.name) } td { (instant(window.fault.started)) } td { (instant(window.fault.healed)) }
                        (classes(&window.during))
                        td { (recovered(&window.recovery.read)) } td { (recovered(&window.recovery.write)) }
                    }
                }
            }
            h3 { "Recovery by fault (min / median / max)" }
            table {
                tr { th { "fault" } th { "windows" } th { "reads" } th { "writes" } th { "windows never recovered (reads, writes)" } }
                @for fault in &availability.faults {
                    tr {
                        td { (fault.name) } td { (fault.windows) }
                        td { (spread(&fault.recovery.read)) } td { (spread(&fault.recovery.write)) }
                        td { (fault.unrecovered.read) ", " (fault.unrecovered.write) }
                    }
                }
            }
        }
    }
}

/// The chart's geometry: pixels, and the axes' ranges.
struct Plot {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
    /// Seconds at the right edge.
    end: f64,
    /// Powers of ten of microseconds at the bottom and top.
    low: i32,
    high: i32,
}

impl Plot {
    fn x(&self, t: Duration) -> f64 {
        self.left + t.as_secs_f64() / self.end * self.width
    }

    fn y(&self, latency: Duration) -> f64 {
        let exponent = (latency.as_secs_f64() * 1e6).max(1.0).log10();
        let fraction = (exponent - f64::from(self.low)) / f64::from(self.high - self.low);
        self.top + self.height * (1.0 - fraction)
    }
}

fn latency_label(exponent: i32) -> String {
    match exponent {
        0..=2 => format!("{} µs", 10u64.pow(exponent as u32)),
        3..=5 => format!("{} ms", 10u64.pow(exponent as u32 - 3)),
        _ => format!("{} s", 10u64.pow((exponent - 6).max(0) as u32)),
    }
}

/// A round step for about `count` ticks over `span` seconds.
fn tick_step(span: f64, count: f64) -> f64 {
    let raw = span / count;
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&step| step >= raw)
        .unwrap_or(raw)
}

fn latency_chart(history: &History, kind: Kind) -> Markup {
    let ops: Vec<&Operation> = history
        .ops
        .iter()
        .filter(|op| op.op.kind() == kind)
        .collect();
    let micros = |op: &&Operation| (op.latency().as_secs_f64() * 1e6).max(1.0).log10();
    let low = ops.iter().map(micros).fold(f64::INFINITY, f64::min).floor() as i32;
    let high = (ops.iter().map(micros).fold(0.0, f64::max).ceil() as i32).max(low + 1);
    let plot = Plot {
        left: 60.0,
        top: 20.0,
        width: 820.0,
        height: 220.0,
        end: history.end().as_secs_f64().max(1e-6),
        low,
        high,
    };
    let bottom = plot.top + plot.height;
    let step = tick_step(plot.end, 10.0);
    let ticks: Vec<f64> = (0..)
        .map(|i| f64::from(i) * step)
        .take_while(|&t| t <= plot.end)
        .collect();
    // As many decimals as the step has, so that 0.6 does not print as 0.6000000000000001.
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    let fmt = |v: f64| format!("{v:.1}");
    html! {
        svg xmlns="http://www.w3.org/2000/svg" width="900" height="270" viewBox="0 0 900 270" class="latency" {
            @for fault in &history.faults {
                @let x = plot.x(fault.started);
                @let width = (plot.x(fault.healed) - x).max(1.0);
                rect class="fault" x=(fmt(x)) y=(fmt(plot.top)) width=(fmt(width)) height=(fmt(plot.height)) {}
                text x=(fmt(x + 2.0)) y=(fmt(plot.top + 11.0)) { (fault.name) }
            }
            @for exponent in low..=high {
                @let y = plot.y(Duration::from_secs_f64(10f64.powi(exponent) / 1e6));
                line class="grid" x1=(fmt(plot.left)) x2=(fmt(plot.left + plot.width)) y1=(fmt(y)) y2=(fmt(y)) {}
                text x="4" y=(fmt(y + 4.0)) { (latency_label(exponent)) }
            }
            @for t in &ticks {
                @let x = plot.x(Duration::from_secs_f64(*t));
                line class="axis" x1=(fmt(x)) x2=(fmt(x)) y1=(fmt(bottom)) y2=(fmt(bottom + 4.0)) {}
                text x=(fmt(x - 8.0)) y=(fmt(bottom + 16.0)) { (format!("{t:.decimals$}s")) }
            }
            line class="axis" x1=(fmt(plot.left)) x2=(fmt(plot.left + plot.width)) y1=(fmt(bottom)) y2=(fmt(bottom)) {}
            line class="axis" x1=(fmt(plot.left)) x2=(fmt(plot.left)) y1=(fmt(plot.top)) y2=(fmt(bottom)) {}
            @for op in &ops {
                @let class = match op.op.status() { Status::Ok => "op ok", Status::Fail => "op fail", Status::Unknown => "op unknown" };
                circle class=(class) cx=(fmt(plot.x(op.invoked))) cy=(fmt(plot.y(op.latency()))) r="2" {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::register::Limits;
    use crate::history::{Fault, Op, Outcome};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn small_history() -> History {
        let op = |process, from, to, op| Operation {
            process,
            key: 1,
            invoked: ms(from),
            completed: ms(to),
            op,
        };
        History {
            ops: vec![
                op(
                    0,
                    0,
                    10,
                    Op::Write {
                        value: 1,
                        outcome: Outcome::Ok(()),
                    },
                ),
                op(
                    0,
                    20,
                    30,
                    Op::Write {
                        value: 2,
                        outcome: Outcome::Ok(()),
                    },
                ),
                op(
                    1,
                    40,
                    45,
                    Op::Read {
                        outcome: Outcome::Ok(Some(1)),
                    },
                ),
                op(
                    2,
                    50,
                    1050,
                    Op::Read {
                        outcome: Outcome::Info("timed out".into()),
                    },
                ),
                op(
                    3,
                    60,
                    61,
                    Op::Add {
                        value: 4,
                        outcome: Outcome::Fail("400".into()),
                    },
                ),
            ],
            faults: vec![
                Fault {
                    name: "partition <master>".into(),
                    started: ms(35),
                    healed: ms(500),
                },
                Fault {
                    name: "pause".into(),
                    started: ms(600),
                    healed: ms(700),
                },
            ],
        }
    }

    fn count(haystack: &str, needle: &str) -> usize {
        haystack.matches(needle).count()
    }

    #[test]
    fn the_report_shows_the_verdicts_and_the_failing_window() {
        let history = small_history();
        let analysis = crate::analyse(&history, &Limits::default());
        let page = html(&history, &analysis);
        assert!(page.contains("Fault suite report: INVALID"));
        assert!(page.contains("NOT linearizable"));
        assert!(page.contains("smallest failing window"));
        assert!(page.contains("read = 1"), "the stale read is listed");
        assert!(
            page.contains("partition &lt;master&gt;"),
            "names are escaped"
        );
        let text = text(&history, &analysis);
        assert!(
            text.contains("key 1: NOT linearizable") && text.contains("overall: INVALID"),
            "{text}"
        );
    }

    #[test]
    fn each_chart_has_one_point_per_operation_of_its_kind_and_a_shaded_band_per_fault() {
        let history = small_history();
        let page = html(&history, &crate::analyse(&history, &Limits::default()));
        let charts: Vec<&str> = page
            .split("<svg")
            .skip(1)
            .map(|chart| chart.split("</svg>").next().unwrap())
            .collect();
        // Writes, reads and adds have a chart each, in the order of `Kind::ALL`.
        assert_eq!(charts.len(), 3);
        for (chart, (kind, points)) in
            charts
                .iter()
                .zip([(Kind::Read, 2), (Kind::Write, 2), (Kind::Add, 1)])
        {
            assert_eq!(count(chart, "<circle"), points, "{kind:?}");
            assert_eq!(count(chart, "class=\"fault\""), 2, "{kind:?}");
        }
        assert_eq!(count(&page, "<circle"), history.ops.len());
        assert_eq!(count(&page, "class=\"op unknown\""), 1);
        assert_eq!(count(&page, "class=\"op fail\""), 1);
    }

    #[test]
    fn latencies_from_microseconds_to_seconds_are_labelled_in_their_units() {
        let labels: Vec<String> = (0..8).map(latency_label).collect();
        assert_eq!(
            labels,
            ["1 µs", "10 µs", "100 µs", "1 ms", "10 ms", "100 ms", "1 s", "10 s"]
        );
    }
}
