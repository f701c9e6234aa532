//! `tessera new` and `tessera build`: a project in each language (Rust,
//! Python, JavaScript, C, Go), built with its own toolchain, called with
//! the same JSON and answering the same, its WIT docs embedded; bad
//! projects refused with the place named, toolchain errors with the step.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

fn tessera(data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
    c.arg("--data")
        .arg(data)
        .env("TESSERA_CACHE_DIR", data.join("cache"));
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn ok(o: Output, what: &str) -> String {
    assert_eq!(o.status.code(), Some(0), "{what}: {}", text(&o.stderr));
    text(&o.stdout)
}

#[test]
fn every_language_scaffolds_builds_and_answers_the_same_json() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let mut answers = Vec::new();
    for lang in ["rust", "python", "js", "c", "go"] {
        let name = format!("greeter-{lang}");
        ok(
            tessera(&data)
                .current_dir(work.path())
                .args(["new", &name, "--lang", lang])
                .output()
                .unwrap(),
            "new",
        );
        let dir = work.path().join(&name);
        assert!(dir.join("wit").join(format!("{name}.wit")).is_file());
        let built: Value = serde_json::from_str(&ok(
            tessera(&data)
                .args(["build", "--json"])
                .arg(&dir)
                .output()
                .unwrap(),
            "build",
        ))
        .unwrap();
        let wasm = built["component"].as_str().unwrap().to_string();
        assert!(Path::new(&wasm).is_file(), "{built}");
        let call = |args: Value| {
            let o = tessera(&data)
                .args(["call", &wasm, "greet", "--args", &args.to_string()])
                .output()
                .unwrap();
            serde_json::from_str::<Value>(&text(&o.stdout))
                .unwrap_or_else(|e| panic!("{lang}: {e}: {} {}", text(&o.stdout), text(&o.stderr)))
        };
        let yes = call(json!({"name": "Zoë", "loud": true}));
        let no = call(json!({"name": "Ada", "loud": false}));
        let err = call(json!({"name": "", "loud": false}));
        answers.push((lang, yes.clone(), no.clone(), err.clone()));
        assert_eq!(
            yes,
            json!({"ok": {"text": "Hello, Zoë!", "length": 3, "shout": "HELLO, ZOË!"}}),
            "{lang}"
        );
        // The WIT docs are in the component.
        let inspect = ok(
            tessera(&data).args(["inspect", &wasm]).output().unwrap(),
            "inspect",
        );
        assert!(inspect.contains("An empty name"), "{lang}: {inspect}");
    }
    let (_, y0, n0, e0) = &answers[0];
    for (lang, y, n, e) in &answers[1..] {
        assert_eq!((y, n, e), (y0, n0, e0), "{lang} differs from rust");
    }
    assert_eq!(n0["ok"]["shout"], Value::Null);
    assert_eq!(e0, &json!({"err": "the name is empty"}));
}

#[test]
fn bad_names_existing_directories_and_broken_projects_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let run = |args: &[&str]| {
        tessera(&data)
            .current_dir(work.path())
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(&["new", "Bad_Name", "--lang", "rust"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("is not a component name"),
        "{}",
        text(&o.stderr)
    );
    std::fs::create_dir(work.path().join("taken")).unwrap();
    std::fs::write(work.path().join("taken/x"), "").unwrap();
    let o = run(&["new", "taken", "--lang", "js"]);
    assert!(
        text(&o.stderr).contains("exists and is not empty"),
        "{}",
        text(&o.stderr)
    );
    let o = run(&["build", "nowhere"]);
    assert!(
        text(&o.stderr).contains("tessera-project.toml"),
        "{}",
        text(&o.stderr)
    );
    std::fs::create_dir(work.path().join("broken")).unwrap();
    std::fs::write(
        work.path().join("broken/tessera-project.toml"),
        "name = \"broken\"\nlanguage = \"cobol\"\nworld = \"broken\"\n",
    )
    .unwrap();
    let o = run(&["build", "broken"]);
    let err = text(&o.stderr);
    assert!(
        err.contains("broken/tessera-project.toml") && err.contains("cobol"),
        "{err}"
    );
    // A Python project whose code does not match its WIT: the toolchain's
    // error, not a component.
    ok(run(&["new", "oops", "--lang", "python"]), "new");
    std::fs::write(work.path().join("oops/app.py"), "class Nope: pass\n").unwrap();
    let o = run(&["build", "oops"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        text(&o.stderr).contains("componentize-py failed"),
        "{}",
        text(&o.stderr)
    );
    assert!(!work.path().join("oops/oops.wasm").exists());
    // A C project that does not compile: the step named, with the
    // compiler's message.
    ok(run(&["new", "oops-c", "--lang", "c"]), "new");
    std::fs::write(work.path().join("oops-c/src/oops-c.c"), "int x = ;\n").unwrap();
    let o = run(&["build", "oops-c"]);
    let err = text(&o.stderr);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        err.contains("zig cc failed") && err.contains("expected expression"),
        "{err}"
    );
    assert!(!work.path().join("oops-c/oops-c.wasm").exists());
}
