//! The SVG plot: well-formed XML (checked by a small independent parser), every data point
//! present at the right place, axes, ticks and legend.

use l2d::plot::{LinePlot, Series, nice_ticks};

/// An XML element: name, attributes, children, text.
#[derive(Debug)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Element>,
    text: String,
}

impl Element {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, out: &mut Vec<&'a Element>) {
        out.push(self);
        for c in &self.children {
            c.all(out);
        }
    }
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let end = rest[i..].find(';').ok_or("unterminated entity")? + i;
        out.push(match &rest[i + 1..end] {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            e => return Err(format!("unknown entity &{e};")),
        });
        rest = &rest[end + 1..];
    }
    if rest.contains('<') {
        return Err("raw '<' in text".into());
    }
    out.push_str(rest);
    Ok(out)
}

/// A strict parser for the XML subset SVG needs: one root element, no DTD, no comments.
fn parse(xml: &str) -> Result<Element, String> {
    let b = xml.trim();
    let mut stack: Vec<Element> = Vec::new();
    let mut root = None;
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with("</") {
            let end = b[i..].find('>').ok_or("unterminated end tag")? + i;
            let name = b[i + 2..end].trim();
            let el = stack.pop().ok_or("end tag without start")?;
            if el.name != name {
                return Err(format!("</{name}> closes <{}>", el.name));
            }
            match stack.last_mut() {
                Some(parent) => parent.children.push(el),
                None => root = Some(el),
            }
            i = end + 1;
        } else if b[i..].starts_with('<') {
            let end = b[i..].find('>').ok_or("unterminated tag")? + i;
            let mut inner = &b[i + 1..end];
            let self_closing = inner.ends_with('/');
            if self_closing {
                inner = &inner[..inner.len() - 1];
            }
            let name_end = inner.find(char::is_whitespace).unwrap_or(inner.len());
            let name = inner[..name_end].to_string();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(format!("bad tag name {name:?}"));
            }
            let mut attrs = Vec::new();
            let mut rest = inner[name_end..].trim_start();
            while !rest.is_empty() {
                let eq = rest
                    .find('=')
                    .ok_or(format!("attribute without value in <{name}>"))?;
                let key = rest[..eq].trim().to_string();
                let after = &rest[eq + 1..];
                if !after.starts_with('"') {
                    return Err(format!("unquoted attribute {key} in <{name}>"));
                }
                let close = after[1..].find('"').ok_or("unterminated attribute")? + 1;
                let value = unescape(&after[1..close])?;
                if attrs.iter().any(|(k, _): &(String, String)| *k == key) {
                    return Err(format!("duplicate attribute {key}"));
                }
                attrs.push((key, value));
                rest = after[close + 1..].trim_start();
            }
            let el = Element {
                name,
                attrs,
                children: Vec::new(),
                text: String::new(),
            };
            if self_closing {
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            } else {
                stack.push(el);
            }
            i = end + 1;
        } else {
            let end = b[i..].find('<').map_or(b.len(), |j| j + i);
            let text = unescape(&b[i..end])?;
            match stack.last_mut() {
                Some(el) => el.text.push_str(&text),
                None if text.trim().is_empty() => {}
                None => return Err("text outside the root".into()),
            }
            i = end;
        }
        if root.is_some() && i < b.len() && !b[i..].trim().is_empty() {
            return Err("content after the root element".into());
        }
    }
    if !stack.is_empty() {
        return Err(format!("unclosed <{}>", stack.last().unwrap().name));
    }
    root.ok_or_else(|| "no root element".into())
}

