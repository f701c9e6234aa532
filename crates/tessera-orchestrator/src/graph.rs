//! Pictures of a plan: its steps and their dependencies as a graph
//! (`tessera plan graph FILE [--run ID] -o OUT.svg|OUT.png`).
//!
//! [`dot`] writes the graph in Graphviz's DOT language: one box per step
//! (its name; `component.function`; `× each item of …` for a fan-out), a
//! solid arrow from each step to the steps that need it, a dashed arrow
//! labelled `fallback` from a step to its fallback, an `inputs` node at the
//! top and an `outputs` node at the bottom. Given a run's step records, each
//! box is coloured by how the step ended and gets a line with its state, its
//! duration and its attempts.
//!
//! [`svg`] lays that DOT out and draws it with [`layout-rs`](layout) (pure
//! Rust: no Graphviz to install), and [`png`] rasterizes the SVG with
//! [`resvg`] using the system's fonts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use resvg::tiny_skia;
use resvg::usvg;

use crate::plan::{ComponentRef, OnError, Plan, Step};
use crate::progress::{StepRecord, StepState};

/// Why a picture could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphError {
    /// The plan has no step.
    #[error("plan `{plan}` has no steps to draw")]
    Empty {
        /// The plan's name.
        plan: String,
    },
    /// The layout library refused the graph (or failed on it).
    #[error("cannot lay out the graph of plan `{plan}`: {message}")]
    Layout {
        /// The plan's name.
        plan: String,
        /// What went wrong.
        message: String,
    },
    /// The SVG given to [`png`] cannot be read.
    #[error("the SVG cannot be read: {0}")]
    Svg(String),
    /// The scale given to [`png`] is not usable.
    #[error("the scale must be a number above 0 (and at most {MAX_SCALE}), not {0}")]
    Scale(f32),
    /// The PNG would be too large.
    #[error(
        "the picture would be {width}×{height} pixels, more than {MAX_SIDE} on a side: draw an SVG, or use a smaller scale"
    )]
    TooLarge {
        /// Its width in pixels.
        width: u32,
        /// Its height in pixels.
        height: u32,
    },
    /// No font was found, so the PNG's text would be missing.
    #[error(
        "no fonts were found on this system (fontconfig's directories and the usual font directories were searched), so the PNG would have no text: install a font (on Debian, `fonts-dejavu-core`) or draw an SVG"
    )]
    NoFonts,
    /// The PNG cannot be encoded.
    #[error("cannot encode the PNG: {0}")]
    Encode(String),
}

/// The largest side of a PNG, in pixels.
pub const MAX_SIDE: u32 = 16_384;
/// The largest scale [`png`] accepts.
pub const MAX_SCALE: f32 = 16.0;

/// The node standing for the plan's inputs (not a step name: those are
/// identifiers).
const INPUTS_ID: &str = "(inputs)";
/// The node standing for the plan's outputs.
const OUTPUTS_ID: &str = "(outputs)";

/// Names listed in the inputs and outputs nodes, at most.
const MAX_LISTED: usize = 6;
/// Characters of a fan-out's `for_each` expression shown, at most.
const MAX_EXPR: usize = 32;

/// Fill of a step not run (or drawn without a run).
const PLAIN_FILL: &str = "#ffffff";
/// Fill of the inputs and outputs nodes.
const IO_FILL: &str = "#e8eef7";
/// Colour of a fallback arrow that was taken.
const TAKEN_FALLBACK: &str = "#c0392b";

/// How a step of a run ended, as drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drawn {
    Ended(StepState),
    NotFinished,
}

impl Drawn {
    fn word(self) -> &'static str {
        match self {
            Drawn::Ended(StepState::Succeeded) => "succeeded",
            Drawn::Ended(StepState::Failed) => "failed",
            Drawn::Ended(StepState::Skipped) => "skipped",
            Drawn::Ended(StepState::Continued) => "continued",
            Drawn::Ended(StepState::FellBack) => "fell back",
            Drawn::NotFinished => "not finished",
        }
    }

    /// Fill and border colours.
    fn colours(self) -> (&'static str, &'static str) {
        match self {
            Drawn::Ended(StepState::Succeeded) => ("#c8e6c9", "#2e7d32"),
            Drawn::Ended(StepState::Failed) => ("#ffcdd2", "#c62828"),
            Drawn::Ended(StepState::Skipped) => ("#e0e0e0", "#757575"),
            Drawn::Ended(StepState::Continued) => ("#fff3c4", "#f9a825"),
            Drawn::Ended(StepState::FellBack) => ("#ffe0b2", "#ef6c00"),
            Drawn::NotFinished => (PLAIN_FILL, "#9e9e9e"),
        }
    }
}

