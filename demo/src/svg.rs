//! The timeline as an SVG picture a person can open in a browser: answered and failed
//! requests per second as bars, a shaded band from each fault to its restore, a vertical mark
//! at each fault, restore and return to health. Hand-written SVG: a few rectangles and lines
//! need no plotting library. A label that would run past the right edge is drawn to the left
//! of its mark instead, its width estimated from its characters ([`text_width`]).

use std::fmt::Write as _;

use crate::timeline::{Event, EventKind, Second};

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
/// Room above the plot for the event labels.
const TOP: f64 = 110.0;
const BOTTOM: f64 = 40.0;
/// The labels' font size.
const FONT_SIZE: f64 = 11.0;
/// Rows the fault labels are staggered on, above the plot.
const LABEL_ROWS: usize = 4;

/// The picture of `seconds`, with `events` marked; `title` on top.
pub fn render(seconds: &[Second], events: &[Event], title: &str) -> String {
    let span = seconds
        .len()
        .max(
            events
                .iter()
                .map(|e| e.at.as_secs() as usize + 1)
                .max()
                .unwrap_or(0),
        )
        .max(1) as f64;
    let peak = seconds.iter().map(|s| s.requests).max().unwrap_or(0).max(1);
    let scale_max = nice_ceiling(peak) as f64;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |t: f64| LEFT + t / span * plot_w;
    let y = |v: f64| TOP + plot_h - v / scale_max * plot_h;
    let bar = (plot_w / span).max(1.0);

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"{FONT_SIZE}\">"
    );
    let _ = writeln!(svg, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        svg,
        "<text x=\"{LEFT}\" y=\"18\" font-size=\"14\" font-weight=\"bold\">{}</text>",
        escape(title)
    );
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"18\" text-anchor=\"end\"><tspan fill=\"#4a90d9\">■ answered</tspan> \
         <tspan fill=\"#d0021b\">■ failed</tspan> per second; marks: <tspan fill=\"#d0021b\">fault</tspan> \
         <tspan fill=\"#f5a623\">restore</tspan> <tspan fill=\"#417505\">healthy</tspan></text>",
        WIDTH - RIGHT
    );
    // Axes and a few grid lines with their values.
    for step in 0..=4 {
        let value = scale_max * f64::from(step) / 4.0;
        let gy = y(value);
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{gy:.1}\" x2=\"{:.1}\" y2=\"{gy:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{value:.0}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            gy + 4.0
        );
    }
    let tick = [5u64, 10, 15, 30, 60, 120, 300]
        .into_iter()
        .find(|t| span / *t as f64 <= 12.0)
        .unwrap_or(600);
    for t in (0..=span as u64).step_by(tick as usize) {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{t}s</text>",
            x(t as f64),
            HEIGHT - BOTTOM + 16.0
        );
    }
    let _ = writeln!(
        svg,
        "<line x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>",
        y(0.0),
        WIDTH - RIGHT,
        y(0.0)
    );
    // One bar per second: answered (blue) with failed (red) on top.
    for second in seconds {
        let answered = (second.requests - second.failed) as f64;
        let failed = second.failed as f64;
        let left = x(second.at as f64);
        if answered > 0.0 {
            let _ = writeln!(
                svg,
                "<rect x=\"{left:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"#4a90d9\">\
                 <title>{}s: {} answered</title></rect>",
                y(answered),
                y(0.0) - y(answered),
                second.at,
                answered
            );
        }
        if failed > 0.0 {
            let _ = writeln!(
                svg,
                "<rect x=\"{left:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"#d0021b\">\
                 <title>{}s: {} failed</title></rect>",
                y(answered + failed),
                y(answered) - y(answered + failed),
                second.at,
                failed
            );
        }
    }
    // A band from each fault to its restore, behind the marks.
    for (i, event) in events.iter().enumerate() {
        if event.kind != EventKind::Fault {
            continue;
        }
        let Some(restore) = events[i + 1..]
            .iter()
            .find(|e| e.kind == EventKind::Restored && e.component == event.component)
        else {
            continue;
        };
        let (from, to) = (x(event.at.as_secs_f64()), x(restore.at.as_secs_f64()));
        let _ = writeln!(
            svg,
            "<rect x=\"{from:.1}\" y=\"{TOP:.1}\" width=\"{:.1}\" height=\"{plot_h:.1}\" \
             fill=\"#d0021b\" fill-opacity=\"0.08\"><title>{}</title></rect>",
            (to - from).max(1.0),
            escape(&event.label())
        );
    }
    // Event marks. Only faults carry a label, staggered on four rows so neighbours do not
    // overlap; a restore or a return to health is a mark whose label shows on hover.
    let mut faults_seen = 0;
    for event in events {
        let ex = x(event.at.as_secs_f64());
        let colour = match event.kind {
            EventKind::Fault => "#d0021b",
            EventKind::Restored => "#f5a623",
            EventKind::Healthy => "#417505",
        };
        let label = format!("{} ({:.0}s)", event.label(), event.at.as_secs_f64());
        if event.kind != EventKind::Fault {
            let _ = writeln!(
                svg,
                "<line x1=\"{ex:.1}\" y1=\"{TOP:.1}\" x2=\"{ex:.1}\" y2=\"{:.1}\" stroke=\"{colour}\" \
                 stroke-dasharray=\"4 3\"><title>{}</title></line>",
                y(0.0),
                escape(&label),
            );
            continue;
        }
        let label_y = 34.0 + (faults_seen % LABEL_ROWS) as f64 * 19.0;
        faults_seen += 1;
        // Right of the mark, unless it would leave the picture: then left of it.
        let (label_x, anchor) = if ex + 3.0 + text_width(&label) <= WIDTH - 2.0 {
            (ex + 3.0, "start")
        } else {
            (ex - 3.0, "end")
        };
        let _ = writeln!(
            svg,
            "<line x1=\"{ex:.1}\" y1=\"{label_y:.1}\" x2=\"{ex:.1}\" y2=\"{:.1}\" stroke=\"{colour}\" \
             stroke-dasharray=\"4 3\"/>\
             <text x=\"{label_x:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\" fill=\"{colour}\">{}</text>",
            y(0.0),
            label_y + 10.0,
            escape(&label),
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// An upper estimate of `text`'s width in the labels' sans-serif font: per character, the
/// advance of the widest glyph of its class in DejaVu Sans, rounded up.
pub fn text_width(text: &str) -> f64 {
    text.chars()
        .map(|c| match c {
            'i' | 'j' | 'l' | '.' | ',' | ':' | ';' | '\'' | '|' | '!' => 0.4,
            ' ' | '(' | ')' | '[' | ']' | '-' | 'f' | 't' | 'r' | 'I' => 0.42,
            'm' | 'w' | 'M' | 'W' => 1.0,
            c if c.is_ascii_uppercase() => 0.8,
            c if c.is_ascii() => 0.64,
            _ => 1.0,
        })
        .sum::<f64>()
        * FONT_SIZE
}

/// The smallest of 1, 2, 5 × 10^n not below `n`.
fn nice_ceiling(n: u64) -> u64 {
    let mut base = 1;
    loop {
        for factor in [1, 2, 5] {
            if base * factor >= n {
                return base * factor;
            }
        }
        base *= 10;
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::Fault;
    use std::time::Duration;

    #[test]
    fn bars_marks_and_labels_in_a_well_formed_picture() {
        let seconds: Vec<Second> = (0..30)
            .map(|at| Second {
                at,
                requests: 100,
                failed: if at == 12 { 7 } else { 0 },
                ..Second::default()
            })
            .collect();
        let events = [
            Event {
                at: Duration::from_secs(10),
                kind: EventKind::Fault,
                fault: Fault::Kill,
                component: "db-primary".into(),
            },
            Event {
                at: Duration::from_secs(20),
                kind: EventKind::Restored,
                fault: Fault::Kill,
                component: "db-primary".into(),
            },
        ];
        let svg = render(&seconds, &events, "failover <demo> & more");
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("failover &lt;demo&gt; &amp; more"));
        assert_eq!(svg.matches("fill=\"#4a90d9\"><title>").count(), 30);
        assert!(svg.contains("<title>12s: 7 failed</title>"));
        assert!(svg.contains(">kill db-primary (10s)</text>"));
        assert!(svg.contains("<title>restore db-primary (20s)</title></line>"));
        // One band, from the kill to its restore.
        assert_eq!(
            svg.matches("fill-opacity=\"0.08\"><title>kill db-primary</title>")
                .count(),
            1
        );
        // Every bar is closed; the background is the one self-closed rectangle.
        assert_eq!(
            svg.matches("<rect").count(),
            svg.matches("</rect>").count() + 1
        );
        assert_eq!(nice_ceiling(100), 100);
        assert_eq!(nice_ceiling(101), 200);
        assert_eq!(nice_ceiling(0), 1);
    }

    /// The `x`, anchor and text of the `<text>` element that ends with `ends`.
    fn label(svg: &str, ends: &str) -> (f64, String, String) {
        let end = svg.find(&format!("{ends}</text>")).expect(ends) + ends.len();
        let start = svg[..end].rfind("<text ").unwrap();
        let element = &svg[start..end];
        let attribute = |name: &str| {
            let from = element.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
            element[from..].split('"').next().unwrap().to_owned()
        };
        let text = element[element.find('>').unwrap() + 1..].to_owned();
        (
            attribute("x").parse().unwrap(),
            attribute("text-anchor"),
            text,
        )
    }

    #[test]
    fn labels_at_the_right_edge_stay_inside_the_picture() {
        let seconds: Vec<Second> = (0..100)
            .map(|at| Second {
                at,
                requests: 50,
                ..Second::default()
            })
            .collect();
        let event = |at: u64, kind: EventKind, component: &str| Event {
            at: Duration::from_secs(at),
            kind,
            fault: Fault::Partition,
            component: component.into(),
        };
        let events = [
            event(2, EventKind::Fault, "lb-1"),
            event(97, EventKind::Fault, "db-replica-with-a-long-name"),
            event(99, EventKind::Restored, "db-replica-with-a-long-name"),
        ];
        let svg = render(&seconds, &events, "edge");
        let (x, anchor, text) = label(&svg, "partition lb-1 (2s)");
        assert_eq!(anchor, "start");
        assert!(x + text_width(&text) <= WIDTH, "{x} {text}");
        let (x, anchor, text) = label(&svg, "partition db-replica-with-a-long-name (97s)");
        assert_eq!(anchor, "end");
        assert!(x <= WIDTH && x - text_width(&text) >= 0.0, "{x} {text}");
        // A restore is a mark with a tooltip, not a label.
        assert!(svg.contains("<title>restore db-replica-with-a-long-name (99s)</title></line>"));
        // The estimate is not below a real font's: 30 'm' in 11 px DejaVu Sans are 320 px.
        assert!(text_width(&"m".repeat(30)) >= 320.0);
        assert!(text_width("kill lb-1 (10s)") > 60.0);
    }
}
