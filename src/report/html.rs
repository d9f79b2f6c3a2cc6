//! The lineage report as one self-contained HTML page: inline CSS, inline SVG plots drawn with
//! plotters (no font files: plotters' SVG backend writes `<text>` elements the browser lays out),
//! no scripts, no fonts, no network.

use minijinja::{AutoEscape, Environment, Value, context};
use plotters::prelude::*;
use serde::Serialize;

use super::data::{Cell, LineageReport, Rate, TaskRow, VersionRow};
use crate::error::{Error, Result};

const TEMPLATE: &str = include_str!("../../templates/report.html.j2");

/// Series colours (also used by the template's legend).
pub const HELD_IN: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
pub const VALIDATION: RGBColor = RGBColor(0xe0, 0x6c, 0x00);
pub const TEST: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
pub const BASELINE: RGBColor = RGBColor(0x88, 0x88, 0x88);
const GRID: RGBColor = RGBColor(0xe4, 0xe4, 0xe4);
const BAR: RGBColor = RGBColor(0x7a, 0x5c, 0xb8);

/// Render the report page.
pub fn render(report: &LineageReport) -> Result<String> {
    let pass_svg = pass_rate_plot(report)?;
    let spend_svg = spend_plot(report)?;
    let heatmap = heatmap_view(report);
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.add_filter("pct", |x: f64| format!("{:.0}", x * 100.0));
    env.add_filter("signed", |x: i64| format!("{x:+}"));
    env.add_filter("fixed", |x: f64, n: usize| format!("{x:.n$}"));
    env.add_template("report.html", TEMPLATE)
        .map_err(|e| Error::Internal(format!("report template: {e}")))?;
    let tmpl = env
        .get_template("report.html")
        .map_err(|e| Error::Internal(format!("report template: {e}")))?;
    let current = report.current();
    fn ser<T: Serialize>(x: T) -> Value {
        Value::from(minijinja::value::Serde(x))
    }
    tmpl.render(context! {
        r => ser(report),
        summary => super::summary_lines(report),
        current => ser(current),
        baseline => ser(report.baseline()),
        pass_svg => pass_svg,
        spend_svg => spend_svg,
        heatmap => ser(&heatmap),
        colors => context! {
            held_in => hex(HELD_IN), validation => hex(VALIDATION), test => hex(TEST),
            baseline => hex(BASELINE),
        },
        rejected => ser(report.rejected().collect::<Vec<_>>()),
        open => ser(report.open().collect::<Vec<_>>()),
    })
    .map_err(|e| Error::Internal(format!("render the report: {e:#}")))
}

fn hex(c: RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
}

fn plot_err<E: std::fmt::Debug>(e: E) -> Error {
    Error::Internal(format!("draw a report plot: {e:?}"))
}

/// A point of a series, with the tooltip its circle gets.
struct Point {
    x: f64,
    rate: Rate,
    title: String,
}

/// From the first measured version (earlier ones have nothing to plot) to the last.
fn x_range(report: &LineageReport) -> (f64, f64) {
    let first = report
        .baseline()
        .or(report.versions.first())
        .map(|v| v.index)
        .unwrap_or(0) as f64;
    let last = report.versions.last().map(|v| v.index).unwrap_or(0) as f64;
    (first - 0.5, last + 0.5)
}

