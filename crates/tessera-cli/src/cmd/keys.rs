//! `tessera keys`, `tessera sign`, `tessera verify`: signing keys and
//! signed components (see docs/trust.md).

use std::path::PathBuf;

use serde_json::json;
use tessera_runtime::trust::{self, Signatures};

use crate::exit;
use crate::failure::Failure;
use crate::setup::GlobalArgs;

/// Subcommands of `tessera keys`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Make an ed25519 key pair: `<out>.key` (secret, mode 0600) and
    /// `<out>.pub`, in the `wasmsign2` raw format. Prints the key id.
    Generate {
        /// Where to write, without extension.
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `tessera sign`.
#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// The component (or core module) to sign.
    pub file: PathBuf,
    /// The secret key (`tessera keys generate`, or a `wasmsign2` /
    /// PEM / DER ed25519 key).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Write the signed component here instead of replacing the file.
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `tessera verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The component to check.
    pub file: PathBuf,
    /// A public key to check against (repeatable). Without one, the
    /// component is judged by the trust policy in force (`--trust`, or
    /// `<data>/trust.toml`).
    #[arg(long, value_name = "FILE")]
    pub key: Vec<PathBuf>,
    /// The name the trust policy judges it by (default: the file's stem).
    #[arg(long)]
    pub name: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `tessera keys …`.
pub fn run(command: Command) -> i32 {
    match command {
        Command::Generate { out, json } => match trust::keys::generate(&out) {
            Ok((secret, public, id)) => {
                if json {
                    println!(
                        "{}",
                        json!({"ok": true, "secret_key": secret.display().to_string(),
                               "public_key": public.display().to_string(), "key_id": id})
                    );
                } else {
                    println!("secret key  {}  (keep it private)", secret.display());
                    println!("public key  {}", public.display());
                    println!("key id      {id}");
                }
                exit::OK
            }
            Err(e) => Failure::bad_input("key", e.to_string())
                .with("path", out.display().to_string())
                .emit(json),
        },
    }
}

/// Runs `tessera sign`.
pub fn sign(args: SignArgs) -> i32 {
    let json = args.json;
    match sign_inner(&args) {
        Ok((out, digest, id)) => {
            if json {
                println!(
                    "{}",
                    json!({"ok": true, "file": out.display().to_string(), "digest": digest, "key_id": id})
                );
            } else {
                println!("signed {} with key {id}", out.display());
                println!("digest {digest}");
            }
            exit::OK
        }
        Err(f) => f.emit(json),
    }
}

fn sign_inner(args: &SignArgs) -> Result<(PathBuf, String, String), Failure> {
    let key = trust::keys::read_secret(&args.key).map_err(|e| {
        Failure::bad_input("key", e.to_string()).with("path", args.key.display().to_string())
    })?;
    let bytes = std::fs::read(&args.file).map_err(|e| {
        Failure::bad_input("read", format!("cannot read {}: {e}", args.file.display()))
            .with("path", args.file.display().to_string())
    })?;
    let signed = trust::keys::sign_component(&bytes, &key).map_err(|e| {
        Failure::bad_input("sign", format!("{}: {e}", args.file.display()))
            .with("path", args.file.display().to_string())
    })?;
    let out = args.out.clone().unwrap_or_else(|| args.file.clone());
    // Replaced whole: a reader sees the old bytes or the signed ones.
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut tmp = tempfile::Builder::new().prefix(".tmp").tempfile_in(dir)?;
        tmp.write_all(&signed)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&out).map_err(|e| e.error)?;
        Ok(())
    };
    write().map_err(|e| {
        Failure::internal("io", format!("cannot write {}: {e}", out.display()))
            .with("path", out.display().to_string())
    })?;
    Ok((out, tessera_runtime::digest_of(&signed), key.id()))
}

/// Runs `tessera verify`.
pub fn verify(global: &GlobalArgs, args: VerifyArgs) -> i32 {
    let json = args.json;
    match verify_inner(global, &args) {
        Ok((ok, report)) => {
            if json {
                println!("{report}");
            } else if let Some(m) = report["message"].as_str() {
                println!("{m}");
            }
            if ok { exit::OK } else { exit::UNTRUSTED }
        }
        Err(f) => f.emit(json),
    }
}

fn verify_inner(
    global: &GlobalArgs,
    args: &VerifyArgs,
) -> Result<(bool, serde_json::Value), Failure> {
    let bytes = std::fs::read(&args.file).map_err(|e| {
        Failure::bad_input("read", format!("cannot read {}: {e}", args.file.display()))
            .with("path", args.file.display().to_string())
    })?;
    let digest = tessera_runtime::digest_of(&bytes);
    let file = args.file.display().to_string();
    if !args.key.is_empty() {
        let mut keys = Vec::new();
        for p in &args.key {
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            keys.push(trust::keys::read_public(p, &name).map_err(|e| {
                Failure::bad_input("key", e.to_string()).with("path", p.display().to_string())
            })?);
        }
        let (ok, message, signers) = match trust::keys::signatures(&bytes, &keys) {
            Signatures::SignedBy(names) => (
                true,
                format!("{file}: signed by {}", names.join(", ")),
                names,
            ),
            Signatures::Unsigned => (false, format!("{file}: not signed"), vec![]),
            Signatures::Invalid { tampered: true, .. } => (
                false,
                format!("{file}: the signature does not match its bytes (changed after signing)"),
                vec![],
            ),
            Signatures::Invalid { key_ids, .. } => (
                false,
                format!(
                    "{file}: signed by key {}, none of the keys given",
                    key_ids.join(", key ")
                ),
                vec![],
            ),
            Signatures::Malformed(m) => (
                false,
                format!("{file}: malformed signature section: {m}"),
                vec![],
            ),
        };
        return Ok((
            ok,
            json!({"ok": ok, "file": file, "digest": digest, "signed_by": signers, "message": message}),
        ));
    }
    let Some(path) = global.trust_file() else {
        return Err(Failure::bad_input(
            "usage",
            "nothing to verify against: give --key, or a trust policy with --trust (or <data>/trust.toml)",
        ));
    };
    let policy = trust::TrustPolicy::load(&path).map_err(|e| {
        Failure::bad_input("trust", e.to_string()).with("path", path.display().to_string())
    })?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| tessera_runtime::name_of(&file));
    Ok(match policy.check(&name, &bytes, &digest) {
        Ok(v) => {
            let how = if v.signed_by.is_empty() {
                "allowed unsigned".to_string()
            } else {
                format!("signed by {}", v.signed_by.join(", "))
            };
            let pin = if v.pinned { ", pinned digest" } else { "" };
            let message = format!(
                "{file}: trusted as `{name}` by {} ({how}{pin})",
                path.display()
            );
            (
                true,
                json!({"ok": true, "file": file, "name": name, "digest": digest,
                       "signed_by": v.signed_by, "pinned": v.pinned, "message": message}),
            )
        }
        Err(refusal) => {
            let message = format!("{file}: refused: {refusal}");
            (
                false,
                json!({"ok": false, "file": file, "name": name, "digest": digest,
                       "refusal": refusal.to_string(), "message": message}),
            )
        }
    })
}
