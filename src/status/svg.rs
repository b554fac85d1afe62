//! Inline SVG charts for the HTML page: no script, no style sheet, nothing fetched; every text
//! passes through `escape::html`, whose entities (`&amp;` `&lt;` `&gt;` `&quot;` `&#39;`)
//! are XML's own, and every element is closed, so each `<svg>` is well-formed XML by itself.

use std::fmt::Write;

use super::escape::html as e;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 170.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 22.0;
const BOTTOM: f64 = 22.0;

/// One line of a line chart: runs of points (x from 0 = left to 1 = right, y a value); a
/// break between runs is a gap in the data.
pub struct Series<'a> {
    pub label: &'a str,
    pub color: &'a str,
    pub runs: Vec<Vec<(f64, f64)>>,
}

/// One part of a stacked bar chart: its name, color and one value per bar.
pub struct Stack<'a> {
    pub label: &'a str,
    pub color: &'a str,
    pub values: Vec<u64>,
}

/// The smallest of 1, 2, 5, 10, 20, 50… at or above `v`: the top of the y axis.
fn nice_max(v: f64) -> f64 {
    let mut top = 1.0;
    while top < v {
        for step in [2.0, 2.5, 2.0] {
            top *= step;
            if top >= v {
                break;
            }
        }
    }
    top
}

fn x_at(frac: f64) -> f64 {
    LEFT + frac.clamp(0.0, 1.0) * (WIDTH - LEFT - RIGHT)
}

fn y_at(v: f64, top: f64) -> f64 {
    HEIGHT - BOTTOM - (v / top).clamp(0.0, 1.0) * (HEIGHT - TOP - BOTTOM)
}

/// `<svg>` opening tag, title, legend, the plot frame and its y axis (0, half, top).
fn open(o: &mut String, id: &str, title: &str, legend: &[(&str, &str)], top: f64) {
    let _ = write!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"{id}\" width=\"{WIDTH}\" \
         height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         aria-labelledby=\"{id}-title\" font-family=\"sans-serif\" font-size=\"10\">\
         <title id=\"{id}-title\">{}</title>",
        e(title)
    );
    let _ = write!(
        o,
        "<text x=\"{LEFT}\" y=\"13\" font-size=\"12\" font-weight=\"bold\">{}</text>",
        e(title)
    );
    let mut x = WIDTH - RIGHT;
    for (label, color) in legend.iter().rev() {
        let _ = write!(
            o,
            "<text x=\"{x:.1}\" y=\"13\" text-anchor=\"end\" fill=\"{color}\">\u{25a0} {}</text>",
            e(label)
        );
        x -= 14.0 + 6.0 * label.chars().count() as f64;
    }
    let (x0, x1) = (x_at(0.0), x_at(1.0));
    for v in [0.0, top / 2.0, top] {
        let y = y_at(v, top);
        let _ = write!(
            o,
            "<line x1=\"{x0:.1}\" y1=\"{y:.1}\" x2=\"{x1:.1}\" y2=\"{y:.1}\" stroke=\"#ccc\"/>"
        );
        // Counts are whole: a half-way line at 2.5 gets no label.
        if v.fract() == 0.0 {
            let _ = write!(
                o,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v}</text>",
                x0 - 4.0,
                y + 3.0
            );
        }
    }
}

/// Labels under the x axis at the given fractions.
fn x_labels(o: &mut String, labels: &[(f64, String)]) {
    for (frac, text) in labels {
        let anchor = match *frac {
            f if f <= 0.0 => "start",
            f if f >= 1.0 => "end",
            _ => "middle",
        };
        let _ = write!(
            o,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>",
            x_at(*frac),
            HEIGHT - 6.0,
            e(text)
        );
    }
}