/// Pass rate per version: held_in and validation with 95% Wilson intervals, test openings and
/// their baselines.
fn pass_rate_plot(report: &LineageReport) -> Result<String> {
    let mut series: Vec<(&str, RGBColor, Vec<Point>)> = Vec::new();
    for (split, colour, offset) in [
        ("held_in", HELD_IN, -0.08),
        ("validation", VALIDATION, 0.08),
    ] {
        let pts = report
            .versions
            .iter()
            .filter_map(|v| {
                v.split(split).map(|m| Point {
                    x: v.index as f64 + offset,
                    rate: m.rate.clone(),
                    title: format!(
                        "{} {split}: {}{}",
                        v.label,
                        m.rate.describe(),
                        if m.partial { ", partial run" } else { "" }
                    ),
                })
            })
            .collect();
        series.push((split, colour, pts));
    }
    let mut test = Vec::new();
    let mut baselines = Vec::new();
    for t in &report.test_openings {
        let Some(v) = t.version else { continue };
        test.push(Point {
            x: v as f64,
            rate: t.rate.clone(),
            title: format!("v{v} test (opening #{}): {}", t.opening, t.rate.describe()),
        });
        for b in &t.baselines {
            baselines.push(Point {
                x: v as f64 + 0.16,
                rate: b.rate.clone(),
                title: format!(
                    "{} baseline at test opening #{}: {}",
                    b.name,
                    t.opening,
                    b.rate.describe()
                ),
            });
        }
    }
    series.push(("test", TEST, test));
    series.push(("baseline", BASELINE, baselines));

    let (w, h) = (900u32, 340u32);
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let (x0, x1) = x_range(report);
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(44)
            .build_cartesian_2d(x0..x1, 0f64..100f64)
            .map_err(plot_err)?;
        let labels = ((x1 - x0) as usize).min(24);
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .bold_line_style(GRID)
            .x_labels(labels.max(2))
            .y_labels(6)
            .x_label_formatter(&|x| {
                let r = x.round();
                if (x - r).abs() < 1e-6 && r >= 0.0 {
                    format!("v{r:.0}")
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| format!("{y:.0}%"))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(plot_err)?;
        for (name, colour, pts) in &series {
            if pts.is_empty() {
                continue;
            }
            if *name != "baseline" {
                chart
                    .draw_series(LineSeries::new(
                        pts.iter().map(|p| (p.x, p.rate.rate * 100.0)),
                        colour.mix(0.55).stroke_width(2),
                    ))
                    .map_err(plot_err)?;
            }
            chart
                .draw_series(pts.iter().map(|p| {
                    ErrorBar::new_vertical(
                        p.x,
                        p.rate.lo * 100.0,
                        p.rate.rate * 100.0,
                        p.rate.hi * 100.0,
                        colour.mix(0.6).stroke_width(1),
                        8,
                    )
                }))
                .map_err(plot_err)?;
            chart
                .draw_series(
                    pts.iter()
                        .map(|p| Circle::new((p.x, p.rate.rate * 100.0), 5, colour.filled())),
                )
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    let titled: Vec<(String, &str, Vec<String>)> = series
        .iter()
        .map(|(name, colour, pts)| {
            (
                hex(*colour),
                *name,
                pts.iter().map(|p| p.title.clone()).collect(),
            )
        })
        .collect();
    Ok(finish_svg(
        &buf,
        "pass-rate",
        "Pass rate per version with 95% Wilson intervals",
        &titled,
    ))
}

/// Tokens of one held_in + validation evaluation per version (bars).
fn spend_plot(report: &LineageReport) -> Result<String> {
    let max_tokens = report
        .versions
        .iter()
        .map(|v| v.evaluation.tokens)
        .max()
        .unwrap_or(0)
        .max(1) as f64
        / 1e6;
    let (w, h) = (900u32, 220u32);
    let mut buf = String::new();
    let mut titles = Vec::new();
    {
        let root = SVGBackend::with_string(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let (x0, x1) = x_range(report);
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(44)
            .build_cartesian_2d(x0..x1, 0f64..max_tokens * 1.1)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .bold_line_style(GRID)
            .x_labels(((x1 - x0) as usize).clamp(2, 24))
            .y_labels(4)
            .x_label_formatter(&|x| {
                let r = x.round();
                if (x - r).abs() < 1e-6 && r >= 0.0 {
                    format!("v{r:.0}")
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| format!("{y:.1}M"))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(plot_err)?;
        let bars: Vec<&VersionRow> = report
            .versions
            .iter()
            .filter(|v| v.evaluation.tokens > 0)
            .collect();
        for v in &bars {
            titles.push(format!(
                "{}: {} tokens, ${:.4} for {} trials",
                v.label, v.evaluation.tokens, v.evaluation.cost_usd, v.evaluation.trials
            ));
        }
        chart
            .draw_series(bars.iter().map(|v| {
                let x = v.index as f64;
                Rectangle::new(
                    [(x - 0.3, 0.0), (x + 0.3, v.evaluation.tokens as f64 / 1e6)],
                    BAR.filled(),
                )
            }))
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(finish_svg(
        &buf,
        "spend",
        "Tokens of one evaluation per version",
        &[(hex(BAR), "tokens", titles)],
    ))
}

/// Make plotters' SVG responsive and accessible, and give each data mark a class and a
/// `<title>` tooltip: the n-th mark of a series' colour is the series' n-th point, because
/// plotters writes one element per line in drawing order.
fn finish_svg(svg: &str, id: &str, label: &str, series: &[(String, &str, Vec<String>)]) -> String {
    let mut next: Vec<usize> = vec![0; series.len()];
    let mut out = String::with_capacity(svg.len() + 1024);
    for line in svg.lines() {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("<svg ") {
            out.push_str(&format!(
                "<svg id=\"{id}\" class=\"plot\" role=\"img\" aria-label=\"{label}\" "
            ));
            out.push_str(rest);
            out.push('\n');
            continue;
        }
        let mark = line.starts_with("<circle ") || line.starts_with("<rect ");
        if mark && line.ends_with("/>") {
            let found = series
                .iter()
                .enumerate()
                .find(|(_, (colour, _, _))| line.contains(&format!("fill=\"{colour}\"")));
            if let Some((i, (_, name, titles))) = found
                && let Some(title) = titles.get(next[i])
            {
                next[i] += 1;
                let tag = if line.starts_with("<circle ") {
                    "circle"
                } else {
                    "rect"
                };
                let body = &line[tag.len() + 2..line.len() - 2];
                out.push_str(&format!(
                    "<{tag} class=\"point {name}\" {body}><title>{}</title></{tag}>\n",
                    escape(title)
                ));
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[derive(Serialize)]
struct HeatCell {
    style: String,
    title: String,
    text: String,
    class: String,
}

#[derive(Serialize)]
struct HeatRow {
    task: String,
    split: String,
    cells: Vec<HeatCell>,
    /// First row of its split (the template starts a group).
    first_of_split: bool,
}

#[derive(Serialize)]
struct HeatmapView {
    columns: Vec<HeatColumn>,
    rows: Vec<HeatRow>,
}

#[derive(Serialize)]
struct HeatColumn {
    label: String,
    title: String,
    promotion: bool,
}

fn heatmap_view(report: &LineageReport) -> HeatmapView {
    let columns = report
        .versions
        .iter()
        .map(|v| HeatColumn {
            label: v.label.clone(),
            title: format!("{} {}: {}", v.label, v.short, v.subject),
            promotion: v.proposal.is_some(),
        })
        .collect();
    let mut rows = Vec::new();
    let mut last_split = String::new();
    for t in &report.tasks {
        rows.push(HeatRow {
            task: t.task.clone(),
            split: t.split.clone(),
            cells: t
                .cells
                .iter()
                .zip(&report.versions)
                .map(|(c, v)| heat_cell(report, t, c, v))
                .collect(),
            first_of_split: t.split != last_split,
        });
        last_split = t.split.clone();
    }
    HeatmapView { columns, rows }
}

fn heat_cell(report: &LineageReport, t: &TaskRow, c: &Cell, v: &VersionRow) -> HeatCell {
    let promoted = v
        .proposal
        .as_deref()
        .map(|p| p.trim_start_matches("harness/proposals/").to_string());
    let mut title = format!("{} ({}) at {}: ", t.task, t.split, v.label);
    match c.rate() {
        Some(_) => title.push_str(&format!("{}/{} trials passed", c.passes, c.trials)),
        None if c.measured => title.push_str("infrastructure errors only"),
        None => title.push_str("not measured"),
    }
    let by = promoted.unwrap_or_default();
    if c.fixed {
        title.push_str(&format!(" — FIXED by {by}"));
    }
    if c.broke {
        title.push_str(&format!(" — BROKE by {by}"));
    }
    let _ = report;
    let mut class = String::from("cell");
    if c.fixed {
        class.push_str(" fixed");
    }
    if c.broke {
        class.push_str(" broke");
    }
    let (style, text) = match c.rate() {
        Some(r) => (
            format!("background:{}", ramp(r)),
            format!("{:.0}", r * 100.0),
        ),
        None => {
            class.push_str(" unmeasured");
            (String::new(), String::new())
        }
    };
    let text = if c.fixed {
        "▲".to_string()
    } else if c.broke {
        "▼".to_string()
    } else {
        text
    };
    HeatCell {
        style,
        title,
        text,
        class,
    }
}

/// 0 → red, 0.5 → pale yellow, 1 → green.
fn ramp(r: f64) -> String {
    let lerp = |a: f64, b: f64, t: f64| (a + (b - a) * t).round() as u8;
    let (lo, mid, hi) = ((0xe8, 0x6a, 0x5f), (0xf6, 0xe8, 0xa6), (0x4c, 0xae, 0x6a));
    let (a, b, t) = if r < 0.5 {
        (lo, mid, r * 2.0)
    } else {
        (mid, hi, (r - 0.5) * 2.0)
    };
    format!(
        "#{:02x}{:02x}{:02x}",
        lerp(a.0 as f64, b.0 as f64, t),
        lerp(a.1 as f64, b.1 as f64, t),
        lerp(a.2 as f64, b.2 as f64, t)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_ends() {
        assert_eq!(ramp(0.0), "#e86a5f");
        assert_eq!(ramp(1.0), "#4cae6a");
    }

    #[test]
    fn finish_svg_titles_marks_in_order() {
        let svg = "<svg width=\"10\" height=\"10\">\n<circle cx=\"1\" cy=\"1\" r=\"5\" fill=\"#1F77B4\" stroke=\"none\"/>\n<circle cx=\"2\" cy=\"1\" r=\"5\" fill=\"#1F77B4\" stroke=\"none\"/>\n</svg>\n";
        let out = finish_svg(
            svg,
            "p",
            "a plot",
            &[(
                "#1F77B4".into(),
                "held_in",
                vec!["v1 <a>".into(), "v2".into()],
            )],
        );
        assert!(out.starts_with("<svg id=\"p\" class=\"plot\""));
        assert!(out.contains("<circle class=\"point held_in\" cx=\"1\" cy=\"1\" r=\"5\" fill=\"#1F77B4\" stroke=\"none\"><title>v1 &lt;a&gt;</title></circle>"));
        assert_eq!(out.matches("<title>").count(), 2);
    }
}
