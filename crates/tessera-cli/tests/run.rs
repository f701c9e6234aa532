//! `tessera run`: commands (`wasi:cli/run` components and preview 1 command
//! modules) with the terminal's streams connected, arguments, granted
//! directories and variables, and the guest's exit status.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use tessera_test_support::component;

fn tessera(data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
    c.arg("--data")
        .arg(data)
        .env("TESSERA_CACHE_DIR", data.join("cache"));
    c
}

fn run(data: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = tessera(data)
        .arg("run")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tessera");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn cli_tool() -> String {
    component("cli-tool").display().to_string()
}

#[test]
fn a_command_gets_its_arguments_and_program_name_and_exits_with_its_status() {
    let data = tempfile::tempdir().unwrap();
    let o = run(
        data.path(),
        &[&cli_tool(), "--", "args", "a b", "--flag"],
        b"",
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "a b\n--flag\n");
    assert_eq!(text(&o.stderr), "argv0=cli-tool.wasm\n");

    // WASI 0.2's `exit` carries success or failure: Rust's standard
    // library exits any non-zero status as a failure, which is 1.
    for (code, status) in [("0", 0), ("7", 1), ("42", 1)] {
        let o = run(data.path(), &[&cli_tool(), "exit", code], b"");
        assert_eq!(o.status.code(), Some(status), "exit {code}");
    }
    // `main` returning an error: the command's `run` returns `err`.
    let o = run(data.path(), &[&cli_tool(), "fail"], b"");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("failed as asked"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn stdin_and_stdout_are_streamed_while_the_command_runs() {
    let data = tempfile::tempdir().unwrap();
    let mut child = tessera(data.path())
        .args(["run", &cli_tool(), "upper", "--timeout-ms", "60000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let mut output = BufReader::new(child.stdout.take().unwrap());
    // Each line comes back before the next is written and before stdin
    // ends: neither side is buffered to the end.
    for word in ["first line", "second", "third one"] {
        writeln!(input, "{word}").unwrap();
        input.flush().unwrap();
        let mut line = String::new();
        output.read_line(&mut line).unwrap();
        assert_eq!(line, format!("{}\n", word.to_uppercase()));
    }
    drop(input);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut output, &mut rest).unwrap();
    assert_eq!(rest, "");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn directories_and_variables_are_granted_by_flags_and_nothing_else() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "granted text\n").unwrap();
    let host = dir.path().display().to_string();

    // Not granted: the file is not there for the guest.
    let o = run(data.path(), &[&cli_tool(), "cat", "/data/notes.txt"], b"");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).starts_with("cat: /data/notes.txt:"),
        "{}",
        text(&o.stderr)
    );

    // Granted read-only at /data: readable, not writable.
    let ro = format!("{host}::/data:ro");
    let o = run(
        data.path(),
        &["--dir", &ro, &cli_tool(), "cat", "/data/notes.txt"],
        b"",
    );
    assert_eq!(
        (o.status.code(), text(&o.stdout).as_str()),
        (Some(0), "granted text\n"),
        "{}",
        text(&o.stderr)
    );
    let o = run(
        data.path(),
        &["--dir", &ro, &cli_tool(), "write", "/data/new.txt", "x"],
        b"",
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(!dir.path().join("new.txt").exists());
    assert!(
        text(&o.stderr).contains("[tessera] denied files"),
        "{}",
        text(&o.stderr)
    );

    // Read-write: the write reaches the host directory.
    let rw = format!("{host}::/data");
    let o = run(
        data.path(),
        &[
            "--dir",
            &rw,
            &cli_tool(),
            "write",
            "/data/new.txt",
            "written",
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("new.txt")).unwrap(),
        "written"
    );
    let o = run(
        data.path(),
        &["--dir", &rw, &cli_tool(), "ls", "/data"],
        b"",
    );
    assert_eq!(text(&o.stdout), "new.txt\nnotes.txt\n");

    // Variables: set by the flag, or passed from the host by name; none
    // otherwise.
    let o = run(data.path(), &[&cli_tool(), "env", "GREETING"], b"");
    assert_eq!(
        (o.status.code(), text(&o.stdout).as_str()),
        (Some(1), "GREETING unset\n")
    );
    let o = run(
        data.path(),
        &["--env", "GREETING=bonjour", &cli_tool(), "env", "GREETING"],
        b"",
    );
    assert_eq!(
        (o.status.code(), text(&o.stdout).as_str()),
        (Some(0), "bonjour\n")
    );
    let o = tessera(data.path())
        .env("TESSERA_TEST_VAR", "from the host")
        .args([
            "run",
            "--env",
            "TESSERA_TEST_VAR",
            &cli_tool(),
            "env",
            "TESSERA_TEST_VAR",
        ])
        .output()
        .unwrap();
    assert_eq!(text(&o.stdout), "from the host\n", "{}", text(&o.stderr));
}

#[test]
fn a_preview1_command_module_runs_with_its_arguments_and_environment() {
    let data = tempfile::tempdir().unwrap();
    let p1 = component("p1-command").display().to_string();
    let o = run(
        data.path(),
        &["--env", "GREETING=hi", &p1, "--", "one", "two"],
        b"",
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "hello from wasip1\none\ntwo\nhi\n");
}

#[test]
fn bad_flags_and_non_commands_are_refused_before_anything_runs() {
    let data = tempfile::tempdir().unwrap();
    let o = run(
        data.path(),
        &["--dir", "/no/such/dir::/x", &cli_tool(), "args"],
        b"",
    );
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains("--dir /no/such/dir::/x"),
        "{}",
        text(&o.stderr)
    );
    let o = run(
        data.path(),
        &["--dir", "/tmp::relative", &cli_tool(), "args"],
        b"",
    );
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains("absolute guest path"),
        "{}",
        text(&o.stderr)
    );
    let hello = component("hello").display().to_string();
    let o = run(data.path(), &[&hello], b"");
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains("is not a command"),
        "{}",
        text(&o.stderr)
    );
    assert!(text(&o.stderr).contains("greet"), "{}", text(&o.stderr));
}