/// A DOT string literal: `"` and `\` escaped, control characters (line
/// breaks included) turned into spaces, so that a name cannot end the
/// string, start an escape (`\n`, `\l`, `\N`…) or break a line.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    push_escaped(&mut out, s);
    out.push('"');
    out
}

fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
}

/// A quoted DOT label of several lines (each escaped; `\n` between).
fn label(lines: &[String]) -> String {
    let mut out = String::from("\"");
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            out.push_str("\\n");
        }
        push_escaped(&mut out, l);
    }
    out.push('"');
    out
}

/// `s` cut to `max` characters, with `…` when cut.
fn shorten(s: &str, max: usize) -> String {
    let s = s.trim();
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// `names` joined, at most [`MAX_LISTED`] of them.
fn listing<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    let mut shown = names
        .iter()
        .take(MAX_LISTED)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX_LISTED {
        let _ = write!(shown, ", … ({} in all)", names.len());
    }
    shown
}

/// A component as shown in a box: the registry name, or the file name of a
/// path.
fn component_name(c: &ComponentRef) -> String {
    match c {
        ComponentRef::Registry(n) => n.clone(),
        ComponentRef::File { path, .. } => path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string()),
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The lines of a step's box.
fn step_lines(step: &Step, drawn: Option<(Drawn, Option<&StepRecord>)>) -> Vec<String> {
    let mut lines = vec![
        step.name.clone(),
        format!("{}.{}", component_name(&step.component), step.function),
    ];
    if let Some(e) = &step.for_each {
        lines.push(format!("× each item of {}", shorten(e.source(), MAX_EXPR)));
    }
    if let Some((d, rec)) = drawn {
        let mut line = d.word().to_string();
        if let Some(r) = rec {
            if r.state != StepState::Skipped {
                let _ = write!(line, " · {} ms", r.duration_ms);
            }
            if r.attempts > 0 {
                let _ = write!(
                    line,
                    " · {}",
                    plural(u64::from(r.attempts), "attempt", "attempts")
                );
            }
            if let Some(n) = r.items {
                let _ = write!(line, " · {}", plural(n, "item", "items"));
            }
        }
        lines.push(line);
    }
    lines
}

/// The plan's graph in Graphviz's DOT language.
///
/// With `run` (each step's record, `None` for a step that has not
/// finished; a step absent from the list has not finished either), each
/// box is coloured by the step's state and has a line with the state, the
/// duration in milliseconds and the attempts.
///
/// Node ids are the step names (quoted); the inputs and outputs nodes are
/// `"(inputs)"` and `"(outputs)"`. Edges: `"a" -> "b";` when `b` needs `a`;
/// `"p" -> "f" [style=dashed, label="fallback"];` when `f` is `p`'s
/// fallback.
pub fn dot(plan: &Plan, run: Option<&[(String, Option<StepRecord>)]>) -> String {
    let records: Option<BTreeMap<&str, Option<&StepRecord>>> = run.map(|r| {
        r.iter()
            .map(|(name, rec)| (name.as_str(), rec.as_ref()))
            .collect()
    });
    let drawn = |name: &str| -> Option<(Drawn, Option<&StepRecord>)> {
        let records = records.as_ref()?;
        Some(match records.get(name).copied().flatten() {
            Some(r) => (Drawn::Ended(r.state), Some(r)),
            None => (Drawn::NotFinished, None),
        })
    };
    let names: BTreeSet<&str> = plan.steps.iter().map(|s| s.name.as_str()).collect();
    let fallbacks = plan.fallbacks();
    // Dependency order (the layout places nodes in the order they come),
    // then whatever a hand-built plan with a cycle left out.
    let mut order: Vec<&Step> = plan.topological();
    let placed: BTreeSet<&str> = order.iter().map(|s| s.name.as_str()).collect();
    order.extend(
        plan.steps
            .iter()
            .filter(|s| !placed.contains(s.name.as_str())),
    );

    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", quote(&plan.name));
    let title = match &run {
        Some(_) => format!("plan {} (a run)", plan.name),
        None => format!("plan {}", plan.name),
    };
    let _ = writeln!(
        out,
        "  graph [rankdir=TB, labelloc=t, fontname=\"Helvetica\", label={}];",
        quote(&title)
    );
    let _ = writeln!(
        out,
        "  node [shape=box, style=filled, fillcolor=\"{PLAIN_FILL}\", color=\"black\", fontname=\"Helvetica\", fontsize=14];"
    );
    let _ = writeln!(out, "  edge [fontname=\"Helvetica\", fontsize=12];");

    if !plan.inputs.is_empty() {
        let lines = vec![
            "inputs".to_string(),
            listing(plan.inputs.iter().map(|i| i.name.as_str())),
        ];
        let _ = writeln!(
            out,
            "  {} [shape=ellipse, fillcolor=\"{IO_FILL}\", label={}];",
            quote(INPUTS_ID),
            label(&lines)
        );
    }
    for s in &order {
        let d = drawn(&s.name);
        let lines = step_lines(s, d);
        let colours = match d {
            Some((d, _)) => {
                let (fill, border) = d.colours();
                format!(", fillcolor=\"{fill}\", color=\"{border}\", penwidth=2")
            }
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "  {} [label={}{colours}];",
            quote(&s.name),
            label(&lines)
        );
    }
    if !plan.outputs.is_empty() {
        let lines = vec![
            "outputs".to_string(),
            listing(plan.outputs.iter().map(|(n, _)| n.as_str())),
        ];
        let _ = writeln!(
            out,
            "  {} [shape=ellipse, fillcolor=\"{IO_FILL}\", label={}];",
            quote(OUTPUTS_ID),
            label(&lines)
        );
    }

    // Inputs feed the steps that wait for nothing (fallbacks hang off
    // their primaries).
    if !plan.inputs.is_empty() {
        for s in &order {
            let waits = s.needs.iter().any(|n| names.contains(n.as_str()));
            if !waits && !fallbacks.contains_key(s.name.as_str()) {
                let _ = writeln!(out, "  {} -> {};", quote(INPUTS_ID), quote(&s.name));
            }
        }
    }
    // needs: solid, from the step needed to the step that needs it.
    for s in &order {
        for n in &s.needs {
            if names.contains(n.as_str()) && n != &s.name {
                let _ = writeln!(out, "  {} -> {};", quote(n), quote(&s.name));
            }
        }
    }
    // fallbacks: dashed, from the primary to its fallback.
    for s in &order {
        if let OnError::Fallback(f) = &s.on_error
            && names.contains(f.as_str())
            && f != &s.name
        {
            let taken = matches!(drawn(&s.name), Some((Drawn::Ended(StepState::FellBack), _)));
            let colour = if taken {
                format!(", color=\"{TAKEN_FALLBACK}\", penwidth=2")
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "  {} -> {} [style=dashed, label=\"fallback\"{colour}];",
                quote(&s.name),
                quote(f)
            );
        }
    }
    // Outputs read from the steps their templates name (or, when they
    // name none, hang below the steps nothing waits for).
    if !plan.outputs.is_empty() {
        let mut read: BTreeSet<String> = plan
            .outputs
            .iter()
            .flat_map(|(_, t)| t.steps())
            .filter(|n| names.contains(n.as_str()))
            .collect();
        if read.is_empty() {
            let needed: BTreeSet<&str> = plan
                .steps
                .iter()
                .flat_map(|s| s.needs.iter().map(String::as_str))
                .collect();
            read = plan
                .steps
                .iter()
                .filter(|s| {
                    !needed.contains(s.name.as_str()) && !fallbacks.contains_key(s.name.as_str())
                })
                .map(|s| s.name.clone())
                .collect();
        }
        for n in order.iter().map(|s| &s.name).filter(|n| read.contains(*n)) {
            let _ = writeln!(out, "  {} -> {};", quote(n), quote(OUTPUTS_ID));
        }
    }
    out.push_str("}\n");
    out
}

/// The plan's graph drawn as SVG (the [`dot`] text, laid out by
/// `layout-rs`).
///
/// `layout-rs` asserts its invariants with panics; the plans this crate
/// reads never reach them (a plan has steps and no cycles), but a
/// [`Plan`] is plain data that a caller may build by hand, so the layout
/// runs under [`std::panic::catch_unwind`] and a panic comes back as
/// [`GraphError::Layout`] (the default panic hook still prints its
/// message to stderr). A plan without steps is refused up front.
pub fn svg(
    plan: &Plan,
    run: Option<&[(String, Option<StepRecord>)]>,
) -> Result<String, GraphError> {
    if plan.steps.is_empty() {
        return Err(GraphError::Empty {
            plan: plan.name.clone(),
        });
    }
    let text = dot(plan, run);
    let layout_error = |message: String| GraphError::Layout {
        plan: plan.name.clone(),
        message,
    };
    let drawn = std::panic::catch_unwind(move || -> Result<String, String> {
        use layout::backends::svg::SVGWriter;
        use layout::gv::{DotParser, GraphBuilder};
        let mut parser = DotParser::new(&text);
        let graph = parser
            .process()
            .map_err(|e| format!("the DOT text does not parse: {e}"))?;
        let mut builder = GraphBuilder::new();
        builder.visit_graph(&graph);
        let mut visual = builder.get();
        let mut writer = Bounds::new(SVGWriter::new());
        visual.do_it(false, false, false, &mut writer);
        Ok(writer.finish())
    });
    match drawn {
        Ok(Ok(svg)) => Ok(svg),
        Ok(Err(message)) => Err(layout_error(message)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_string());
            Err(layout_error(format!("layout-rs panicked: {what}")))
        }
    }
}

