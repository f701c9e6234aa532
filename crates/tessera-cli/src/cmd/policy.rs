//! `tessera policy`: check boundary policies (`validate`), test them
//! against expected decisions (`test`), and see what a changed policy set
//! would have decided differently in recorded runs (`what-if`). Reference:
//! docs/policies.md.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::json;
use tessera_runtime::policy::{Caller, Interaction, Policies, PolicyEngine, PolicyError, Verdict};

use crate::exit;
use crate::failure::{Failure, Outcome, finish};
use crate::setup::GlobalArgs;

/// Subcommands of `tessera policy`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Parse the policies of a directory (or one `.cedar` file) and its
    /// `quotas.toml`, and check every policy against Tessera's schema:
    /// each problem is reported with its file, line and column.
    Validate {
        /// The policy directory or file.
        policies: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Put the requests of a test file to the policies, in order (quotas
    /// count across them), and compare each decision with the expected one.
    Test {
        /// The policy directory or file.
        policies: PathBuf,
        /// The test file (YAML; see docs/policies.md).
        tests: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replay recorded runs offline and put every interaction they made to
    /// a changed policy set and to the set in force: report each decision
    /// that would change. Nothing outside is contacted.
    WhatIf {
        /// The changed policies (directory or file).
        policies: PathBuf,
        /// The runs to evaluate (repeatable; default: every run in the
        /// journal).
        #[arg(long = "run", value_name = "ID")]
        runs: Vec<String>,
        /// What to compare with (default: the policies in force, `--policy`
        /// or `<data>/policies`; with none, the grants alone: everything
        /// recorded as allowed).
        #[arg(long, value_name = "DIR")]
        baseline: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the subcommand and returns the exit code.
pub async fn run(global: &GlobalArgs, command: Command) -> i32 {
    match command {
        Command::Validate { policies, json } => finish(validate(&policies, json), json),
        Command::Test {
            policies,
            tests,
            json,
        } => finish(test(&policies, &tests, json), json),
        Command::WhatIf {
            policies,
            runs,
            baseline,
            json,
        } => finish(
            what_if(global, &policies, &runs, baseline.as_deref(), json).await,
            json,
        ),
    }
}

/// A policy set that does not load, as a failure naming each problem.
fn load_failure(e: PolicyError) -> Failure {
    match e {
        PolicyError::Invalid(problems) => {
            let listed: Vec<serde_json::Value> = problems
                .iter()
                .map(|p| {
                    json!({
                        "file": p.file.display().to_string(),
                        "line": p.line,
                        "column": p.column,
                        "message": p.message,
                    })
                })
                .collect();
            Failure::bad_input(
                "policy",
                format!(
                    "{} problem{} in the policies:\n{}",
                    problems.len(),
                    if problems.len() == 1 { "" } else { "s" },
                    problems
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            )
            .with("problems", listed)
        }
        other => Failure::bad_input("policy", other.to_string()),
    }
}

fn validate(path: &Path, json: bool) -> Outcome {
    let policies = Policies::load(path).map_err(load_failure)?;
    if json {
        let v = json!({
            "ok": true,
            "policies": policies.ids(),
            "quotas": policies.quotas().iter().map(|q| q.id.clone()).collect::<Vec<_>>(),
            "warnings": policies.warnings().iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        for w in policies.warnings() {
            println!("warning: {w}");
        }
        println!(
            "ok: {} policies and {} quotas in {}, checked against Tessera's schema",
            policies.len(),
            policies.quotas().len(),
            path.display()
        );
    }
    Ok(exit::OK)
}

// ------------------------------------------------------------------ test

/// One case of a test file.
struct Case {
    name: String,
    caller: Caller,
    interaction: Interaction,
    expect: bool,
    policies: Option<Vec<String>>,
    repeat: u64,
    tokens: u64,
    advance: Duration,
}

const INTERACTIONS: &[&str] = &["http", "file", "kv", "llm", "nn", "tool"];
const CASE_KEYS: &[&str] = &[
    "name", "caller", "expect", "policies", "repeat", "tokens", "advance",
];

/// Reads a test file: a YAML list of cases.
fn read_cases(path: &Path) -> Result<Vec<Case>, Failure> {
    use serde_yaml_ng::Value;
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::bad_input(
            "policy_tests",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let doc: Value = serde_yaml_ng::from_str(&text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(":{}:{}", l.line(), l.column()))
            .unwrap_or_default();
        Failure::bad_input("policy_tests", format!("{}{at}: {e}", path.display()))
    })?;
    let Value::Sequence(items) = doc else {
        return Err(Failure::bad_input(
            "policy_tests",
            format!("{}: expected a list of test cases", path.display()),
        ));
    };
    let mut cases = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let fail = |m: String| {
            Failure::bad_input(
                "policy_tests",
                format!("{}: test {} ({}): {m}", path.display(), i + 1, "case"),
            )
            .with("test", i + 1)
        };
        let Value::Mapping(map) = item else {
            return Err(fail("expected a mapping".into()));
        };
        let name = map
            .get("name")
            .and_then(Value::as_str)
            .map_or_else(|| format!("test {}", i + 1), str::to_string);
        let fail = |m: String| {
            Failure::bad_input(
                "policy_tests",
                format!("{}: test {} (`{name}`): {m}", path.display(), i + 1),
            )
            .with("test", i + 1)
        };
        for key in map.keys() {
            let k = key.as_str().unwrap_or_default();
            if !CASE_KEYS.contains(&k) && !INTERACTIONS.contains(&k) {
                return Err(fail(format!(
                    "unknown key `{k}` (expected {} and one of {})",
                    CASE_KEYS.join(", "),
                    INTERACTIONS.join(", ")
                )));
            }
        }
        // Through JSON: serde_yaml_ng reads an externally tagged enum only
        // from a YAML tag, and these are plain mappings.
        let as_json = |v: &Value| serde_json::to_value(v).map_err(|e| e.to_string());
        let caller: Caller = match map.get("caller") {
            None => {
                return Err(fail(
                    "`caller` is missing (`caller: {component: name}`)".into(),
                ));
            }
            Some(v) => as_json(v)
                .and_then(|j| serde_json::from_value(j).map_err(|e| e.to_string()))
                .map_err(|e| fail(format!("caller: {e}")))?,
        };
        let given: Vec<&str> = INTERACTIONS
            .iter()
            .copied()
            .filter(|k| map.contains_key(*k))
            .collect();
        let interaction: Interaction = match given.as_slice() {
            [kind] => as_json(&map[*kind])
                .and_then(|j| {
                    serde_json::from_value(serde_json::json!({ *kind: j }))
                        .map_err(|e| e.to_string())
                })
                .map_err(|e| fail(format!("{kind}: {e}")))?,
            _ => {
                return Err(fail(format!(
                    "give exactly one request: one of {}",
                    INTERACTIONS.join(", ")
                )));
            }
        };
        let expect = match map.get("expect").and_then(Value::as_str) {
            Some("allow") => true,
            Some("deny") => false,
            _ => return Err(fail("`expect` must be `allow` or `deny`".into())),
        };
        let policies = match map.get("policies") {
            None => None,
            Some(v) => Some(
                serde_yaml_ng::from_value::<Vec<String>>(v.clone())
                    .map_err(|e| fail(format!("policies: {e}")))?,
            ),
        };
        let number = |key: &str| -> Result<u64, Failure> {
            match map.get(key) {
                None => Ok(0),
                Some(v) => v
                    .as_u64()
                    .ok_or_else(|| fail(format!("`{key}` must be a whole number"))),
            }
        };
        let repeat = number("repeat")?.max(1);
        let tokens = number("tokens")?;
        let advance = match map.get("advance") {
            None => Duration::ZERO,
            Some(v) => {
                let text = v.as_str().unwrap_or_default();
                humantime::parse_duration(text)
                    .map_err(|e| fail(format!("advance `{text}`: {e}")))?
            }
        };
        cases.push(Case {
            name,
            caller,
            interaction,
            expect,
            policies,
            repeat,
            tokens,
            advance,
        });
    }
    Ok(cases)
}

/// A clock that only moves when told to.
fn frozen(start: SystemTime) -> (Arc<Mutex<SystemTime>>, tessera_runtime::policy::Clock) {
    let now = Arc::new(Mutex::new(start));
    let read = now.clone();
    let clock: tessera_runtime::policy::Clock =
        Arc::new(move || *read.lock().unwrap_or_else(|p| p.into_inner()));
    (now, clock)
}

fn test(policies: &Path, tests: &Path, json: bool) -> Outcome {
    let loaded = Policies::load(policies).map_err(load_failure)?;
    let cases = read_cases(tests)?;
    // Quota windows are read from a clock that moves only by `advance`:
    // a test file gives the same decisions whenever it runs.
    let (now, clock) = frozen(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let engine = PolicyEngine::new(loaded).with_clock(clock);
    let mut results = Vec::new();
    let mut failed = 0usize;
    for (i, case) in cases.iter().enumerate() {
        {
            let mut t = now.lock().unwrap_or_else(|p| p.into_inner());
            *t += case.advance;
        }
        let mut problem = None;
        let mut last: Option<Verdict> = None;
        for n in 0..case.repeat {
            let verdict = engine.authorize(&case.caller, &case.interaction);
            if verdict.allowed && case.tokens > 0 {
                engine.charge(&case.caller, &case.interaction, case.tokens);
            }
            let decided = if verdict.allowed { "allow" } else { "deny" };
            if verdict.allowed != case.expect {
                problem = Some(format!(
                    "expected {}, got {decided}{}{}",
                    if case.expect { "allow" } else { "deny" },
                    if case.repeat > 1 {
                        format!(" on repeat {}", n + 1)
                    } else {
                        String::new()
                    },
                    verdict
                        .reason
                        .as_ref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ));
            } else if let Some(want) = &case.policies {
                let mut want = want.clone();
                want.sort();
                if want != verdict.policies {
                    problem = Some(format!(
                        "decided by {:?}, expected {:?}",
                        verdict.policies, want
                    ));
                }
            }
            last = Some(verdict);
            if problem.is_some() {
                break;
            }
        }
        if problem.is_some() {
            failed += 1;
        }
        if !json {
            match &problem {
                None => println!("ok    {:>3} {}", i + 1, case.name),
                Some(p) => println!("FAIL  {:>3} {}: {p}", i + 1, case.name),
            }
        }
        results.push(json!({
            "test": i + 1,
            "name": case.name,
            "action": case.interaction.action(),
            "passed": problem.is_none(),
            "problem": problem,
            "verdict": last,
        }));
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "tests": results.len(),
                "passed": results.len() - failed,
                "failed": failed,
                "results": results,
            }))
            .unwrap_or_default()
        );
    } else {
        println!(
            "{} tests: {} passed, {} failed",
            results.len(),
            results.len() - failed,
            failed
        );
    }
    Ok(if failed == 0 { exit::OK } else { exit::CHANGED })
}

// ------------------------------------------------------------------ what-if

async fn what_if(
    global: &GlobalArgs,
    candidate_dir: &Path,
    runs: &[String],
    baseline: Option<&Path>,
    json: bool,
) -> Outcome {
    let candidate = Policies::load(candidate_dir).map_err(load_failure)?;
    let baseline_dir = baseline
        .map(Path::to_path_buf)
        .or_else(|| global.policy_dir());
    let baseline = match &baseline_dir {
        Some(dir) => Some(Policies::load(dir).map_err(load_failure)?),
        None => None,
    };
    // Quotas are counted at the time each run was recorded.
    let (now, clock) = frozen(SystemTime::now());
    let candidate = PolicyEngine::new(candidate).with_clock(clock.clone());
    let baseline = baseline.map(|b| PolicyEngine::new(b).with_clock(clock));

    // The replays' host sees every interaction and decides nothing.
    let collector = Arc::new(PolicyEngine::collector());
    if global.policy_engine.set(Some(collector.clone())).is_err() {
        return Err(Failure::internal(
            "setup",
            "the policy engine was already set",
        ));
    }
    let runtime = global.runtime_checked(false)?;
    let store = global
        .journal()
        .map_err(|e| Failure::internal("journal", e))?;

    let mut ids = Vec::new();
    if runs.is_empty() {
        let mut all = store
            .list()
            .map_err(|e| Failure::internal("journal", e.to_string()))?;
        all.sort_by(|a, b| a.header.started.cmp(&b.header.started));
        ids.extend(all.into_iter().map(|r| r.header.run_id));
    } else {
        for r in runs {
            ids.push(
                store
                    .resolve(r)
                    .map_err(|e| crate::failure::journal_failure(&e).with("run", r.as_str()))?,
            );
        }
    }

    let mut changes = Vec::new();
    let mut skipped = Vec::new();
    let mut evaluated = 0usize;
    let mut interactions = 0usize;
    for id in &ids {
        let header = match store.header(id) {
            Ok(h) => h,
            Err(e) => {
                skipped.push(json!({"run": id, "why": e.to_string()}));
                continue;
            }
        };
        if header.session.is_some() {
            skipped.push(json!({"run": id, "why": "a session's run (its state depends on the session's earlier runs)"}));
            continue;
        }
        collector.take_seen();
        if let Err(e) = tessera_journal::replay(&runtime, &store, id, None).await {
            skipped.push(json!({"run": id, "why": e.to_string()}));
            continue;
        }
        evaluated += 1;
        if let Ok(t) = humantime::parse_rfc3339_weak(&header.started) {
            *now.lock().unwrap_or_else(|p| p.into_inner()) = t;
        }
        for (n, seen) in collector.take_seen().into_iter().enumerate() {
            interactions += 1;
            let mut caller = seen.caller;
            if let Some(a) = &header.agent {
                caller.agent = Some(a.agent.clone());
            }
            if let Some(p) = &header.plan {
                caller.plan = Some(p.plan.clone());
                caller.step = Some(p.step.clone());
            }
            caller.token = header.caller.as_ref().and_then(|c| c.token.clone());
            let before = match &baseline {
                Some(b) => b.authorize(&caller, &seen.interaction),
                None => Verdict {
                    allowed: true,
                    policies: Vec::new(),
                    reason: None,
                },
            };
            let after = candidate.authorize(&caller, &seen.interaction);
            if before.allowed != after.allowed {
                changes.push(json!({
                    "run": id,
                    "interaction": n + 1,
                    "component": caller.component,
                    "action": seen.interaction.action(),
                    "request": seen.interaction.describe(),
                    "before": before,
                    "after": after,
                }));
            }
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "runs": evaluated,
                "interactions": interactions,
                "baseline": baseline_dir.as_ref().map(|d| d.display().to_string()),
                "candidate": candidate_dir.display().to_string(),
                "changes": changes,
                "skipped": skipped,
            }))
            .unwrap_or_default()
        );
    } else {
        for c in &changes {
            let verdict = |v: &serde_json::Value| {
                let word = if v["allowed"] == json!(true) {
                    "allow"
                } else {
                    "deny"
                };
                match v["reason"].as_str() {
                    Some(r) => format!("{word} ({r})"),
                    None => word.to_string(),
                }
            };
            println!(
                "{} #{} {} {}: {} -> {}",
                c["run"].as_str().unwrap_or_default(),
                c["interaction"],
                c["component"].as_str().unwrap_or_default(),
                c["request"].as_str().unwrap_or_default(),
                verdict(&c["before"]),
                verdict(&c["after"]),
            );
        }
        for s in &skipped {
            println!(
                "skipped {}: {}",
                s["run"].as_str().unwrap_or_default(),
                s["why"].as_str().unwrap_or_default()
            );
        }
        println!(
            "{} runs, {} policy-checked interactions: {} decisions would change (baseline: {})",
            evaluated,
            interactions,
            changes.len(),
            baseline_dir
                .as_ref()
                .map_or("the grants alone".to_string(), |d| d.display().to_string())
        );
    }
    Ok(if changes.is_empty() {
        exit::OK
    } else {
        exit::CHANGED
    })
}