#[test]
fn limits_stop_a_command_and_a_recorded_run_replays_its_stdin_offline() {
    let data = tempfile::tempdir().unwrap();
    let o = run(
        data.path(),
        &["--fuel", "1000", &cli_tool(), "upper"],
        b"abc\n",
    );
    assert_eq!(o.status.code(), Some(134));
    assert!(text(&o.stderr).contains("fuel"), "{}", text(&o.stderr));

    let o = run(
        data.path(),
        &["--record", &cli_tool(), "upper"],
        b"one\ntwo\n",
    );
    assert_eq!(
        (o.status.code(), text(&o.stdout).as_str()),
        (Some(0), "ONE\nTWO\n"),
        "{}",
        text(&o.stderr)
    );
    let err = text(&o.stderr);
    let id = err
        .lines()
        .find_map(|l| l.strip_prefix("recorded run "))
        .unwrap_or_else(|| panic!("{err}"))
        .trim()
        .to_string();
    // The replay reads stdin from the journal, not from its own stdin.
    let o = tessera(data.path())
        .args(["replay", &id])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let shown = tessera(data.path())
        .args(["runs", "show", &id])
        .output()
        .unwrap();
    assert!(
        text(&shown.stdout).contains("stdin-read"),
        "{}",
        text(&shown.stdout)
    );
}

/// ripgrep, built from its crates.io sources for `wasm32-wasip1` by
/// `scripts/build-third-party.sh`: a program not written for Tessera.
fn ripgrep() -> String {
    component("third-party-ripgrep").display().to_string()
}

