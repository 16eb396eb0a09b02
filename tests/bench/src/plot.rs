//! The PNG: per scenario and peer, delivered Mpps (left) and the forwarder's own ns/packet
//! (right), as horizontal grouped bars. Text needs a TrueType font (DejaVu Sans, Debian
//! package fonts-dejavu-core, or `$VSWITCH_BENCH_FONT`), rasterised by ab_glyph.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

use crate::peers::{OVS, TESTPMD, VSWITCH, VSWITCH_POLL};
use crate::report::Row;
use crate::scenario::Scenario;

const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Peers in legend order with their colours. memcpy is left out of the Mpps panel (it is two
/// orders of magnitude above every forwarder and would flatten the other bars); its figure is
/// in the table.
const PEERS: [(&str, RGBColor); 4] = [
    (VSWITCH, RGBColor(31, 119, 180)),
    (VSWITCH_POLL, RGBColor(23, 190, 207)),
    (TESTPMD, RGBColor(255, 127, 14)),
    (OVS, RGBColor(44, 160, 44)),
];

fn load_font() -> Result<()> {
    let mut paths: Vec<String> = FONTS.iter().map(|s| s.to_string()).collect();
    if let Ok(p) = std::env::var("VSWITCH_BENCH_FONT") {
        paths.insert(0, p);
    }
    for p in &paths {
        if let Ok(bytes) = std::fs::read(p) {
            // The font registry wants 'static bytes: the font lives for the whole program.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| anyhow!("{p} is not a usable TrueType font"))?;
            return Ok(());
        }
    }
    bail!(
        "no TrueType font for the plot's text: install fonts-dejavu-core or set VSWITCH_BENCH_FONT (tried {})",
        paths.join(", ")
    )
}

type Value = fn(&Row) -> Option<f64>;

/// Draws the plot.
pub fn draw(path: &Path, scenarios: &[Scenario], rows: &[Row]) -> Result<()> {
    load_font()?;
    let names: Vec<&str> = scenarios
        .iter()
        .filter(|s| {
            rows.iter().any(|r| {
                r.scenario == s.name
                    && r.result.is_some()
                    && PEERS.iter().any(|(p, _)| *p == r.peer)
            })
        })
        .map(|s| s.name.as_str())
        .collect();
    if names.is_empty() {
        bail!("nothing was measured");
    }
    let h = 140 + 46 * names.len() as u32;
    let root = BitMapBackend::new(path, (1600, h)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let (top, body) = root.split_vertically(50);
    top.draw(&Text::new(
        "vswitch-bench: guest-to-guest through each forwarder (same generator, sink and cores)",
        (20, 14),
        ("sans-serif", 22).into_font(),
    ))
    .map_err(|e| anyhow!("{e:?}"))?;
    for (i, (peer, colour)) in PEERS.iter().enumerate() {
        let x = 1000 + 150 * i as i32;
        top.draw(&Rectangle::new([(x, 16), (x + 16, 32)], colour.filled()))
            .map_err(|e| anyhow!("{e:?}"))?;
        top.draw(&Text::new(
            *peer,
            (x + 22, 16),
            ("sans-serif", 16).into_font(),
        ))
        .map_err(|e| anyhow!("{e:?}"))?;
    }
    let (left, right) = body.split_horizontally(800);
    let mpps: Value = |r| r.result.as_ref().map(|m| m.mpps);
    let cost: Value = |r| r.result.as_ref().and_then(|m| m.cost.ns_per_pkt);
    panel(
        &left,
        "delivered Mpps (higher is better)",
        &names,
        rows,
        mpps,
    )?;
    panel(
        &right,
        "forwarder ns/packet, own accounting (lower is better)",
        &names,
        rows,
        cost,
    )?;
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}

fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    names: &[&str],
    rows: &[Row],
    value: Value,
) -> Result<()> {
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("{e:?}");
    let n = names.len();
    let get = |scen: &str, peer: &str| {
        rows.iter()
            .find(|r| r.scenario == scen && r.peer == peer)
            .and_then(value)
            .filter(|v| v.is_finite() && *v > 0.0)
    };
    let max = names
        .iter()
        .flat_map(|s| PEERS.iter().filter_map(move |(p, _)| get(s, p)))
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(120)
        .build_cartesian_2d(0.0..max, -0.5..n as f64 - 0.5)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_labels(8)
        .light_line_style(RGBColor(240, 240, 240))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(err)?;
    // Scenario names left of the axis, scenario 0 at the top.
    let (ax, _) = chart.backend_coord(&(0.0, 0.0));
    let (ox, oy) = area.get_base_pixel();
    for (si, s) in names.iter().enumerate() {
        let (_, py) = chart.backend_coord(&(0.0, (n - 1 - si) as f64));
        area.draw(&Text::new(
            s.to_string(),
            (ax - ox - 8, py - oy),
            ("sans-serif", 15)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Right, VPos::Center)),
        ))
        .map_err(err)?;
    }
    let k = PEERS.len() as f64;
    let band = 0.84 / k;
    for (pi, (peer, colour)) in PEERS.iter().enumerate() {
        let bars: Vec<(f64, f64, f64)> = names
            .iter()
            .enumerate()
            .filter_map(|(si, s)| {
                let c = (n - 1 - si) as f64;
                let y0 = c + 0.42 - (pi as f64 + 1.0) * band;
                get(s, peer).map(|v| (v, y0, y0 + band * 0.9))
            })
            .collect();
        let style = colour.filled();
        chart
            .draw_series(
                bars.iter()
                    .map(|&(v, y0, y1)| Rectangle::new([(0.0, y0), (v, y1)], style)),
            )
            .map_err(err)?;
        chart
            .draw_series(bars.iter().map(|&(v, y0, y1)| {
                Text::new(
                    format_value(v),
                    (v, (y0 + y1) / 2.0),
                    ("sans-serif", 11)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Left, VPos::Center)),
                )
            }))
            .map_err(err)?;
    }
    Ok(())
}

fn format_value(v: f64) -> String {
    if v >= 100.0 {
        format!(" {v:.0}")
    } else if v >= 10.0 {
        format!(" {v:.1}")
    } else {
        format!(" {v:.2}")
    }
}
