//! plot: the report's SVG charts (plotters), each a figure against N: slots/s, RTNL per
//! slot, the system's longest own RTNL hold, and (runs with a neighbour) the neighbour's
//! p99 and largest request latency. Draws from the summary only; no measuring.
//!
//! The x axis is a category axis of the N values measured, evenly spaced, each labelled
//! once as an integer. Figures that span decades (slots/s, holds, latencies) use a log y
//! axis with ticks at 1, 2 and 5 times powers of ten.

use std::path::Path;

use plotters::coord::ranged1d::{
    AsRangedCoord, DefaultFormatting, KeyPointHint, Ranged, ValueFormatter,
};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::harness::summary::{AtN, Summary};
use crate::systems::SystemKind;

/// Chart file names, in the order `write_plots` writes them.
pub const SLOTS_PER_SEC: &str = "slots_per_sec.svg";
/// RTNL acquisitions per slot.
pub const RTNL_PER_SLOT: &str = "rtnl_per_slot.svg";
/// The system's longest own RTNL hold.
pub const LONGEST_HOLD: &str = "longest_hold.svg";
/// The neighbour's p99 and largest request latency (only when a run had a neighbour).
pub const NEIGHBOUR_LATENCY: &str = "neighbour_latency.svg";

/// Colours by system, fixed so every chart agrees: one per system, none repeated.
fn colour(kind: SystemKind) -> RGBColor {
    const PALETTE: [RGBColor; 12] = [
        RGBColor(214, 39, 40),
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(80, 80, 80),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
        RGBColor(255, 187, 120),
        RGBColor(0, 0, 128),
    ];
    let i = SystemKind::EVERY
        .iter()
        .position(|&k| k == kind)
        .unwrap_or(0);
    PALETTE[i % PALETTE.len()]
}

/// One line of a chart: a system's figure at each N it has one for.
struct Line {
    kind: SystemKind,
    points: Vec<(usize, f64)>,
    /// Dashed and lighter: the second figure of a system (kernel workers, max).
    dashed: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scale {
    Linear,
    Log,
}

/// A tick label: integers without a decimal point ("1000", not "1000.0"), fractions
/// with at most three significant digits and no trailing zeros ("0.5", "0.05").
pub fn tick_label(v: f64) -> String {
    if !v.is_finite() {
        return String::new();
    }
    if v == 0.0 {
        return "0".into();
    }
    let mag = v.abs().log10().floor() as i32;
    let digits = (2 - mag).clamp(0, 9) as usize;
    let s = format!("{v:.digits$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

/// Ticks of a log axis over `[lo, hi]`: 1, 2 and 5 times each power of ten; every
/// integer multiple (1..9) when that gives fewer than 4 ticks (a range under a decade);
/// only the powers of ten when 1-2-5 would make more than `max` ticks.
pub fn log_ticks(lo: f64, hi: f64, max: usize) -> Vec<f64> {
    if !(lo > 0.0 && hi >= lo && hi.is_finite()) {
        return Vec::new();
    }
    let (e0, e1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let in_range = |v: &f64| *v >= lo * (1.0 - 1e-9) && *v <= hi * (1.0 + 1e-9);
    let with = |mantissas: &[f64]| -> Vec<f64> {
        (e0..=e1)
            .flat_map(|e| mantissas.iter().map(move |m| m * 10f64.powi(e)))
            .filter(in_range)
            .collect()
    };
    let fine = with(&[1.0, 2.0, 5.0]);
    if fine.len() < 4 {
        let finer = with(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
        if finer.len() <= max {
            return finer;
        }
    }
    if fine.len() <= max {
        return fine;
    }
    let coarse = with(&[1.0]);
    if coarse.is_empty() {
        fine
    } else {
        coarse
    }
}

/// The N values of every line, ascending, each once.
fn categories(lines: &[Line]) -> Vec<usize> {
    let mut ns: Vec<usize> = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|&(n, _)| n))
        .collect();
    ns.sort_unstable();
    ns.dedup();
    ns
}

/// Draws `lines` into `path` with a legend of one entry per system on the right. Returns
/// false (and writes nothing) when no line has a point to draw.
fn draw(
    path: &Path,
    title: &str,
    y_desc: &str,
    scale: Scale,
    lines: &[Line],
) -> Result<bool, String> {
    let usable = |y: f64| y.is_finite() && (scale == Scale::Linear || y > 0.0);
    let lines: Vec<Line> = lines
        .iter()
        .map(|l| Line {
            kind: l.kind,
            points: l
                .points
                .iter()
                .copied()
                .filter(|&(_, y)| usable(y))
                .collect(),
            dashed: l.dashed,
        })
        .filter(|l| !l.points.is_empty())
        .collect();
    let ns = categories(&lines);
    if ns.is_empty() {
        return Ok(false);
    }
    let ys = lines.iter().flat_map(|l| l.points.iter().map(|&(_, y)| y));
    let (y_lo, y_hi) = ys.fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));

    let err = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| err(&e))?;
    let (plot_area, legend_area) = root.split_horizontally(790);