/// A line chart of `series` (each run a polyline; a lone point a dot).
pub fn line_chart(id: &str, title: &str, x_ticks: &[(f64, String)], series: &[Series]) -> String {
    let most = series
        .iter()
        .flat_map(|s| s.runs.iter().flatten().map(|p| p.1))
        .fold(0.0, f64::max);
    let top = nice_max(most);
    let mut o = String::with_capacity(4096);
    let legend: Vec<(&str, &str)> = series.iter().map(|s| (s.label, s.color)).collect();
    open(&mut o, id, title, &legend, top);
    x_labels(&mut o, x_ticks);
    for s in series {
        for run in &s.runs {
            let at = |&(x, y): &(f64, f64)| format!("{:.1},{:.1}", x_at(x), y_at(y, top));
            match run.as_slice() {
                [] => {}
                [p] => {
                    let (x, y) = (x_at(p.0), y_at(p.1, top));
                    let _ = write!(
                        o,
                        "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"1.5\" fill=\"{}\"/>",
                        s.color
                    );
                }
                _ => {
                    let points: Vec<String> = run.iter().map(at).collect();
                    let _ = write!(
                        o,
                        "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" \
                         points=\"{}\"/>",
                        s.color,
                        points.join(" ")
                    );
                }
            }
        }
    }
    o.push_str("</svg>\n");
    o
}

/// A bar chart, one bar per label (each bar's tooltip), each bar the stacks' values on top
/// of each other. Under the axis: `ticks` (fraction of the width, text) if there are any,
/// else every bar's label.
pub fn bar_chart(
    id: &str,
    title: &str,
    labels: &[String],
    ticks: &[(f64, String)],
    stacks: &[Stack],
) -> String {
    let bars = labels.len().max(1);
    let total = |i: usize| {
        stacks
            .iter()
            .map(|s| s.values.get(i).copied().unwrap_or(0))
            .fold(0, u64::saturating_add)
    };
    let top = nice_max((0..bars).map(total).max().unwrap_or(0) as f64);
    let mut o = String::with_capacity(4096);
    let legend: Vec<(&str, &str)> = stacks.iter().map(|s| (s.label, s.color)).collect();
    open(&mut o, id, title, &legend, top);
    let slot = (WIDTH - LEFT - RIGHT) / bars as f64;
    for i in 0..bars {
        let x = LEFT + slot * i as f64 + slot * 0.1;
        let mut base = 0.0;
        for s in stacks {
            let v = s.values.get(i).copied().unwrap_or(0) as f64;
            if v > 0.0 {
                let (y_top, y_base) = (y_at(base + v, top), y_at(base, top));
                let _ = write!(
                    o,
                    "<rect x=\"{x:.1}\" y=\"{y_top:.1}\" width=\"{:.1}\" height=\"{:.1}\" \
                     fill=\"{}\"><title>{}: {}</title></rect>",
                    slot * 0.8,
                    y_base - y_top,
                    s.color,
                    e(labels.get(i).map_or("", String::as_str)),
                    v
                );
            }
            base += v;
        }
        if ticks.is_empty() {
            let _ = write!(
                o,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                x + slot * 0.4,
                HEIGHT - 6.0,
                e(labels.get(i).map_or("", String::as_str))
            );
        }
    }
    x_labels(&mut o, ticks);
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_y_axis_tops_are_round() {
        let tops: Vec<f64> = [0.0, 1.0, 1.5, 3.0, 7.0, 11.0, 230.0]
            .into_iter()
            .map(nice_max)
            .collect();
        assert_eq!(tops, [1.0, 1.0, 2.0, 5.0, 10.0, 20.0, 500.0]);
    }

    #[test]
    fn titles_and_labels_are_escaped() {
        let s = line_chart(
            "c",
            "<script>\"x\"",
            &[(0.5, "<b>".to_string())],
            &[Series {
                label: "a&b",
                color: "#b00",
                runs: vec![vec![(0.0, 1.0), (1.0, 3.0)], vec![(0.5, 2.0)]],
            }],
        );
        assert!(!s.contains("<script") && !s.contains("<b>"));
        assert!(s.contains("&lt;script&gt;&quot;x&quot;") && s.contains("a&amp;b"));
        assert!(s.contains("<polyline") && s.contains("<circle"));
        assert!(
            s.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\"") && s.ends_with("</svg>\n")
        );
        let b = bar_chart(
            "b",
            "t",
            &["<1".to_string(), "2".to_string()],
            &[],
            &[Stack {
                label: "x",
                color: "#000",
                values: vec![3, 0],
            }],
        );
        assert!(b.contains("<title>&lt;1: 3</title>") && b.contains(">&lt;1</text>"));
        assert_eq!(b.matches("<rect").count(), 1, "no bar for a zero");
    }
}
