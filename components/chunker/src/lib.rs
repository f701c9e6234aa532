//! `chunker`: documents cut into passages (`tessera:retrieval/chunker`).
//!
//! The splitting is the `text-splitter` crate's: it cuts at the largest
//! semantic level that fits in the budget — for Markdown headings, then
//! blocks, paragraphs, sentences (Unicode's rules), words and graphemes —
//! and overlaps consecutive passages. The headings each passage sits under
//! come from pulldown-cmark, the parser text-splitter itself reads Markdown
//! with.

wit_bindgen::generate!({
    world: "chunker-provider",
    path: "wit",
});

use exports::tessera::retrieval::chunker::{Format, Guest, Piece};
use pulldown_cmark::{Event, Parser, Tag, TagEnd};
use text_splitter::{ChunkConfig, MarkdownSplitter, TextSplitter};

/// The component's single implementation type.
struct Component;

/// A heading of a Markdown document: where it starts, its level and title.
struct Heading {
    start: usize,
    level: u8,
    title: String,
}

/// The document's headings in order.
fn headings(text: &str) -> Vec<Heading> {
    let mut out = Vec::new();
    let mut open: Option<Heading> = None;
    for (event, range) in Parser::new(text).into_offset_iter() {
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                open = Some(Heading {
                    start: range.start,
                    level: level as u8,
                    title: String::new(),
                });
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some(mut h) = open.take() {
                    h.title = h.title.trim().to_string();
                    out.push(h);
                }
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = open.as_mut() {
                    h.title.push_str(&t);
                }
            }
            Event::SoftBreak | Event::HardBreak => {
                if let Some(h) = open.as_mut() {
                    h.title.push(' ');
                }
            }
            _ => {}
        }
    }
    out
}

/// The titles of the headings in effect at byte `offset`, outermost first.
fn path_at(headings: &[Heading], offset: usize) -> Vec<String> {
    let mut stack: Vec<&Heading> = Vec::new();
    for h in headings.iter().take_while(|h| h.start <= offset) {
        while stack.last().is_some_and(|top| top.level >= h.level) {
            stack.pop();
        }
        stack.push(h);
    }
    stack.into_iter().map(|h| h.title.clone()).collect()
}

fn offset(n: usize) -> Result<u32, String> {
    u32::try_from(n).map_err(|_| "the document is larger than 4 GiB".to_string())
}

impl Guest for Component {
    fn chunk(
        document: String,
        text: String,
        format: Format,
        max_chars: u32,
        overlap: u32,
    ) -> Result<Vec<Piece>, String> {
        if max_chars == 0 {
            return Err("`max-chars` must be at least 1".into());
        }
        let config = ChunkConfig::new(max_chars as usize)
            .with_overlap(overlap as usize)
            .map_err(|_| {
                format!("`overlap` ({overlap}) must be smaller than `max-chars` ({max_chars})")
            })?;
        let pieces: Vec<(usize, &str)> = match format {
            Format::Plain => TextSplitter::new(config).chunk_indices(&text).collect(),
            Format::Markdown => MarkdownSplitter::new(config).chunk_indices(&text).collect(),
        };
        let heads = match format {
            Format::Plain => Vec::new(),
            Format::Markdown => headings(&text),
        };
        pieces
            .into_iter()
            .enumerate()
            .map(|(n, (start, piece))| {
                Ok(Piece {
                    id: format!("{document}#{n}"),
                    text: piece.to_string(),
                    start: offset(start)?,
                    end: offset(start + piece.len())?,
                    headings: path_at(&heads, start),
                })
            })
            .collect()
    }
}

export!(Component);