    let k = ns.len();
    let x = Categories(k);
    match scale {
        Scale::Linear => {
            let top = (y_hi * 1.12).max(1.0);
            let lo = y_lo.min(0.0);
            render(&plot_area, x, lo..top, &ns, y_desc, &lines).map_err(|e| err(&e))?;
        }
        Scale::Log => {
            let (lo, hi) = (y_lo / 1.6, y_hi * 1.6);
            let y = (lo..hi).log_scale().with_key_points(log_ticks(lo, hi, 14));
            render(&plot_area, x, y, &ns, y_desc, &lines).map_err(|e| err(&e))?;
        }
    }
    legend(&legend_area, &lines).map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(true)
}

/// The x axis: `k` categories at 0, 1, .., k-1, half a step of margin at each end, a
/// tick at each category and nowhere else.
#[derive(Clone, Copy)]
struct Categories(usize);

impl Ranged for Categories {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = f64::from(limit.1 - limit.0);
        let at = (value + 0.5) / self.0.max(1) as f64;
        limit.0 + (at * span).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, _hint: H) -> Vec<f64> {
        (0..self.0).map(|i| i as f64).collect()
    }

    fn range(&self) -> std::ops::Range<f64> {
        -0.5..self.0 as f64 - 0.5
    }
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// The chart itself: mesh, axis labels and one line (with markers) per `Line`.
fn render<X, Y>(area: &Area, x: X, y: Y, ns: &[usize], y_desc: &str, lines: &[Line]) -> DrawResult
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)?;
    let x_fmt = |v: &f64| {
        let i = v.round();
        if (v - i).abs() > 1e-6 || i < 0.0 {
            return String::new();
        }
        ns.get(i as usize).map_or(String::new(), |n| n.to_string())
    };
    let y_fmt = |v: &f64| tick_label(*v);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(BLACK.mix(0.15))
        .x_labels(ns.len())
        .y_labels(14)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .x_desc("N (slots per call)")
        .y_desc(y_desc)
        .axis_desc_style(("sans-serif", 16))
        .label_style(("sans-serif", 14))
        .draw()?;
    let index = |n: usize| ns.iter().position(|&m| m == n).unwrap_or(0) as f64;
    for line in lines {
        let c = colour(line.kind);
        let pts: Vec<(f64, f64)> = line.points.iter().map(|&(n, y)| (index(n), y)).collect();
        if line.dashed {
            let style = c.mix(0.6).stroke_width(2);
            chart.draw_series(DashedLineSeries::new(pts.iter().copied(), 8, 5, style))?;
            chart.draw_series(
                pts.iter()
                    .map(|&p| Circle::new(p, 3, c.mix(0.6).stroke_width(2))),
            )?;
        } else {
            chart.draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(3)))?;
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
        }
    }
    Ok(())
}

/// The legend, one row per system in table order: its colour and its name.
fn legend(area: &Area, lines: &[Line]) -> DrawResult {
    let mut kinds: Vec<SystemKind> = lines.iter().map(|l| l.kind).collect();
    kinds.dedup();
    let style = TextStyle::from(("sans-serif", 15).into_font()).color(&BLACK);
    for (row, kind) in kinds.iter().enumerate() {
        let y = 40 + 26 * row as i32;
        let c = colour(*kind);
        area.draw(&PathElement::new(vec![(8, y), (36, y)], c.stroke_width(3)))?;
        area.draw(&Circle::new((22, y), 4, c.filled()))?;
        area.draw(&Text::new(
            kind.name().to_string(),
            (44, y - 8),
            style.clone(),
        ))?;
    }
    Ok(())
}

