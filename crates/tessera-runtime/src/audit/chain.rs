//! The audit log's hash chain: every line names the line before it, so a
//! line changed, removed, inserted or reordered afterwards is found by
//! [`verify`], which names the first such line.
//!
//! A chained line is the event's JSON object with three more members:
//!
//! - `seq`: 0 for the first chained line of the file, then one more per
//!   line;
//! - `prev`: the `hash` of the line before ([`GENESIS`] for the first);
//! - `hash`, always last: the SHA-256 (hex) of the line's own text without
//!   it, that is of the text up to `,"hash":` with `}` in its place.
//!
//! So a line's hash covers its content, its position (`seq`) and, through
//! `prev`, every line before it. Lines written before the log was chained
//! (no `hash`) may only precede the chain: [`verify`] counts them as
//! `unchained` and checks everything after.
//!
//! Several processes may append to the same file (the CLI and a server
//! share `<data>/audit.jsonl`): each append takes an exclusive lock on the
//! file, and a writer whose file grew since its last append reads the new
//! last line before it chains to it.
//!
//! What the chain cannot show by itself: lines cut from the end, or a log
//! rewritten whole with fresh hashes. Both need a copy of the chain's head
//! (`hash` of the last line, which `tessera audit verify` prints) kept
//! elsewhere; [`verify`] reports the head for that.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The `prev` of the first chained line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What comes before a line's hash: `,"hash":"`.
const HASH_KEY: &str = ",\"hash\":\"";

/// The end of a chained line after its key: 64 hex digits, `"}`.
const HASH_TAIL: usize = 64 + 2;

/// Where a chain stands: the next line's `seq` and `prev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) seq: u64,
    pub(crate) prev: String,
}

impl Head {
    /// Where an empty log starts.
    pub(crate) fn start() -> Self {
        Self {
            seq: 0,
            prev: GENESIS.to_string(),
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Seals `event` (a JSON object) as the line after `head`: returns the
/// line (without newline) and its hash.
pub(crate) fn seal(mut event: Map<String, Value>, head: &Head) -> (String, String) {
    event.remove("hash");
    event.insert("seq".into(), Value::from(head.seq));
    event.insert("prev".into(), Value::from(head.prev.clone()));
    let body = Value::Object(event).to_string();
    let hash = sha256_hex(body.as_bytes());
    let mut line = String::with_capacity(body.len() + HASH_KEY.len() + HASH_TAIL);
    line.push_str(&body[..body.len() - 1]);
    line.push_str(HASH_KEY);
    line.push_str(&hash);
    line.push_str("\"}");
    (line, hash)
}

/// A line of the log, as read.
#[derive(Debug)]
enum Line {
    /// A chained line; `intact`: its hash matches its text.
    Chained {
        seq: u64,
        prev: String,
        hash: String,
        intact: bool,
    },
    /// A JSON object without a hash: written before the chain.
    Unchained,
    /// Anything else (not JSON, a line cut short, a hash field that is
    /// not where it belongs).
    Malformed(String),
}

fn parse(text: &str) -> Line {
    let Some(hash_at) = text
        .len()
        .checked_sub(HASH_KEY.len() + HASH_TAIL)
        .filter(|&at| text.is_char_boundary(at) && text[at..].starts_with(HASH_KEY))
    else {
        return match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) if m.contains_key("hash") => {
                Line::Malformed("its `hash` is not the line's last member".into())
            }
            Ok(Value::Object(_)) => Line::Unchained,
            Ok(_) => Line::Malformed("not a JSON object".into()),
            Err(e) => Line::Malformed(format!("not JSON: {e}")),
        };
    };
    let hash = &text[hash_at + HASH_KEY.len()..text.len() - 2];
    if !text.ends_with("\"}") || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Line::Malformed("its `hash` is not 64 hex digits".into());
    }
    let body = format!("{}}}", &text[..hash_at]);
    let fields = match serde_json::from_str::<Value>(&body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Line::Malformed("not a JSON object".into()),
        Err(e) => return Line::Malformed(format!("not JSON: {e}")),
    };
    let (Some(seq), Some(prev)) = (
        fields.get("seq").and_then(Value::as_u64),
        fields.get("prev").and_then(Value::as_str),
    ) else {
        return Line::Malformed("a `hash` without a whole-number `seq` and a string `prev`".into());
    };
    Line::Chained {
        seq,
        prev: prev.to_string(),
        hash: hash.to_string(),
        intact: sha256_hex(body.as_bytes()) == hash,
    }
}