/// `layout-rs`'s SVG writer, keeping the extent of what is drawn.
///
/// The writer sizes the picture itself, but counts a text's length in its
/// height: a long label leaves a tall blank band below the graph. This
/// keeps the true extent (a text's estimated generously) and
/// [`Bounds::finish`] puts it in the `<svg>` header, with a white
/// background for viewers with a dark one.
struct Bounds {
    inner: layout::backends::svg::SVGWriter,
    right: f64,
    bottom: f64,
}

/// The margin around the picture, in pixels.
const MARGIN: f64 = 10.0;

impl Bounds {
    fn new(inner: layout::backends::svg::SVGWriter) -> Self {
        Self {
            inner,
            right: 0.0,
            bottom: 0.0,
        }
    }

    fn grow(&mut self, x: f64, y: f64) {
        if x.is_finite() {
            self.right = self.right.max(x);
        }
        if y.is_finite() {
            self.bottom = self.bottom.max(y);
        }
    }

    /// The SVG, its header sized to what was drawn (as the writer wrote it
    /// if the header is not the one expected).
    fn finish(&self) -> String {
        let svg = self.inner.finalize();
        let (w, h) = ((self.right + MARGIN).ceil(), (self.bottom + MARGIN).ceil());
        let Some(start) = svg.find("<svg ") else {
            return svg;
        };
        let Some(end) = svg[start..].find('>').map(|e| start + e + 1) else {
            return svg;
        };
        let header = &svg[start..end];
        if !header.starts_with("<svg width=") || !header.contains("viewBox=") {
            return svg;
        }
        format!(
            "{}<svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" xmlns=\"http://www.w3.org/2000/svg\">\n<rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"white\"/>{}",
            &svg[..start],
            &svg[end..]
        )
    }
}

