//! plot: the report's SVG charts (plotters): slots/s against N, RTNL per slot against N.
//! Draws from the summary only; no measuring.

use std::path::Path;

use plotters::prelude::*;

use crate::harness::summary::Summary;
use crate::systems::SystemKind;

/// Colours by system, fixed so every chart agrees.
fn colour(kind: SystemKind) -> RGBColor {
    let all = SystemKind::ALL;
    let i = all.iter().position(|&k| k == kind).unwrap_or(0);
    const PALETTE: [RGBColor; 8] = [
        RGBColor(214, 39, 40),
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(80, 80, 80),
    ];
    PALETTE[i % PALETTE.len()]
}

type Series = Vec<(SystemKind, Vec<(f64, f64)>, bool)>;

fn draw(path: &Path, title: &str, y_desc: &str, series: &Series) -> Result<(), String> {
    let pts = series.iter().flat_map(|(_, p, _)| p.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, 0f64, 0f64);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x1 <= 0.0 {
        return Ok(()); // nothing measured
    }
    let (x0, x1) = ((x0 * 0.8).max(1.0), x1 * 1.25);
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d((x0..x1).log_scale(), 0f64..(y1 * 1.12).max(1.0))
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("N (slots per call, log scale)")
        .y_desc(y_desc)
        .draw()
        .map_err(|e| err(&e))?;
    for (kind, points, dashed) in series {
        let c = colour(*kind);
        let label = if *dashed {
            format!("{kind} (kernel workers)")
        } else {
            kind.to_string()
        };
        let style = if *dashed {
            c.mix(0.5).stroke_width(2)
        } else {
            c.stroke_width(3)
        };
        chart
            .draw_series(LineSeries::new(points.iter().copied(), style))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, c.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

/// Writes `slots_per_sec.svg` and `rtnl_per_slot.svg` into `dir`.
pub fn write_plots(summary: &Summary, dir: &Path) -> Result<(), String> {
    let mut rate: Series = Vec::new();
    let mut rtnl: Series = Vec::new();
    for s in &summary.systems {
        let Some(kind) = s.system else { continue };
        rate.push((
            kind,
            s.at.iter()
                .filter_map(|a| Some((a.n as f64, a.slots_per_s?)))
                .collect(),
            false,
        ));
        let per = |f: fn(&crate::harness::summary::AtN) -> Option<f64>| {
            s.at.iter()
                .filter_map(|a| Some((a.n as f64, f(a)? / a.n as f64)))
                .collect::<Vec<_>>()
        };
        rtnl.push((kind, per(|a| a.rtnl_own), false));
        rtnl.push((kind, per(|a| a.rtnl_kernel), true));
    }
    draw(
        &dir.join("slots_per_sec.svg"),
        "Standard slots per second (median)",
        "slots/s",
        &rate,
    )?;
    draw(
        &dir.join("rtnl_per_slot.svg"),
        "RTNL acquisitions per slot: own (solid), kernel workers (dashed)",
        "RTNL acquisitions / slot",
        &rtnl,
    )
}