#[test]
fn ripgrep_built_for_wasip1_searches_stdin_granted_files_and_nothing_else() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "alpha one\nbeta two\n").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/todo.txt"), "TODO: fix the parser\n").unwrap();
    std::fs::write(dir.path().join("rgrc"), "--ignore-case\n").unwrap();
    let secret = tempfile::tempdir().unwrap();
    std::fs::write(secret.path().join("creds.txt"), "password=hunter2\n").unwrap();
    let rg = ripgrep();
    let ro = format!("{}::/data:ro", dir.path().display());

    // stdin (`-`), arguments, and its exit status: 0 on a match, 1 on none.
    let o = run(
        data.path(),
        &[&rg, "--", "an", "-"],
        b"apple\nbanana\ncherry\n",
    );
    assert_eq!(
        (o.status.code(), text(&o.stdout).as_str()),
        (Some(0), "banana\n"),
        "{}",
        text(&o.stderr)
    );
    let o = run(
        data.path(),
        &[&rg, "--", "-c", "a", "-"],
        b"apple\nbanana\ncherry\n",
    );
    assert_eq!(text(&o.stdout), "2\n");
    let o = run(data.path(), &[&rg, "--", "zzz", "-"], b"apple\n");
    assert_eq!((o.status.code(), text(&o.stdout).as_str()), (Some(1), ""));

    // A granted directory, walked.
    let o = run(
        data.path(),
        &["--dir", &ro, &rg, "--", "-n", "TODO", "/data"],
        b"",
    );
    assert_eq!(
        (o.status.code(), text(&o.stdout).as_str()),
        (Some(0), "/data/sub/todo.txt:1:TODO: fix the parser\n"),
        "{}",
        text(&o.stderr)
    );
    // Its configuration file, named by a granted variable.
    let o = run(
        data.path(),
        &[
            "--dir",
            &ro,
            "--env",
            "RIPGREP_CONFIG_PATH=/data/rgrc",
            &rg,
            "--",
            "ALPHA",
            "/data/notes.txt",
        ],
        b"",
    );
    assert_eq!(text(&o.stdout), "alpha one\n", "{}", text(&o.stderr));
    let o = run(
        data.path(),
        &["--dir", &ro, &rg, "--", "ALPHA", "/data/notes.txt"],
        b"",
    );
    assert_eq!((o.status.code(), text(&o.stdout).as_str()), (Some(1), ""));

    // Outside the grant: refused, nothing read.
    let escape = format!(
        "/data/../{}/creds.txt",
        secret.path().file_name().unwrap().to_string_lossy()
    );
    let o = run(
        data.path(),
        &["--dir", &ro, &rg, "--", "password", &escape],
        b"",
    );
    assert_ne!(o.status.code(), Some(0));
    assert!(!text(&o.stdout).contains("hunter2"));
    assert!(
        text(&o.stderr).contains("[tessera] denied files"),
        "{}",
        text(&o.stderr)
    );
    let o = run(
        data.path(),
        &[
            "--dir",
            &ro,
            &rg,
            "--",
            "password",
            &secret.path().join("creds.txt").display().to_string(),
        ],
        b"",
    );
    assert_ne!(o.status.code(), Some(0));
    assert!(!text(&o.stdout).contains("hunter2"));
    // A usage error is the program's own message.
    let o = run(data.path(), &[&rg, "--", "--no-such-flag", "x"], b"");
    assert_ne!(o.status.code(), Some(0));
    assert!(
        text(&o.stderr).contains("unrecognized flag --no-such-flag"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn exec_prints_output_then_the_value_and_fails_with_the_traceback() {
    let data = tempfile::tempdir().unwrap();
    // Built (when stale) like every component; found through the variable.
    let dir = component("py-sandbox").parent().unwrap().to_path_buf();
    assert!(component("js-sandbox").is_file());
    let exec = |args: &[&str]| {
        tessera(data.path())
            .env("TESSERA_SANDBOXES", &dir)
            .arg("exec")
            .args(args)
            .output()
            .unwrap()
    };
    let o = exec(&[
        "python",
        "import statistics; print(statistics.mean([1,2,3]))",
    ]);
    assert_eq!(
        (o.status.code(), text(&o.stdout).as_str()),
        (Some(0), "2\n"),
        "{}",
        text(&o.stderr)
    );
    let o = exec(&["js", "console.log([1,2,3].map(x => x * 2)); 'done'"]);
    assert_eq!(
        (o.status.code(), text(&o.stdout).as_str()),
        (Some(0), "[2, 4, 6]\ndone\n"),
        "{}",
        text(&o.stderr)
    );
    let o = exec(&["python", "print('before')\n1/0"]);
    assert_eq!(
        (o.status.code(), text(&o.stdout).as_str()),
        (Some(3), "before\n")
    );
    assert!(
        text(&o.stderr).ends_with("ZeroDivisionError: division by zero\n"),
        "{}",
        text(&o.stderr)
    );
    let o = exec(&["--json", "python", "x = 1 +"]);
    assert_eq!(o.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (
            &v["ok"],
            &v["error"]["kind"],
            &v["error"]["type"],
            &v["error"]["line"]
        ),
        (
            &serde_json::json!(false),
            &serde_json::json!("raised"),
            &serde_json::json!("SyntaxError"),
            &serde_json::json!(1)
        )
    );
    let o = exec(&["--fuel", "1000000", "python", "while True: pass"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(text(&o.stderr).contains("fuel"), "{}", text(&o.stderr));
    let o = exec(&["ruby", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("not a sandbox language"),
        "{}",
        text(&o.stderr)
    );
    let o = tessera(data.path())
        .args(["exec", "--sandboxes", "/no/such/dir", "python", "1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("py-sandbox.wasm") && text(&o.stderr).contains("/no/such/dir"),
        "{}",
        text(&o.stderr)
    );
}

/// `exec --session` keeps a session across processes (each exec rebuilds it
/// from the journal); `tessera sessions` lists, shows, forks, replays and
/// removes; `tessera replay` of a session's run re-executes the runs
/// before it.
#[test]
fn exec_sessions_outlive_the_process_and_fork_and_replay_from_the_cli() {
    let data = tempfile::tempdir().unwrap();
    let dir = component("py-sandbox").parent().unwrap().to_path_buf();
    let cli = |args: &[&str]| {
        tessera(data.path())
            .env("TESSERA_SANDBOXES", &dir)
            .args(args)
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| {
        let o = cli(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o.stderr));
        text(&o.stdout)
    };
    ok(&[
        "exec",
        "python",
        "--session",
        "s1",
        "x = 41\ng = iter(range(10))",
    ]);
    assert_eq!(
        ok(&["exec", "python", "--session", "s1", "print(x + 1)\nnext(g)"]),
        "42\n0\n"
    );
    ok(&["sessions", "fork", "s1", "--as", "s2"]);
    assert_eq!(
        ok(&["exec", "python", "--session", "s2", "x = 0; next(g)"]),
        "1\n"
    );
    assert_eq!(
        ok(&["exec", "python", "--session", "s1", "x, next(g)"]),
        "(41, 1)\n"
    );
    // A fork at 1: before `next(g)` ran.
    ok(&["sessions", "fork", "s1", "--as", "s0", "--at", "1"]);
    assert_eq!(ok(&["exec", "py", "--session", "s0", "next(g)"]), "0\n");

    let list: serde_json::Value =
        serde_json::from_str(&ok(&["sessions", "list", "--json"])).unwrap();
    let runs: Vec<(String, u64)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["runs"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(runs, [("s0".into(), 2), ("s1".into(), 3), ("s2".into(), 3)]);
    let show: serde_json::Value =
        serde_json::from_str(&ok(&["sessions", "show", "s1", "--json"])).unwrap();
    assert_eq!(show["runs"][1]["code"], "print(x + 1)\nnext(g)");
    assert!(ok(&["sessions", "replay", "s1"]).contains("identical: session s1 replayed 3 runs"));
    let last = show["runs"][2]["run"].as_str().unwrap();
    assert!(ok(&["replay", last]).contains("after the 2 runs of its session before it"),);

    // Errors: another language, other grants, an unknown session.
    let o = cli(&["exec", "js", "--session", "s1", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("runs python, not javascript"));
    let o = cli(&["exec", "python", "--session", "s1", "--fuel", "1000", "1"]);
    assert!(
        text(&o.stderr).contains("has the grants it was created with"),
        "{}",
        text(&o.stderr)
    );
    let o = cli(&["sessions", "fork", "nope", "--as", "n2"]);
    assert!(
        text(&o.stderr).contains("no session `nope`"),
        "{}",
        text(&o.stderr)
    );

    ok(&["sessions", "rm", "s1"]);
    let o = cli(&["sessions", "show", "s1"]);
    assert_ne!(o.status.code(), Some(0));
    // The fork is whole without it.
    assert_eq!(ok(&["exec", "python", "--session", "s2", "next(g)"]), "2\n");
}