impl layout::core::format::RenderBackend for Bounds {
    fn draw_rect(
        &mut self,
        xy: layout::core::geometry::Point,
        size: layout::core::geometry::Point,
        look: &layout::core::style::StyleAttr,
        properties: Option<String>,
        clip: Option<layout::core::format::ClipHandle>,
    ) {
        self.grow(xy.x + size.x, xy.y + size.y);
        self.inner.draw_rect(xy, size, look, properties, clip);
    }

    fn draw_line(
        &mut self,
        start: layout::core::geometry::Point,
        stop: layout::core::geometry::Point,
        look: &layout::core::style::StyleAttr,
        properties: Option<String>,
    ) {
        self.grow(start.x, start.y);
        self.grow(stop.x, stop.y);
        self.inner.draw_line(start, stop, look, properties);
    }

    fn draw_circle(
        &mut self,
        xy: layout::core::geometry::Point,
        size: layout::core::geometry::Point,
        look: &layout::core::style::StyleAttr,
        properties: Option<String>,
    ) {
        self.grow(xy.x + size.x / 2.0, xy.y + size.y / 2.0);
        self.inner.draw_circle(xy, size, look, properties);
    }

    fn draw_text(
        &mut self,
        xy: layout::core::geometry::Point,
        text: &str,
        look: &layout::core::style::StyleAttr,
    ) {
        // Centred on xy; a character is well under one font size wide.
        let font = look.font_size as f64;
        let widest = text.lines().map(|l| l.chars().count()).max().unwrap_or(0) as f64;
        let lines = text.lines().count().max(1) as f64;
        self.grow(xy.x + widest * font * 0.5, xy.y + lines * font);
        self.inner.draw_text(xy, text, look);
    }

    fn draw_arrow(
        &mut self,
        path: &[(layout::core::geometry::Point, layout::core::geometry::Point)],
        dashed: bool,
        head: (bool, bool),
        look: &layout::core::style::StyleAttr,
        properties: Option<String>,
        text: &str,
    ) {
        for (a, b) in path {
            self.grow(a.x, a.y);
            self.grow(b.x, b.y);
        }
        self.inner
            .draw_arrow(path, dashed, head, look, properties, text);
    }

    fn create_clip(
        &mut self,
        xy: layout::core::geometry::Point,
        size: layout::core::geometry::Point,
        rounded_px: usize,
    ) -> layout::core::format::ClipHandle {
        self.inner.create_clip(xy, size, rounded_px)
    }
}