/// The head after `last`, the file's last line (`None`: the file is
/// empty). An unchained or malformed last line starts a new chain: the
/// next append is `seq` 0, and [`verify`] reports a malformed one.
pub(crate) fn head_after(last: Option<&[u8]>) -> Head {
    let Some(text) = last.and_then(|l| std::str::from_utf8(l).ok()) else {
        return Head::start();
    };
    match parse(text) {
        Line::Chained { seq, hash, .. } => Head {
            seq: seq + 1,
            prev: hash,
        },
        Line::Unchained | Line::Malformed(_) => Head::start(),
    }
}

/// The last line of `file` (`len` bytes long), without its newline, and
/// whether the file ends with a newline. `None` for an empty file.
pub(crate) fn last_line(file: &File, len: u64) -> std::io::Result<Option<(Vec<u8>, bool)>> {
    if len == 0 {
        return Ok(None);
    }
    let mut end = len;
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    let complete = last[0] == b'\n';
    if complete {
        end -= 1;
    }
    // Read backwards in chunks until the newline before the last line.
    let mut tail: Vec<u8> = Vec::new();
    let mut at = end;
    while at > 0 {
        let n = at.min(8192);
        let mut chunk = vec![0u8; n as usize];
        file.read_exact_at(&mut chunk, at - n)?;
        at -= n;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            chunk.drain(..=i);
            chunk.extend_from_slice(&tail);
            return Ok(Some((chunk, complete)));
        }
        chunk.extend_from_slice(&tail);
        tail = chunk;
    }
    Ok(Some((tail, complete)))
}

/// What [`verify`] found wrong first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// The line's text is not what was written (its hash does not match,
    /// or the next line links to a different line).
    Changed,
    /// Lines are missing before this one.
    Removed,
    /// This line was not written in this place (a copy of another line, a
    /// line without a hash inside the chain, a second chain start).
    Inserted,
    /// This line is out of order (a line of the chain that belongs later).
    Reordered,
    /// The line is not an audit line at all (not JSON, cut short).
    Malformed,
}

/// The first line that breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The line, counted from 1.
    pub line: u64,
    /// What is wrong with it.
    pub kind: ProblemKind,
    /// In words.
    pub detail: String,
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Lines in the file.
    pub lines: u64,
    /// Lines before the chain starts, written without a hash (by a version
    /// that did not chain the log); not verifiable.
    pub unchained: u64,
    /// The `hash` of the last chained line, if the chain is intact up to
    /// it: keep it elsewhere to show later that no line was cut from the
    /// end.
    pub head: Option<String>,
    /// The `seq` of the last chained line.
    pub last_seq: Option<u64>,
    /// The first problem, if any (`None`: the chain is intact).
    pub problem: Option<Problem>,
}

impl Report {
    /// Whether the chain is intact.
    pub fn intact(&self) -> bool {
        self.problem.is_none()
    }
}

/// Reads the audit log at `path` and checks its chain line by line.
pub fn verify(path: &Path) -> std::io::Result<Report> {
    let file = File::open(path)?;
    verify_from(BufReader::new(file))
}

/// Whether a chained line of the log at `path` has the hash `head` (a
/// head printed by an earlier [`verify`]): if not, lines were cut from the
/// end since, or the log was rewritten.
pub fn holds(path: &Path, head: &str) -> std::io::Result<bool> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(false);
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        if let Ok(text) = std::str::from_utf8(&buf)
            && let Line::Chained {
                hash, intact: true, ..
            } = parse(text)
            && hash.eq_ignore_ascii_case(head.trim())
        {
            return Ok(true);
        }
    }
}