/// A system's figure at each N it has one for.
fn series(at: &[AtN], f: impl Fn(&AtN) -> Option<f64>) -> Vec<(usize, f64)> {
    at.iter().filter_map(|a| Some((a.n, f(a)?))).collect()
}

/// Writes the charts into `dir`: `slots_per_sec.svg`, `rtnl_per_slot.svg`,
/// `longest_hold.svg`, and `neighbour_latency.svg` when a run had a neighbour. A chart
/// with nothing to draw is not written.
pub fn write_plots(summary: &Summary, dir: &Path) -> Result<(), String> {
    let mut rate = Vec::new();
    let mut rtnl = Vec::new();
    let mut hold = Vec::new();
    let mut neighbour = Vec::new();
    for s in &summary.systems {
        let Some(kind) = s.system else { continue };
        let line = |points, dashed| Line {
            kind,
            points,
            dashed,
        };
        rate.push(line(series(&s.at, |a| a.slots_per_s), false));
        let per = |v: Option<f64>, n: usize| Some(v? / n as f64);
        rtnl.push(line(series(&s.at, |a| per(a.rtnl_own, a.n)), false));
        rtnl.push(line(series(&s.at, |a| per(a.rtnl_kernel, a.n)), true));
        hold.push(line(
            series(&s.at, |a| Some(a.longest_own_hold_us? / 1e3)),
            false,
        ));
        let nb = |f: fn(&AtN) -> Option<f64>| {
            series(&s.at, move |a| {
                (a.neighbour_runs > 0)
                    .then(|| f(a))
                    .flatten()
                    .map(|us| us / 1e3)
            })
        };
        neighbour.push(line(nb(|a| a.neighbour_p99_us), false));
        neighbour.push(line(nb(|a| a.neighbour_max_us), true));
    }
    draw(
        &dir.join(SLOTS_PER_SEC),
        "Standard slots per second (median of the timed runs)",
        "slots/s (log scale)",
        Scale::Log,
        &rate,
    )?;
    draw(
        &dir.join(RTNL_PER_SLOT),
        "RTNL acquisitions per slot: own (solid), kernel workers (dashed)",
        "RTNL acquisitions / slot",
        Scale::Linear,
        &rtnl,
    )?;
    draw(
        &dir.join(LONGEST_HOLD),
        "Longest RTNL hold of the system's own (RTNL-counted run)",
        "longest own hold, ms (log scale)",
        Scale::Log,
        &hold,
    )?;
    draw(
        &dir.join(NEIGHBOUR_LATENCY),
        "Neighbour's RTNL request latency: p99 (solid), max (dashed)",
        "neighbour request latency, ms (log scale)",
        Scale::Log,
        &neighbour,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::summary::SystemSummary;

    #[test]
    fn tick_labels_are_integers_when_whole() {
        assert_eq!(tick_label(1000.0), "1000");
        assert_eq!(tick_label(100.0), "100");
        assert_eq!(tick_label(4000.0), "4000");
        assert_eq!(tick_label(1.0), "1");
        assert_eq!(tick_label(0.0), "0");
        assert_eq!(tick_label(-0.0), "0");
        assert_eq!(tick_label(0.5), "0.5");
        assert_eq!(tick_label(2.5), "2.5");
        assert_eq!(tick_label(0.05), "0.05");
        assert_eq!(tick_label(5.0 * 10f64.powi(-2)), "0.05");
        assert_eq!(tick_label(2.0 * 10f64.powi(3)), "2000");
        assert_eq!(tick_label(12.5), "12.5");
        assert_eq!(tick_label(f64::NAN), "");
    }

    #[test]
    fn log_ticks_one_two_five() {
        assert_eq!(log_ticks(0.8, 60.0, 14), [1.0, 2.0, 5.0, 10.0, 20.0, 50.0]);
        // 0.6 ms to 3 s: too many 1-2-5 ticks, so the powers of ten.
        assert_eq!(log_ticks(0.6, 3000.0, 10), [1.0, 10.0, 100.0, 1000.0]);
        assert!(log_ticks(0.0, 10.0, 14).is_empty());
        // Under a decade: every integer multiple.
        assert_eq!(
            log_ticks(2.5, 18.0, 14),
            [3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
        );
        let labels: Vec<String> = log_ticks(0.01, 1.0, 14)
            .into_iter()
            .map(tick_label)
            .collect();
        assert_eq!(labels, ["0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1"]);
    }

    fn at(n: usize, rate: f64, hold_ms: f64, nb: bool) -> AtN {
        AtN {
            n,
            slots_per_s: Some(rate),
            rtnl_own: Some(9.0 * n as f64),
            rtnl_kernel: Some(0.1 * n as f64),
            longest_own_hold_us: Some(hold_ms * 1e3),
            neighbour_runs: usize::from(nb),
            neighbour_p99_us: nb.then_some(hold_ms * 900.0),
            neighbour_max_us: nb.then_some(hold_ms * 1100.0),
            ..AtN::default()
        }
    }

    fn summary(nb: bool) -> Summary {
        let sys = |kind, scale: f64| SystemSummary {
            system: Some(kind),
            at: vec![
                at(100, 900.0 * scale, 2.0 / scale, nb),
                at(1000, 1000.0 * scale, 30.0 / scale, nb),
                at(4000, 1100.0 * scale, 1500.0 / scale, nb),
            ],
            per_slot: Vec::new(),
        };
        Summary {
            systems: vec![
                sys(SystemKind::Netslot, 1.0),
                sys(SystemKind::IpBatch, 0.05),
                sys(SystemKind::Floor, 0.5),
            ],
        }
    }

    fn tmpdir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("netslot-plot-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// The text of every `<text>` element, trimmed.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim().to_string())
            })
            .collect()
    }

    fn count(texts: &[String], s: &str) -> usize {
        texts.iter().filter(|t| *t == s).count()
    }

    #[test]
    fn writes_every_chart_with_every_system_and_each_n_once() {
        let dir = tmpdir("all");
        write_plots(&summary(true), &dir).unwrap();
        for file in [
            SLOTS_PER_SEC,
            RTNL_PER_SLOT,
            LONGEST_HOLD,
            NEIGHBOUR_LATENCY,
        ] {
            let svg = std::fs::read_to_string(dir.join(file)).unwrap();
            assert!(svg.starts_with("<svg"), "{file}");
            let t = texts(&svg);
            for name in ["netslot", "ip-batch", "floor"] {
                assert_eq!(count(&t, name), 1, "{file}: {name} in {t:?}");
            }
            // Each N is an x tick label, printed as an integer. A log y axis may print
            // the same number as a y tick, so once or twice here (once: next test).
            for n in ["100", "1000", "4000"] {
                let c = count(&t, n);
                assert!((1..=2).contains(&c), "{file}: {n} {c} times in {t:?}");
            }
            assert!(!t.iter().any(|t| t.ends_with(".0")), "{file}: {t:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_neighbour_chart_without_a_neighbour() {
        let dir = tmpdir("nonb");
        write_plots(&summary(false), &dir).unwrap();
        assert!(dir.join(SLOTS_PER_SEC).exists());
        assert!(dir.join(LONGEST_HOLD).exists());
        assert!(!dir.join(NEIGHBOUR_LATENCY).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn x_labels_are_the_measured_n() {
        let dir = tmpdir("cat");
        let mut s = summary(false);
        for sys in &mut s.systems {
            sys.at.retain(|a| a.n != 100);
        }
        write_plots(&s, &dir).unwrap();
        let t = texts(&std::fs::read_to_string(dir.join(RTNL_PER_SLOT)).unwrap());
        assert_eq!(count(&t, "1000"), 1, "{t:?}");
        assert_eq!(count(&t, "4000"), 1, "{t:?}");
        assert_eq!(count(&t, "100"), 0, "{t:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