/// The system's fonts, loaded once. The generic `serif` family (the one
/// `layout-rs` asks for, after `Times`) is pointed at a font that exists.
fn fonts() -> Arc<usvg::fontdb::Database> {
    static FONTS: OnceLock<Arc<usvg::fontdb::Database>> = OnceLock::new();
    FONTS
        .get_or_init(|| {
            let mut db = usvg::fontdb::Database::new();
            db.load_system_fonts();
            let serif = [usvg::fontdb::Family::Serif];
            let has_serif = db
                .query(&usvg::fontdb::Query {
                    families: &serif,
                    ..Default::default()
                })
                .is_some();
            if !has_serif {
                let families: Vec<String> = db
                    .faces()
                    .filter_map(|f| f.families.first().map(|(n, _)| n.clone()))
                    .collect();
                let pick = [
                    "DejaVu Serif",
                    "Liberation Serif",
                    "Noto Serif",
                    "DejaVu Sans",
                    "Liberation Sans",
                    "Noto Sans",
                ]
                .iter()
                .find(|p| families.iter().any(|f| f == *p))
                .map(|p| p.to_string())
                .or_else(|| families.first().cloned());
                if let Some(p) = pick {
                    db.set_serif_family(p);
                }
            }
            Arc::new(db)
        })
        .clone()
}