/// [`verify`] over any reader of the log's bytes.
pub fn verify_from(mut reader: impl BufRead) -> std::io::Result<Report> {
    let mut lines = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        let complete = buf.last() == Some(&b'\n');
        if complete {
            buf.pop();
        }
        let line = match std::str::from_utf8(&buf) {
            Ok(_) if !complete => Line::Malformed("the line is cut short (no newline)".into()),
            Ok(text) => parse(text),
            Err(_) => Line::Malformed("not UTF-8".into()),
        };
        lines.push(line);
    }
    Ok(check(&lines))
}

/// What [`verify_checkpoints`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckpointReport {
    /// Checkpoint lines whose signature holds.
    pub valid: u64,
    /// The line (counted from 1) of the last valid checkpoint.
    pub last_line: Option<u64>,
    /// The `seq` of the last valid checkpoint.
    pub last_seq: Option<u64>,
    /// The keys (by name) that signed them.
    pub signed_by: Vec<String>,
    /// Lines after the last valid checkpoint (not yet covered by a
    /// signature).
    pub lines_after: u64,
    /// The first checkpoint that does not hold, or the absence of any.
    pub problem: Option<Problem>,
}

/// Checks every checkpoint line of the log at `path`
/// ([`super::JsonLinesAudit::checkpoint`]): each must sign, with one of
/// `keys`, the hash of the line just before it. Run it on a log whose
/// chain [`verify`] found intact; a log without any checkpoint is a
/// problem too (nothing in it is signed).
pub fn verify_checkpoints(
    path: &Path,
    keys: &[crate::trust::PublicKey],
) -> std::io::Result<CheckpointReport> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut report = CheckpointReport {
        valid: 0,
        last_line: None,
        last_seq: None,
        signed_by: Vec::new(),
        lines_after: 0,
        problem: None,
    };
    let mut buf = Vec::new();
    let mut n = 0u64;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        n += 1;
        report.lines_after += 1;
        let Ok(text) = std::str::from_utf8(&buf) else {
            continue;
        };
        let Ok(Value::Object(m)) = serde_json::from_str::<Value>(text.trim_end()) else {
            continue;
        };
        if m.get("capability").and_then(Value::as_str) != Some(super::CHECKPOINT) {
            continue;
        }
        let bad = |detail: String| Problem {
            line: n,
            kind: ProblemKind::Changed,
            detail,
        };
        let target = m.get("target").and_then(Value::as_str).unwrap_or("");
        let prev = m.get("prev").and_then(Value::as_str).unwrap_or("");
        let found = if target != prev {
            Err(bad(format!(
                "the checkpoint signs {target}, not the line before it ({prev})"
            )))
        } else {
            m.get("detail")
                .and_then(Value::as_str)
                .and_then(|d| serde_json::from_str::<crate::trust::ContentSignature>(d).ok())
                .ok_or_else(|| bad("the checkpoint carries no signature".into()))
                .and_then(|sig| {
                    crate::trust::keys::verify_content(
                        super::CHECKPOINT_PURPOSE,
                        target.as_bytes(),
                        &sig,
                        keys,
                    )
                    .map_err(|e| bad(format!("checkpoint signature: {e}")))
                })
        };
        match found {
            Ok(key) => {
                report.valid += 1;
                report.last_line = Some(n);
                report.last_seq = m.get("seq").and_then(Value::as_u64);
                if !report.signed_by.contains(&key.name) {
                    report.signed_by.push(key.name.clone());
                }
                report.lines_after = 0;
            }
            Err(p) => {
                report.problem.get_or_insert(p);
            }
        }
    }
    if report.valid == 0 && report.problem.is_none() {
        report.problem = Some(Problem {
            line: n + 1,
            kind: ProblemKind::Removed,
            detail: "no signed checkpoint: nothing in the log is signed (run `tessera audit sign`)"
                .into(),
        });
    }
    Ok(report)
}

