//! Embeds the `///` doc comments
//! of a component's WIT sources into the built component.
//!
//! Neither `wit-bindgen` nor `wasm-component-ld` keeps WIT docs: the
//! component-type information they embed carries none. [`embed`] appends two
//! custom sections to a component:
//!
//! * `package-docs`: the standard section `wit-parser` reads when decoding a
//!   component, so `wit_parser::decoding::decode` (and `wasm-tools component
//!   wit`) report docs for the world and its kebab-named exports and types.
//!   Items of exported *named* interfaces (e.g. `tessera:hello/types`) cannot
//!   be described by this section.
//! * `wit-package`: the component's own WIT package, binary-encoded as by
//!   `wasm-tools component wit --wasm`, docs included. Decoding its contents
//!   with `wit_parser::decoding::decode` yields
//!   `DecodedWasm::WitPackage` with docs for every world, interface, type and
//!   function of the package, including named interfaces.
//!
//! The source package may hold several worlds (a provider and a consumer of
//! one interface, say): the one whose exports and imports the component
//! has, with the most exports, is used.
//!
//! Used by `tessera build` and by the `embed-wit-docs` tool that
//! `scripts/build-components.sh` runs. A component is rewritten in place;
//! sections from an earlier run are replaced.

use std::path::Path;

pub use anyhow::Result;
use anyhow::{Context, bail, ensure};
use wit_parser::decoding::{DecodedWasm, decode};
use wit_parser::{
    Docs, InterfaceId, PackageMetadata, Resolve, TypeDefKind, TypeId, WorldId, WorldItem,
};

/// Section read by `wit-parser` when decoding components.
const PACKAGE_DOCS: &str = PackageMetadata::SECTION_NAME;
/// Section holding the binary-encoded source WIT package.
const WIT_PACKAGE: &str = "wit-package";

/// Rewrites the component at `wasm` with the docs of the WIT at `wit_dir`.
pub fn embed(wasm: &Path, wit_dir: &Path) -> Result<()> {
    let mut src = Resolve::default();
    let (src_pkg, _) = src
        .push_dir(wit_dir)
        .with_context(|| format!("parsing {}", wit_dir.display()))?;

    let bytes = std::fs::read(wasm)?;
    let mut out = strip_custom_sections(&bytes, &[PACKAGE_DOCS, WIT_PACKAGE])?;
    let DecodedWasm::Component(mut dst, dst_world) = decode(&out)? else {
        bail!("not a component");
    };
    let src_world = world_of(&src, src_pkg, &dst, dst_world)?;

    copy_world_docs(&src, src_world, &mut dst, dst_world);
    let root = dst.worlds[dst_world]
        .package
        .context("decoded world has no package")?;
    let package_docs = PackageMetadata::extract(&dst, root).encode()?;
    let wit_package = wit_component::encode(&src, src_pkg)?;
    append_custom_section(&mut out, PACKAGE_DOCS, &package_docs);
    append_custom_section(&mut out, WIT_PACKAGE, &wit_package);

    // The result must still decode, with the docs in place.
    let DecodedWasm::Component(check, check_world) = decode(&out)? else {
        bail!("rewritten component no longer decodes as a component");
    };
    ensure!(
        check.worlds[check_world].docs == src.worlds[src_world].docs,
        "world docs did not survive a round trip"
    );
    std::fs::write(wasm, out)?;
    Ok(())
}

/// The world of the package the component was built for: its only one, or
/// the one whose imports and exports are the component's (a package such
/// as a provider and a consumer of one interface has several).
fn world_of(
    src: &Resolve,
    pkg: wit_parser::PackageId,
    dst: &Resolve,
    dst_world: WorldId,
) -> Result<WorldId> {
    let worlds: Vec<WorldId> = src.packages[pkg].worlds.values().copied().collect();
    if worlds.len() == 1 {
        return Ok(worlds[0]);
    }
    let names = |r: &Resolve, w: WorldId| {
        let world = &r.worlds[w];
        let exports: std::collections::BTreeSet<String> =
            world.exports.keys().map(|k| r.name_world_key(k)).collect();
        let imports: std::collections::BTreeSet<String> = world
            .imports
            .iter()
            .filter(|(_, item)| !matches!(item, WorldItem::Type { .. }))
            .map(|(k, _)| r.name_world_key(k))
            .collect();
        (exports, imports)
    };
    let (exports, imports) = names(dst, dst_world);
    // The world's exports and imports must all be the component's (a
    // toolchain adds WASI imports, and componentize-py an export, of its
    // own); of those that fit, the one with the most exports.
    let mut fitting: Vec<(usize, WorldId)> = worlds
        .iter()
        .copied()
        .filter_map(|w| {
            let (e, i) = names(src, w);
            (e.is_subset(&exports) && i.is_subset(&imports)).then_some((e.len(), w))
        })
        .collect();
    fitting.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    match fitting.as_slice() {
        [] => bail!("no world of the package fits the component's imports and exports"),
        [(n, w), rest @ ..] if rest.first().is_none_or(|(m, _)| m < n) => Ok(*w),
        _ => bail!("several worlds of the package fit the component's imports and exports"),
    }
}