#[test]
fn the_parser_rejects_malformed_xml() {
    assert!(parse("<svg><g></svg>").is_err());
    assert!(parse("<svg a=1/>").is_err());
    assert!(parse("<svg>a & b</svg>").is_err());
    assert!(parse("<svg/><svg/>").is_err());
    assert!(parse(r#"<svg a="1"><t>x &lt; y</t></svg>"#).is_ok());
}

fn demo_plot() -> LinePlot {
    LinePlot::new(
        "6-digit addition <held-out> & \"exact\"",
        "NFE per token",
        "exact match",
    )
    .with_log2_x(true)
    .with_x_range(1.0, 16.0)
    .with_y_range(0.0, 1.0)
    .series(Series::horizontal("base", 0.514))
    .series(Series::horizontal("LoRA r47", 0.883))
    .series(Series::line(
        "L2D midpoint",
        vec![
            (1.0, 0.85),
            (2.0, 0.94),
            (4.0, 0.95),
            (8.0, 0.95),
            (16.0, 0.945),
        ],
    ))
    .series(Series::points("adaptive", vec![(5.5, 0.951)]))
}

#[test]
fn svg_is_well_formed_and_holds_every_point() {
    let plot = demo_plot();
    let svg = plot.to_svg();
    let root = parse(&svg).unwrap_or_else(|e| panic!("malformed SVG: {e}\n{svg}"));
    assert_eq!(root.name, "svg");
    assert_eq!(root.attr("xmlns"), Some("http://www.w3.org/2000/svg"));
    let mut all = Vec::new();
    root.all(&mut all);

    // Title and labels, escaped and unescaped back.
    let texts: Vec<&str> = all
        .iter()
        .filter(|e| e.name == "text")
        .map(|e| e.text.as_str())
        .collect();
    for t in [
        "6-digit addition <held-out> & \"exact\"",
        "NFE per token",
        "exact match",
    ] {
        assert!(texts.contains(&t), "missing text {t:?}");
    }
    // Legend: one entry per series.
    let legend: Vec<&str> = all
        .iter()
        .filter(|e| e.attr("class") == Some("legend"))
        .map(|e| e.text.as_str())
        .collect();
    assert_eq!(legend, ["base", "LoRA r47", "L2D midpoint", "adaptive"]);

    // Every data point is a circle carrying its value, placed monotonically.
    let points: Vec<&&Element> = all
        .iter()
        .filter(|e| e.attr("class") == Some("point"))
        .collect();
    assert_eq!(points.len(), 6);
    let coord = |e: &Element, k: &str| e.attr(k).unwrap().parse::<f64>().unwrap();
    let l2d: Vec<(f64, f64, f64, f64)> = points
        .iter()
        .filter(|e| e.attr("data-label") == Some("L2D midpoint"))
        .map(|e| {
            (
                coord(e, "data-x"),
                coord(e, "data-y"),
                coord(e, "cx"),
                coord(e, "cy"),
            )
        })
        .collect();
    assert_eq!(
        l2d.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>(),
        vec![
            (1.0, 0.85),
            (2.0, 0.94),
            (4.0, 0.95),
            (8.0, 0.95),
            (16.0, 0.945)
        ]
    );
    // log2 x axis: equal pixel spacing between 1, 2, 4, 8, 16.
    let gaps: Vec<f64> = l2d.windows(2).map(|w| w[1].2 - w[0].2).collect();
    assert!(
        gaps.iter().all(|g| (g - gaps[0]).abs() < 0.02 && *g > 0.0),
        "{gaps:?}"
    );
    // Higher accuracy is drawn higher (smaller y pixel).
    assert!(l2d[1].3 < l2d[0].3);
    assert!((l2d[2].3 - l2d[3].3).abs() < 1e-9);

    // Horizontal reference lines at the base and LoRA accuracies, dashed, ordered.
    let lines: Vec<&&Element> = all
        .iter()
        .filter(|e| e.name == "line" && e.attr("class") == Some("series"))
        .collect();
    assert_eq!(lines.len(), 2);
    let y_of = |label: &str| {
        let e = lines
            .iter()
            .find(|e| e.attr("data-label") == Some(label))
            .unwrap();
        assert_eq!(e.attr("y1"), e.attr("y2"));
        assert!(e.attr("stroke-dasharray").is_some());
        coord(e, "y1")
    };
    assert!(y_of("LoRA r47") < y_of("base"));
    // The line series is one path through its five points.
    let paths: Vec<&&Element> = all
        .iter()
        .filter(|e| e.name == "path" && e.attr("class") == Some("series"))
        .collect();
    assert_eq!(paths.len(), 1);
    assert_eq!(paths[0].attr("d").unwrap().matches('L').count(), 4);

    // Axis ticks: 1, 2, 4, 8, 16 on x; 0 to 1 on y.
    let ticks = |class: &str| -> Vec<String> {
        all.iter()
            .filter(|e| e.attr("class") == Some(class))
            .map(|e| e.text.clone())
            .collect()
    };
    assert_eq!(ticks("xtick"), ["1", "2", "4", "8", "16"]);
    let y = ticks("ytick");
    assert_eq!(y.first().map(String::as_str), Some("0"));
    assert_eq!(y.last().map(String::as_str), Some("1"));
    assert!(all.iter().any(|e| e.attr("class") == Some("axes")));
}

#[test]
fn plots_without_fixed_ranges_fit_the_data_and_write_to_disk() {
    let plot = LinePlot::new("t", "x", "y")
        .series(Series::line("a", vec![(0.0, 3.0), (10.0, 7.0)]))
        .series(Series::points("b", vec![(5.0, f64::NAN), (4.0, 5.0)]));
    let svg = plot.to_svg();
    let root = parse(&svg).unwrap();
    let mut all = Vec::new();
    root.all(&mut all);
    // The NaN point is left out; the others are inside the plotting area.
    let pts: Vec<&&Element> = all
        .iter()
        .filter(|e| e.attr("class") == Some("point"))
        .collect();
    assert_eq!(pts.len(), 3);
    let w: f64 = root.attr("width").unwrap().parse().unwrap();
    let h: f64 = root.attr("height").unwrap().parse().unwrap();
    for p in pts {
        let cx: f64 = p.attr("cx").unwrap().parse().unwrap();
        let cy: f64 = p.attr("cy").unwrap().parse().unwrap();
        assert!(cx > 0.0 && cx < w && cy > 0.0 && cy < h);
    }
    let dir = std::env::temp_dir().join(format!("l2d-plot-{}", std::process::id()));
    let path = dir.join("nested").join("p.svg");
    plot.write(&path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), svg);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ticks_are_round_and_cover_the_range() {
    let t = nice_ticks(0.0, 1.0, 5);
    let expected = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0];
    assert_eq!(t.len(), expected.len());
    assert!(
        t.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-12),
        "{t:?}"
    );
    let t = nice_ticks(3.0, 97.0, 10);
    assert_eq!(t.first(), Some(&10.0));
    assert_eq!(t.last(), Some(&90.0));
    assert!(t.windows(2).all(|w| (w[1] - w[0] - 10.0).abs() < 1e-9));
    assert!(nice_ticks(1.0, 1.0, 5).is_empty());
}