fn check(lines: &[Line]) -> Report {
    let seqs: Vec<Option<u64>> = lines
        .iter()
        .map(|l| match l {
            Line::Chained { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    let mut report = Report {
        lines: lines.len() as u64,
        unchained: 0,
        head: None,
        last_seq: None,
        problem: None,
    };
    let problem = |i: usize, kind: ProblemKind, detail: String| Problem {
        line: i as u64 + 1,
        kind,
        detail,
    };
    let mut head: Option<Head> = None;
    let mut seen_hashes: HashSet<&str> = HashSet::new();
    for (i, line) in lines.iter().enumerate() {
        let found = match (line, &head) {
            (Line::Unchained, None) => {
                report.unchained += 1;
                None
            }
            (Line::Unchained, Some(_)) => Some(problem(
                i,
                ProblemKind::Inserted,
                "a line without a hash inside the chain".into(),
            )),
            (Line::Malformed(why), _) => Some(problem(i, ProblemKind::Malformed, why.clone())),
            (Line::Chained { intact: false, .. }, _) => Some(problem(
                i,
                ProblemKind::Changed,
                "its text does not match its hash".into(),
            )),
            (
                Line::Chained {
                    seq, prev, hash, ..
                },
                expected,
            ) => {
                let expected = expected.clone().unwrap_or_else(Head::start);
                if *seq == expected.seq && *prev == expected.prev {
                    None
                } else if *seq == expected.seq {
                    // In place, but linked to a line that is not the one
                    // before: that line was rewritten (hash and all).
                    Some(if i == 0 || head.is_none() {
                        problem(
                            i,
                            ProblemKind::Removed,
                            "the chain's first line links to a line that is not there".into(),
                        )
                    } else {
                        problem(
                            i - 1,
                            ProblemKind::Changed,
                            format!(
                                "line {} links to a different line {} (hash {prev}, not {})",
                                i + 1,
                                i,
                                expected.prev
                            ),
                        )
                    })
                } else if *seq > expected.seq {
                    let later = seqs[i + 1..]
                        .iter()
                        .flatten()
                        .any(|s| (expected.seq..*seq).contains(s));
                    Some(if later {
                        problem(
                            i,
                            ProblemKind::Reordered,
                            format!(
                                "seq {seq} where {} belongs (that line comes later)",
                                expected.seq
                            ),
                        )
                    } else {
                        problem(
                            i,
                            ProblemKind::Removed,
                            format!(
                                "{} line(s) removed before it (seq {} to {})",
                                seq - expected.seq,
                                expected.seq,
                                seq - 1
                            ),
                        )
                    })
                } else {
                    let copy = seen_hashes.contains(hash.as_str());
                    Some(problem(
                        i,
                        if copy || *seq == 0 {
                            ProblemKind::Inserted
                        } else {
                            ProblemKind::Reordered
                        },
                        if copy {
                            format!("a copy of the line with seq {seq}")
                        } else {
                            format!("seq {seq} where {} belongs", expected.seq)
                        },
                    ))
                }
            }
        };
        if let Some(p) = found {
            report.problem = Some(p);
            return report;
        }
        if let Line::Chained { seq, hash, .. } = line {
            seen_hashes.insert(hash);
            head = Some(Head {
                seq: seq + 1,
                prev: hash.clone(),
            });
            report.head = Some(hash.clone());
            report.last_seq = Some(*seq);
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u64) -> Map<String, Value> {
        let Value::Object(m) = serde_json::json!({
            "time": format!("2026-12-07T10:00:{n:02}Z"),
            "component": "sha256:abc",
            "function": "f",
            "capability": "http",
            "target": format!("https://example.com/{n}"),
            "decision": "deny",
        }) else {
            unreachable!()
        };
        m
    }

    /// `n` chained lines.
    fn log(n: u64) -> Vec<String> {
        let mut head = Head::start();
        (0..n)
            .map(|i| {
                let (line, hash) = seal(event(i), &head);
                head = Head {
                    seq: i + 1,
                    prev: hash,
                };
                line
            })
            .collect()
    }

    fn verify_lines(lines: &[String]) -> Report {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        verify_from(text.as_bytes()).unwrap()
    }

    fn first(lines: &[String]) -> (u64, ProblemKind) {
        let r = verify_lines(lines);
        let p = r
            .problem
            .clone()
            .unwrap_or_else(|| panic!("no problem found: {r:?}"));
        (p.line, p.kind)
    }

    #[test]
    fn an_intact_chain_verifies_and_reports_its_head() {
        let lines = log(5);
        let r = verify_lines(&lines);
        assert!(r.intact(), "{r:?}");
        assert_eq!((r.lines, r.unchained, r.last_seq), (5, 0, Some(4)));
        let last: Value = serde_json::from_str(&lines[4]).unwrap();
        assert_eq!(r.head.as_deref(), last["hash"].as_str());
        // Each line is still the event, readable as JSON, hash last.
        assert_eq!(last["target"], "https://example.com/4");
        assert!(lines[4].ends_with(&format!("\"hash\":\"{}\"}}", r.head.unwrap())));
        assert!(verify_lines(&[]).intact());
    }

    #[test]
    fn a_changed_line_is_named() {
        let mut lines = log(5);
        lines[2] = lines[2].replace("example.com/2", "example.org/2");
        assert_eq!(first(&lines), (3, ProblemKind::Changed));
    }

    #[test]
    fn a_line_rewritten_with_a_fresh_hash_is_named_by_the_next_lines_link() {
        let mut lines = log(5);
        let mut forged = event(2);
        forged.insert("decision".into(), "allow".into());
        let (line, _) = seal(
            forged,
            &Head {
                seq: 2,
                prev: serde_json::from_str::<Value>(&lines[1]).unwrap()["hash"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            },
        );
        lines[2] = line;
        assert_eq!(first(&lines), (3, ProblemKind::Changed));
    }

    #[test]
    fn removed_inserted_and_reordered_lines_are_named() {
        let lines = log(6);
        let mut removed = lines.clone();
        removed.remove(2);
        assert_eq!(first(&removed), (3, ProblemKind::Removed));
        let mut inserted = lines.clone();
        inserted.insert(4, lines[1].clone());
        assert_eq!(first(&inserted), (5, ProblemKind::Inserted));
        let mut swapped = lines.clone();
        swapped.swap(2, 3);
        assert_eq!(first(&swapped), (3, ProblemKind::Reordered));
        let mut unhashed = lines.clone();
        unhashed.insert(3, serde_json::to_string(&event(9)).unwrap());
        assert_eq!(first(&unhashed), (4, ProblemKind::Inserted));
        let mut restarted = lines.clone();
        restarted.extend(log(2));
        assert_eq!(first(&restarted), (7, ProblemKind::Inserted));
        let mut cut = lines.clone();
        cut.drain(..2);
        assert_eq!(first(&cut), (1, ProblemKind::Removed));
        let mut garbage = lines;
        garbage[1] = "not json".into();
        assert_eq!(first(&garbage), (2, ProblemKind::Malformed));
    }

    #[test]
    fn lines_from_before_the_chain_are_counted_and_a_cut_line_is_malformed() {
        let mut lines = vec![
            serde_json::to_string(&event(7)).unwrap(),
            serde_json::to_string(&event(8)).unwrap(),
        ];
        lines.extend(log(3));
        let r = verify_lines(&lines);
        assert!(r.intact(), "{r:?}");
        assert_eq!((r.lines, r.unchained), (5, 2));
        let text = format!("{}\n{}", lines[2], &lines[3][..20]);
        let r = verify_from(text.as_bytes()).unwrap();
        assert_eq!(
            r.problem.map(|p| (p.line, p.kind)),
            Some((2, ProblemKind::Malformed))
        );
    }

    #[test]
    fn the_head_after_a_last_line_continues_the_chain() {
        let lines = log(3);
        let h = head_after(Some(lines[2].as_bytes()));
        assert_eq!(h.seq, 3);
        assert_eq!(
            Some(h.prev.as_str()),
            serde_json::from_str::<Value>(&lines[2]).unwrap()["hash"].as_str()
        );
        assert_eq!(head_after(None), Head::start());
        assert_eq!(head_after(Some(b"{\"old\":1}")), Head::start());
    }
}