/// An SVG (such as [`svg`]'s) as PNG, `scale` times its size, on a white
/// background.
///
/// Text is drawn with the system's fonts (through fontconfig's directories
/// and the usual ones); with none, this fails with [`GraphError::NoFonts`]
/// rather than drawing boxes without names. No font is bundled.
pub fn png(svg: &str, scale: f32) -> Result<Vec<u8>, GraphError> {
    if !scale.is_finite() || scale <= 0.0 || scale > MAX_SCALE {
        return Err(GraphError::Scale(scale));
    }
    let fontdb = fonts();
    if fontdb.is_empty() {
        return Err(GraphError::NoFonts);
    }
    let options = usvg::Options {
        fontdb,
        ..Default::default()
    };
    let tree = usvg::Tree::from_str(svg, &options).map_err(|e| GraphError::Svg(e.to_string()))?;
    let size = tree.size();
    let side = |v: f32| -> u64 { (f64::from(v) * f64::from(scale)).ceil().max(1.0) as u64 };
    let (w, h) = (side(size.width()), side(size.height()));
    if w > u64::from(MAX_SIDE) || h > u64::from(MAX_SIDE) {
        return Err(GraphError::TooLarge {
            width: u32::try_from(w).unwrap_or(u32::MAX),
            height: u32::try_from(h).unwrap_or(u32::MAX),
        });
    }
    let (w, h) = (w as u32, h as u32); // at most MAX_SIDE
    let mut pixmap = tiny_skia::Pixmap::new(w, h).ok_or(GraphError::TooLarge {
        width: w,
        height: h,
    })?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    pixmap
        .encode_png()
        .map_err(|e| GraphError::Encode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::plan::ComponentRef;

    /// A chain (search → fetch → summarize), a fan-out (fetch), a fallback
    /// (fetch → cached), inputs and outputs.
    const RESEARCH: &str = r#"
name = "research"

[inputs.topic]
type = "string"

[steps.search]
component = "search-tool"
function = "search"
args = { query = "${{ .inputs.topic }}" }

[steps.fetch]
component = "fetcher"
function = "fetch"
for_each = ".steps.search.output"
args = { url = "${{ .item }}" }
on_error = "fallback"
fallback = "cached"

[steps.cached]
component = "../components/cache.wasm"
function = "lookup"
args = { topic = "${{ .inputs.topic }}" }

[steps.summarize]
component = "summarizer"
function = "summarize"
args = { pages = "${{ .steps.fetch.output }}" }

[outputs]
summary = "${{ .steps.summarize.output }}"
"#;

    fn research() -> Plan {
        Plan::from_toml(RESEARCH, "research.plan.toml", Path::new("."), "research").unwrap()
    }

    fn record(state: StepState, duration_ms: u64, attempts: u32) -> StepRecord {
        StepRecord {
            state,
            output: serde_json::Value::Null,
            attempts,
            runs: Vec::new(),
            started: String::new(),
            finished: String::new(),
            duration_ms,
            error: None,
            items: None,
        }
    }

    /// The edge lines of a DOT text: (from, to, attributes).
    fn edges(dot: &str) -> Vec<(String, String, String)> {
        dot.lines()
            .filter_map(|l| {
                let l = l.trim().strip_suffix(';')?;
                let (from, rest) = l.split_once(" -> ")?;
                let (to, attrs) = match rest.split_once(" [") {
                    Some((to, attrs)) => (to, attrs.trim_end_matches(']')),
                    None => (rest, ""),
                };
                Some((from.to_string(), to.to_string(), attrs.to_string()))
            })
            .collect()
    }

    /// The `<text>` content of an SVG, tags removed.
    fn svg_text(svg: &str) -> String {
        let mut out = String::new();
        for part in svg.split("<text").skip(1) {
            let body = part.split("</text>").next().unwrap_or("");
            // The rest of the opening tag first.
            let mut in_tag = true;
            for c in body.chars() {
                match c {
                    '<' => in_tag = true,
                    '>' => in_tag = false,
                    c if !in_tag => out.push(c),
                    _ => {}
                }
            }
            out.push('\n');
        }
        out
    }

    #[test]
    fn graph_dot_has_every_step_and_the_right_edges() {
        let dot = dot(&research(), None);
        assert!(dot.starts_with("digraph \"research\" {"), "{dot}");
        for (name, call) in [
            ("search", "search-tool.search"),
            ("fetch", "fetcher.fetch"),
            ("cached", "cache.wasm.lookup"),
            ("summarize", "summarizer.summarize"),
        ] {
            let line = dot
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("\"{name}\" [")))
                .unwrap_or_else(|| panic!("no node {name}: {dot}"));
            assert!(line.contains(&format!("label=\"{name}\\n{call}")), "{line}");
        }
        let fetch = dot.lines().find(|l| l.contains("\"fetch\" [")).unwrap();
        assert!(
            fetch.contains("× each item of .steps.search.output"),
            "{fetch}"
        );
        let search = dot.lines().find(|l| l.contains("\"search\" [")).unwrap();
        assert!(!search.contains("× each"), "{search}");
        // Without a run, no state line and no colour.
        assert!(
            !dot.contains("succeeded") && !dot.contains("not finished"),
            "{dot}"
        );

        let mut got = edges(&dot);
        got.sort();
        let q = |s: &str| format!("\"{s}\"");
        let mut want = vec![
            (q("(inputs)"), q("search"), String::new()),
            (q("search"), q("fetch"), String::new()),
            (q("fetch"), q("summarize"), String::new()),
            (
                q("fetch"),
                q("cached"),
                "style=dashed, label=\"fallback\"".to_string(),
            ),
            (q("summarize"), q("(outputs)"), String::new()),
        ];
        want.sort();
        assert_eq!(got, want, "{dot}");
        assert!(dot.contains("\"(inputs)\" [shape=ellipse"), "{dot}");
        assert!(dot.contains("label=\"inputs\\ntopic\""), "{dot}");
        assert!(dot.contains("label=\"outputs\\nsummary\""), "{dot}");
        assert!(dot.trim_end().ends_with('}'), "{dot}");
    }

    #[test]
    fn graph_dot_escapes_quotes_backslashes_and_line_breaks() {
        let mut plan = research();
        let odd = "say \"hi\" \\ back\nslash";
        plan.name = "the \"best\" plan".into();
        let at = |plan: &Plan, name: &str| plan.steps.iter().position(|s| s.name == name).unwrap();
        let (search, fetch) = (at(&plan, "search"), at(&plan, "fetch"));
        plan.steps[search].name = odd.into();
        plan.steps[search].component = ComponentRef::File {
            path: PathBuf::from("dir/we\"ird\\.wasm"),
            manifest: None,
        };
        plan.steps[fetch].needs = [odd.to_string()].into();
        let dot = dot(&plan, None);
        let quoted = "\"say \\\"hi\\\" \\\\ back slash\"";
        assert!(dot.contains(&format!("  {quoted} [label=")), "{dot}");
        assert!(dot.contains(&format!("  {quoted} -> \"fetch\";")), "{dot}");
        assert!(dot.contains("we\\\"ird\\\\.wasm.search"), "{dot}");
        assert!(
            dot.starts_with("digraph \"the \\\"best\\\" plan\" {"),
            "{dot}"
        );
        // Every line is a whole statement: the name's line break is gone.
        assert!(
            dot.lines().skip(1).all(|l| l == "}" || l.ends_with(';')),
            "{dot}"
        );

        // A DOT parser reads the names back as they were (line break aside).
        let graph = layout::gv::DotParser::new(&dot).process().unwrap();
        let mut ids = Vec::new();
        for st in &graph.list.list {
            if let layout::gv::parser::ast::Stmt::Node(n) = st {
                ids.push(n.id.name.clone());
            }
        }
        assert!(
            ids.contains(&"say \"hi\" \\ back slash".to_string()),
            "{ids:?}"
        );

        // And the picture shows it, XML-escaped.
        let svg = svg(&plan, None).unwrap();
        assert!(svg.contains("say &quot;hi&quot; \\ back slash"), "{svg}");
    }

    #[test]
    fn graph_svg_draws_every_step() {
        let plan = research();
        let svg = svg(&plan, None).unwrap();
        assert!(svg.starts_with("<?xml") || svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("<svg ") && svg.trim_end().ends_with("</svg>"));
        let text = svg_text(&svg);
        for line in [
            "search",
            "search-tool.search",
            "fetch",
            "× each item of .steps.search.output",
            "cached",
            "summarize",
            "inputs",
            "outputs",
            "fallback",
        ] {
            assert!(text.lines().any(|l| l.contains(line)), "{line}: {text}");
        }
        // The dashed fallback arrow is drawn dashed; the others are not.
        assert_eq!(svg.matches("stroke-dasharray").count(), 1, "{svg}");
        // A real XML/SVG parser reads it.
        let tree = usvg::Tree::from_str(&svg, &usvg::Options::default()).unwrap();
        assert!(tree.size().width() > 100.0 && tree.size().height() > 100.0);
        // The picture ends below the lowest box (no band of blank below:
        // layout-rs alone counts a label's length in the height).
        let attr = |tag: &str, name: &str| -> f64 {
            let at = tag.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
            tag[at..].split('"').next().unwrap().parse().unwrap()
        };
        let lowest = svg
            .split("<rect ")
            .skip(2) // the white background
            .map(|r| attr(r, "y") + attr(r, "height"))
            .fold(0.0, f64::max);
        let height = f64::from(tree.size().height());
        assert!(
            lowest > 100.0 && height >= lowest && height < lowest + 40.0,
            "{height} {lowest}"
        );
    }

    fn research_run() -> Vec<(String, Option<StepRecord>)> {
        vec![
            ("search".into(), Some(record(StepState::Succeeded, 120, 1))),
            (
                "fetch".into(),
                Some(StepRecord {
                    items: Some(3),
                    ..record(StepState::FellBack, 2450, 3)
                }),
            ),
            ("cached".into(), Some(record(StepState::Succeeded, 8, 1))),
            ("summarize".into(), None),
        ]
    }

    #[test]
    fn graph_run_shows_states_durations_and_attempts() {
        let plan = research();
        let run = research_run();
        let dot = dot(&plan, Some(&run));
        let node = |name: &str| {
            dot.lines()
                .find(|l| l.trim_start().starts_with(&format!("\"{name}\" [")))
                .unwrap_or_else(|| panic!("no {name}: {dot}"))
                .to_string()
        };
        let (ok_fill, _) = Drawn::Ended(StepState::Succeeded).colours();
        let (fell_fill, _) = Drawn::Ended(StepState::FellBack).colours();
        let search = node("search");
        assert!(
            search.contains("\\nsucceeded · 120 ms · 1 attempt\""),
            "{search}"
        );
        assert!(
            search.contains(&format!("fillcolor=\"{ok_fill}\"")),
            "{search}"
        );
        let fetch = node("fetch");
        assert!(
            fetch.contains("\\nfell back · 2450 ms · 3 attempts · 3 items\""),
            "{fetch}"
        );
        assert!(
            fetch.contains(&format!("fillcolor=\"{fell_fill}\"")),
            "{fetch}"
        );
        let summarize = node("summarize");
        assert!(summarize.contains("\\nnot finished\""), "{summarize}");
        // The fallback taken is marked.
        let fallback = edges(&dot)
            .into_iter()
            .find(|(_, to, _)| to == "\"cached\"")
            .unwrap();
        assert!(fallback.2.contains(TAKEN_FALLBACK), "{fallback:?}");

        // A step missing from the run has not finished; the other states.
        let run = vec![
            ("search".into(), Some(record(StepState::Skipped, 0, 0))),
            ("fetch".into(), Some(record(StepState::Continued, 30, 2))),
            ("cached".into(), Some(record(StepState::Failed, 5, 1))),
        ];
        let dot2 = super::dot(&plan, Some(&run));
        for (word, state) in [
            ("skipped\"", Drawn::Ended(StepState::Skipped)),
            (
                "continued · 30 ms · 2 attempts\"",
                Drawn::Ended(StepState::Continued),
            ),
            (
                "failed · 5 ms · 1 attempt\"",
                Drawn::Ended(StepState::Failed),
            ),
            ("not finished\"", Drawn::NotFinished),
        ] {
            let (fill, border) = state.colours();
            assert!(
                dot2.lines().any(|l| l.contains(word)
                    && l.contains(&format!("fillcolor=\"{fill}\", color=\"{border}\""))),
                "{word}: {dot2}"
            );
        }

        // The SVG carries the words and the colours.
        let svg = svg(&plan, Some(&research_run())).unwrap();
        let text = svg_text(&svg);
        for w in [
            "succeeded · 120 ms · 1 attempt",
            "fell back · 2450 ms · 3 attempts · 3 items",
            "not finished",
        ] {
            assert!(text.contains(w), "{w}: {text}");
        }
        assert!(svg.contains(&format!("fill=\"{ok_fill}ff\"")), "{svg}");
        assert!(svg.contains(&format!("fill=\"{fell_fill}ff\"")), "{svg}");
    }

    /// The text elements of an SVG removed.
    fn without_text(svg: &str) -> String {
        let mut out = String::new();
        let mut rest = svg;
        while let Some(at) = rest.find("<text") {
            out.push_str(&rest[..at]);
            match rest[at..].find("</text>") {
                Some(end) => rest = &rest[at + end + "</text>".len()..],
                None => {
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }

    #[test]
    fn graph_png_is_a_png_with_text() {
        let svg = svg(&research(), Some(&research_run())).unwrap();
        let bytes = png(&svg, 1.0).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(bytes.len() > 5_000, "{} bytes", bytes.len());
        let image = tiny_skia::Pixmap::decode_png(&bytes).unwrap();
        let tree = usvg::Tree::from_str(&svg, &usvg::Options::default()).unwrap();
        assert_eq!(image.width(), tree.size().width().ceil() as u32);
        // Twice the scale, twice the size.
        let big = tiny_skia::Pixmap::decode_png(&png(&svg, 2.0).unwrap()).unwrap();
        assert_eq!(big.width(), (tree.size().width() * 2.0).ceil() as u32);

        // The text is drawn: without it, fewer dark pixels.
        let dark = |p: &tiny_skia::Pixmap| {
            p.pixels()
                .iter()
                .filter(|c| u32::from(c.red()) + u32::from(c.green()) + u32::from(c.blue()) < 200)
                .count()
        };
        let bare = tiny_skia::Pixmap::decode_png(&png(&without_text(&svg), 1.0).unwrap()).unwrap();
        assert_eq!(
            (bare.width(), bare.height()),
            (image.width(), image.height())
        );
        assert!(
            dark(&image) > dark(&bare) + 500,
            "text adds {} dark pixels",
            dark(&image).saturating_sub(dark(&bare))
        );
    }

    #[test]
    fn graph_refuses_bad_input_without_panicking() {
        // No steps.
        let mut plan = research();
        plan.steps.clear();
        assert_eq!(
            svg(&plan, None).unwrap_err(),
            GraphError::Empty {
                plan: "research".into()
            }
        );
        // Plans built by hand: unknown needs, a self-need, a duplicate, a
        // cycle, a fallback its primary needs.
        let mut plan = research();
        let at = |plan: &Plan, name: &str| plan.steps.iter().position(|s| s.name == name).unwrap();
        let (search, fetch, cached) =
            (at(&plan, "search"), at(&plan, "fetch"), at(&plan, "cached"));
        plan.steps[search].needs = ["nowhere".to_string(), "search".to_string()].into();
        plan.steps.push(plan.steps[fetch].clone());
        plan.steps[fetch].needs.insert("cached".into());
        plan.steps[cached].needs.insert("summarize".into());
        let svg_text = svg(&plan, None);
        assert!(
            matches!(&svg_text, Ok(s) if s.contains("</svg>"))
                || matches!(&svg_text, Err(GraphError::Layout { .. })),
            "{svg_text:?}"
        );
        let dot = dot(&plan, None);
        assert!(
            !dot.contains("nowhere") && !dot.contains("\"search\" -> \"search\""),
            "{dot}"
        );

        // PNG: bad scales, bad SVG, too large.
        let good = svg(&research(), None).unwrap();
        for s in [0.0, -1.0, f32::NAN, f32::INFINITY, 100.0] {
            assert!(matches!(png(&good, s), Err(GraphError::Scale(_))), "{s}");
        }
        assert!(matches!(png("not an svg", 1.0), Err(GraphError::Svg(_))));
        let huge = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"20000\" height=\"10\"/>";
        assert!(matches!(
            png(huge, 1.0),
            Err(GraphError::TooLarge { width: 20000, .. })
        ));
        assert!(
            GraphError::NoFonts
                .to_string()
                .contains("fonts-dejavu-core")
        );
    }

    #[test]
    fn graph_draws_a_larger_plan() {
        let mut text = String::from("[inputs.n]\ntype = \"integer\"\n");
        for i in 0..40 {
            let needs = match i {
                0 => String::new(),
                i if i % 5 == 0 => format!("needs = [\"s{}\", \"s{}\"]\n", i - 1, i - 5),
                i => format!("needs = [\"s{}\"]\n", i - 1),
            };
            let _ = write!(
                text,
                "[steps.s{i}]\ncomponent = \"c\"\nfunction = \"f\"\n{needs}"
            );
        }
        let plan = Plan::from_toml(&text, "big", Path::new("."), "big").unwrap();
        let svg = svg(&plan, None).unwrap();
        let text = svg_text(&svg);
        for i in 0..40 {
            assert!(text.lines().any(|l| l == format!("s{i}c.f")), "s{i}");
        }
    }
}