/// Copies docs from the source world onto the decoded component's world,
/// matching items by name.
fn copy_world_docs(src: &Resolve, src_world: WorldId, dst: &mut Resolve, dst_world: WorldId) {
    dst.worlds[dst_world].docs = src.worlds[src_world].docs.clone();
    let sw = &src.worlds[src_world];
    let dw = dst.worlds[dst_world].clone();
    for (src_items, dst_items, is_export) in [
        (&sw.imports, &dw.imports, false),
        (&sw.exports, &dw.exports, true),
    ] {
        for (dst_key, dst_item) in dst_items {
            let dst_name = dst.name_world_key(dst_key);
            let Some(src_item) = src_items
                .iter()
                .find(|(k, _)| src.name_world_key(k) == dst_name)
                .map(|(_, item)| item)
            else {
                continue;
            };
            let world = &mut dst.worlds[dst_world];
            let items = if is_export {
                &mut world.exports
            } else {
                &mut world.imports
            };
            match (src_item, dst_item) {
                (
                    WorldItem::Interface {
                        id: s, docs: sd, ..
                    },
                    WorldItem::Interface { id: d, .. },
                ) => {
                    if let Some(WorldItem::Interface { docs, .. }) = items.get_mut(dst_key) {
                        *docs = sd.clone();
                    }
                    copy_interface_docs(src, *s, dst, *d);
                }
                (WorldItem::Function(s), WorldItem::Function(_)) => {
                    if let Some(WorldItem::Function(f)) = items.get_mut(dst_key) {
                        f.docs = s.docs.clone();
                    }
                }
                (WorldItem::Type { id: s, .. }, WorldItem::Type { id: d, .. }) => {
                    copy_type_docs(src, *s, dst, *d);
                }
                _ => {}
            }
        }
    }
}

/// Copies docs of an interface, its types and its functions.
fn copy_interface_docs(src: &Resolve, s: InterfaceId, dst: &mut Resolve, d: InterfaceId) {
    let si = &src.interfaces[s];
    dst.interfaces[d].docs = si.docs.clone();
    for (name, f) in &si.functions {
        if let Some(df) = dst.interfaces[d].functions.get_mut(name) {
            df.docs = f.docs.clone();
        }
    }
    for (name, &st) in &si.types {
        if let Some(&dt) = dst.interfaces[d].types.get(name) {
            copy_type_docs(src, st, dst, dt);
        }
    }
}

/// Copies docs of a type and of its fields, cases or flags.
fn copy_type_docs(src: &Resolve, s: TypeId, dst: &mut Resolve, d: TypeId) {
    let st = &src.types[s];
    let dt = &mut dst.types[d];
    dt.docs = st.docs.clone();
    fn copy<S, D>(
        s: &[S],
        d: &mut [D],
        sf: impl Fn(&S) -> (&str, &Docs),
        df: impl Fn(&mut D) -> (&str, &mut Docs),
    ) {
        for si in s {
            let (name, docs) = sf(si);
            if let Some(target) = d.iter_mut().map(&df).find(|(n, _)| *n == name) {
                *target.1 = docs.clone();
            }
        }
    }
    match (&st.kind, &mut dt.kind) {
        (TypeDefKind::Record(s), TypeDefKind::Record(d)) => copy(
            &s.fields,
            &mut d.fields,
            |f| (&f.name, &f.docs),
            |f| (&f.name, &mut f.docs),
        ),
        (TypeDefKind::Variant(s), TypeDefKind::Variant(d)) => copy(
            &s.cases,
            &mut d.cases,
            |c| (&c.name, &c.docs),
            |c| (&c.name, &mut c.docs),
        ),
        (TypeDefKind::Enum(s), TypeDefKind::Enum(d)) => copy(
            &s.cases,
            &mut d.cases,
            |c| (&c.name, &c.docs),
            |c| (&c.name, &mut c.docs),
        ),
        (TypeDefKind::Flags(s), TypeDefKind::Flags(d)) => copy(
            &s.flags,
            &mut d.flags,
            |f| (&f.name, &f.docs),
            |f| (&f.name, &mut f.docs),
        ),
        _ => {}
    }
}

/// Returns `wasm` without its top-level custom sections named in `names`.
fn strip_custom_sections(wasm: &[u8], names: &[&str]) -> Result<Vec<u8>> {
    ensure!(
        wasm.len() >= 8 && wasm.starts_with(b"\0asm"),
        "not a wasm binary"
    );
    let mut out = wasm[..8].to_vec();
    let mut pos = 8;
    while pos < wasm.len() {
        let start = pos;
        let id = wasm[pos];
        pos += 1;
        let size = read_leb(wasm, &mut pos)? as usize;
        let end = pos
            .checked_add(size)
            .filter(|&e| e <= wasm.len())
            .context("truncated section")?;
        let drop = id == 0 && {
            let mut p = pos;
            let len = read_leb(wasm, &mut p)? as usize;
            wasm.get(p..p + len)
                .is_some_and(|n| names.iter().any(|x| x.as_bytes() == n))
        };
        if !drop {
            out.extend_from_slice(&wasm[start..end]);
        }
        pos = end;
    }
    Ok(out)
}

/// Appends a custom section `name` holding `data`.
fn append_custom_section(wasm: &mut Vec<u8>, name: &str, data: &[u8]) {
    let mut payload = Vec::new();
    write_leb(&mut payload, name.len() as u64);
    payload.extend_from_slice(name.as_bytes());
    payload.extend_from_slice(data);
    wasm.push(0);
    write_leb(wasm, payload.len() as u64);
    wasm.extend_from_slice(&payload);
}

fn read_leb(bytes: &[u8], pos: &mut usize) -> Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*pos).context("truncated LEB128")?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    bail!("LEB128 too long")
}

fn write_leb(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}
