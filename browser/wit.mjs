// A small WIT reader: enough of the WIT language to find the functions a
// world exports and describe their parameter and result types, with every
// named type resolved, as plain JSON the page's value conversion
// (values.js) is driven by.
//
// Type descriptions:
//   "bool" "s8" "u8" "s16" "u16" "s32" "u32" "s64" "u64" "f32" "f64"
//   "char" "string"
//   {"list": T}  {"list": T, "len": N}  {"option": T}
//   {"result": {"ok": T | null, "err": T | null}}  {"tuple": [T, …]}
//   {"record": [[name, T], …]}  {"variant": [[name, T | null], …]}
//   {"enum": [name, …]}  {"flags": [name, …]}  {"map": [K, V]}
//   {"own": name}  {"borrow": name}  {"unsupported": what}
//
// It reads a WIT directory as wit-parser does (its *.wit files are one
// package; deps/ holds further packages, as folders of *.wit files or
// single files) or a single file. Not a validator: the component's own
// bindings generator already checked the WIT.

import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";

const PRIMITIVES = new Set([
  "bool", "s8", "u8", "s16", "u16", "s32", "u32", "s64", "u64",
  "f32", "f64", "char", "string",
]);
const FLOAT_ALIASES = { float32: "f32", float64: "f64" };

// --- Tokens ------------------------------------------------------------------

function tokenize(text, file) {
  const tokens = [];
  let i = 0;
  let line = 1;
  const fail = (msg) => {
    throw new Error(`${file}:${line}: ${msg}`);
  };
  while (i < text.length) {
    const c = text[i];
    if (c === "\n") {
      line++;
      i++;
    } else if (/\s/.test(c)) {
      i++;
    } else if (text.startsWith("//", i)) {
      while (i < text.length && text[i] !== "\n") i++;
    } else if (text.startsWith("/*", i)) {
      let depth = 0;
      do {
        if (text.startsWith("/*", i)) {
          depth++;
          i += 2;
        } else if (text.startsWith("*/", i)) {
          depth--;
          i += 2;
        } else {
          if (text[i] === "\n") line++;
          i++;
        }
      } while (depth > 0 && i < text.length);
    } else if (text.startsWith("->", i)) {
      tokens.push({ t: "->", line });
      i += 2;
    } else if (c === "@" && /[0-9]/.test(text[i + 1] ?? "")) {
      // A semver version after `@` (`@0.2.0`, `@0.1.0-draft`, `@1.0.0-rc.1`).
      const m = /^[0-9]+\.[0-9]+\.[0-9]+(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?/.exec(
        text.slice(i + 1),
      );
      if (!m) fail("bad version");
      tokens.push({ t: "@", line }, { t: "version", v: m[0], line });
      i += 1 + m[0].length;
    } else if (/[A-Za-z%]/.test(c)) {
      const m = /^%?[A-Za-z][A-Za-z0-9-]*/.exec(text.slice(i));
      if (!m) fail(`unexpected ${JSON.stringify(c)}`);
      const raw = m[0];
      // `%name` escapes a keyword; the name is without the `%`.
      tokens.push({ t: "id", v: raw.replace(/^%/, ""), escaped: raw.startsWith("%"), line });
      i += raw.length;
    } else if (/[0-9]/.test(c)) {
      const m = /^[0-9]+/.exec(text.slice(i));
      tokens.push({ t: "num", v: Number(m[0]), line });
      i += m[0].length;
    } else if ("{}()<>,:;=./*_@".includes(c)) {
      tokens.push({ t: c, line });
      i++;
    } else {
      fail(`unexpected ${JSON.stringify(c)}`);
    }
  }
  tokens.push({ t: "eof", line });
  return tokens;
}

// --- Parser ------------------------------------------------------------------

class Parser {
  constructor(text, file) {
    this.source = file;
    this.tokens = tokenize(text, file);
    this.pos = 0;
  }
  peek(n = 0) {
    return this.tokens[this.pos + n];
  }
  next() {
    return this.tokens[this.pos++];
  }
  fail(msg) {
    const tok = this.peek();
    throw new Error(`${this.source}:${tok.line}: ${msg} (at ${tok.v ?? tok.t})`);
  }
  is(t, v) {
    const tok = this.peek();
    return tok.t === t && (v === undefined || (tok.v === v && !tok.escaped));
  }
  eat(t, v) {
    if (this.is(t, v)) return this.next();
    return null;
  }
  expect(t, v) {
    if (!this.is(t, v)) this.fail(`expected ${v ?? t}`);
    return this.next();
  }
  id() {
    return this.expect("id").v;
  }
  // Skips a balanced group starting at the current opening token.
  skipGroup(open, close) {
    this.expect(open);
    let depth = 1;
    while (depth > 0) {
      const tok = this.next();
      if (tok.t === "eof") this.fail(`unclosed ${open}`);
      if (tok.t === open) depth++;
      if (tok.t === close) depth--;
    }
  }
  // `@since(…)`, `@unstable(…)`, `@deprecated(…)` gates.
  skipAnnotations() {
    while (this.is("@") && this.peek(1).t === "id") {
      this.next();
      this.next();
      if (this.is("(")) this.skipGroup("(", ")");
    }
  }
  // `name`, `ns:pkg/name` or `ns:pkg/name@version` (also `ns:pkg@version`
  // after `package`).
  path() {
    const first = this.id();
    if (!this.eat(":")) return { name: first };
    const pkg = this.id();
    let name = null;
    if (this.eat("/")) name = this.id();
    let version = null;
    if (this.eat("@")) version = this.expect("version").v;
    return { namespace: first, pkg, name, version };
  }

  // A file: an optional `package` header and its items, and any
  // `package … { … }` blocks, each a package of its own. Returns
  // `{ header, items, nested }`, `items` being `{ interfaces, worlds }`.
  file() {
    const nested = [];
    const items = { interfaces: [], worlds: [] };
    let header = null;
    this.skipAnnotations();
    if (this.is("id", "package")) {
      const start = this.pos;
      this.next();
      const p = this.path();
      if (this.eat(";")) {
        header = pkgName(p);
      } else {
        this.pos = start;
      }
    }
    while (!this.is("eof")) {
      this.skipAnnotations();
      if (this.eat("id", "package")) {
        nested.push(this.nestedPackage(this.path()));
      } else {
        this.item(items);
      }
    }
    return { header, items, nested };
  }
  nestedPackage(p) {
    const pkg = { name: pkgName(p), interfaces: [], worlds: [] };
    this.expect("{");
    while (!this.eat("}")) {
      this.skipAnnotations();
      this.item(pkg);
    }
    return pkg;
  }
  item(pkg) {
    if (this.eat("id", "interface")) {
      const name = this.id();
      pkg.interfaces.push({ name, ...this.interfaceBody() });
    } else if (this.eat("id", "world")) {
      const name = this.id();
      pkg.worlds.push({ name, ...this.worldBody() });
    } else if (this.eat("id", "use")) {
      // A top-level `use ns:pkg/iface as name;`: only renames.
      while (!this.eat(";")) this.next();
    } else {
      this.fail("expected interface, world or package");
    }
  }
  interfaceBody() {
    const iface = { types: new Map(), uses: new Map(), funcs: [] };
    this.expect("{");
    while (!this.eat("}")) {
      this.skipAnnotations();
      this.interfaceItem(iface);
    }
    return iface;
  }
  // Items shared by interfaces and worlds; true when one was read.
  typeItem(scope) {
    if (this.eat("id", "use")) {
      const from = this.path();
      this.expect(".");
      this.expect("{");
      while (!this.eat("}")) {
        const name = this.id();
        const local = this.eat("id", "as") ? this.id() : name;
        scope.uses.set(local, { from, name });
        this.eat(",");
      }
      this.expect(";");
      return true;
    }
    if (this.eat("id", "type")) {
      const name = this.id();
      this.expect("=");
      scope.types.set(name, { kind: "alias", ty: this.type() });
      this.expect(";");
      return true;
    }
    if (this.eat("id", "record")) {
      const name = this.id();
      const fields = [];
      this.expect("{");
      while (!this.eat("}")) {
        const field = this.id();
        this.expect(":");
        fields.push([field, this.type()]);
        this.eat(",");
      }
      scope.types.set(name, { kind: "record", fields });
      return true;
    }
    if (this.eat("id", "variant")) {
      const name = this.id();
      const cases = [];
      this.expect("{");
      while (!this.eat("}")) {
        const c = this.id();
        let ty = null;
        if (this.eat("(")) {
          ty = this.type();
          this.expect(")");
        }
        cases.push([c, ty]);
        this.eat(",");
      }
      scope.types.set(name, { kind: "variant", cases });
      return true;
    }
    if (this.is("id", "enum") || this.is("id", "flags")) {
      const kind = this.next().v;
      const name = this.id();
      const names = [];
      this.expect("{");
      while (!this.eat("}")) {
        names.push(this.id());
        this.eat(",");
      }
      scope.types.set(name, { kind, names });
      return true;
    }
    if (this.eat("id", "resource")) {
      const name = this.id();
      if (this.is("{")) this.skipGroup("{", "}");
      else this.expect(";");
      scope.types.set(name, { kind: "resource" });
      return true;
    }
    return false;
  }
  interfaceItem(iface) {
    if (this.typeItem(iface)) return;
    const name = this.id();
    this.expect(":");
    iface.funcs.push({ name, ...this.funcSig() });
  }
  funcSig() {
    this.eat("id", "async");
    this.expect("id", "func");
    this.expect("(");
    const params = [];
    while (!this.eat(")")) {
      const name = this.id();
      this.expect(":");
      params.push([name, this.type()]);
      this.eat(",");
    }
    let result = null;
    if (this.eat("->")) result = this.type();
    this.expect(";");
    return { params, result };
  }
  worldBody() {
    const world = { types: new Map(), uses: new Map(), exports: [], imports: [] };
    this.expect("{");
    while (!this.eat("}")) {
      this.skipAnnotations();
      if (this.typeItem(world)) continue;
      if (this.eat("id", "include")) {
        this.path();
        if (this.eat("id", "with")) this.skipGroup("{", "}");
        this.expect(";");
        continue;
      }
      const dir = this.is("id", "export") ? "exports" : this.is("id", "import") ? "imports" : null;
      if (!dir) this.fail("expected import, export, use, include or a type");
      this.next();
      if (this.peek().t === "id" && this.peek(1).t === ":" && this.peek(2).t === "id" &&
          ["func", "async", "interface"].includes(this.peek(2).v)) {
        const name = this.id();
        this.expect(":");
        if (this.eat("id", "interface")) {
          world[dir].push({ kind: "inline", name, iface: this.interfaceBody() });
        } else {
          world[dir].push({ kind: "func", name, ...this.funcSig() });
        }
      } else {
        world[dir].push({ kind: "interface", path: this.path() });
        this.expect(";");
      }
    }
    return world;
  }
  type() {
    const tok = this.next();
    if (tok.t === "_") return null;
    if (tok.t !== "id") {
      this.pos--;
      this.fail("expected a type");
    }
    const name = tok.v;
    if (!tok.escaped) {
      if (PRIMITIVES.has(name)) return name;
      if (name in FLOAT_ALIASES) return FLOAT_ALIASES[name];
      if (name === "error-context") return { unsupported: "error-context" };
      const args = () => {
        const list = [];
        this.expect("<");
        while (!this.eat(">")) {
          list.push(this.is("num") ? this.next().v : this.type());
          this.eat(",");
        }
        return list;
      };
      switch (name) {
        case "list": {
          const [elem, len] = args();
          return len === undefined ? { list: elem } : { list: elem, len };
        }
        case "option":
          return { option: args()[0] };
        case "result": {
          if (!this.is("<")) return { result: { ok: null, err: null } };
          const [ok, err] = args();
          return { result: { ok: ok ?? null, err: err ?? null } };
        }
        case "tuple":
          return { tuple: args() };
        case "map": {
          const [k, v] = args();
          return { map: [k, v] };
        }
        case "borrow":
          return { borrow: args()[0] };
        case "own":
          return { own: args()[0] };
        case "future":
        case "stream":
          if (this.is("<")) args();
          return { unsupported: name };
      }
    }
    return { ref: name };
  }
}

function pkgName(p) {
  return `${p.namespace}:${p.pkg}${p.version ? `@${p.version}` : ""}`;
}

// --- Loading -----------------------------------------------------------------

function witFiles(dir) {
  return readdirSync(dir)
    .filter((f) => f.endsWith(".wit"))
    .sort()
    .map((f) => join(dir, f));
}

// The packages of the files given (one package, whose name one of them
// declares, plus any nested `package … { … }` blocks), merged by name.
function readPackageFiles(files) {
  const parsed = files.map((file) => new Parser(readFileSync(file, "utf8"), file).file());
  const headers = [...new Set(parsed.map((f) => f.header).filter((h) => h !== null))];
  if (headers.length > 1) throw new Error(`${files.join(", ")}: more than one package: ${headers.join(", ")}`);
  const main = headers[0] ?? null;
  const byName = new Map();
  const add = (name, items) => {
    const into = byName.get(name) ?? { name, interfaces: [], worlds: [] };
    into.interfaces.push(...items.interfaces);
    into.worlds.push(...items.worlds);
    byName.set(name, into);
  };
  parsed.forEach((f, i) => {
    if (f.items.interfaces.length + f.items.worlds.length > 0) {
      if (main === null) throw new Error(`${files[i]}: no \`package\` header`);
      add(main, f.items);
    }
    for (const pkg of f.nested) add(pkg.name, pkg);
  });
  return { main, packages: [...byName.values()] };
}

/**
 * Reads WIT from `path` (a directory as wit-parser reads it, or one file).
 * Returns `{ main, packages }`: the main package's name and every package.
 */
export function loadWit(path) {
  if (!statSync(path).isDirectory()) return readPackageFiles([path]);
  const main = readPackageFiles(witFiles(path));
  const packages = [...main.packages];
  const deps = join(path, "deps");
  let entries = [];
  try {
    entries = readdirSync(deps).sort();
  } catch {
    // No deps/.
  }
  for (const entry of entries) {
    const p = join(deps, entry);
    const files = statSync(p).isDirectory() ? witFiles(p) : entry.endsWith(".wit") ? [p] : [];
    packages.push(...readPackageFiles(files).packages);
  }
  return { main: main.main, packages };
}

// --- Resolving ---------------------------------------------------------------

function versionMatches(pkgName, namespace, pkg, version) {
  const [base, v] = pkgName.split("@");
  return base === `${namespace}:${pkg}` && (!version || v === version);
}

class Resolver {
  constructor({ main, packages }) {
    this.main = main;
    this.packages = packages;
  }
  // The interface a path names, seen from package `from`.
  findInterface(path, from) {
    if (!path.namespace) {
      const pkg = this.packages.find((p) => p.name === from);
      const iface = pkg?.interfaces.find((i) => i.name === path.name);
      if (!iface) throw new Error(`no interface \`${path.name}\` in ${from}`);
      return { pkg: pkg.name, iface };
    }
    for (const pkg of this.packages) {
      if (!versionMatches(pkg.name, path.namespace, path.pkg, path.version)) continue;
      const iface = pkg.interfaces.find((i) => i.name === path.name);
      if (iface) return { pkg: pkg.name, iface };
    }
    throw new Error(`no interface ${path.namespace}:${path.pkg}/${path.name}${path.version ? `@${path.version}` : ""} in the WIT read`);
  }
  // Resolves a parsed type in `scope` (an interface or world of package
  // `pkg`) to a type description.
  type(ty, scope, pkg, seen = new Set()) {
    if (ty === null || typeof ty === "string") return ty;
    const r = (t) => this.type(t, scope, pkg, seen);
    if ("list" in ty) return ty.len === undefined ? { list: r(ty.list) } : { list: r(ty.list), len: ty.len };
    if ("option" in ty) return { option: r(ty.option) };
    if ("result" in ty) return { result: { ok: r(ty.result.ok), err: r(ty.result.err) } };
    if ("tuple" in ty) return { tuple: ty.tuple.map(r) };
    if ("map" in ty) return { map: ty.map.map(r) };
    if ("unsupported" in ty) return ty;
    if ("borrow" in ty || "own" in ty) {
      const kind = "borrow" in ty ? "borrow" : "own";
      return { [kind]: ty[kind].ref };
    }
    return this.named(ty.ref, scope, pkg, seen);
  }
  named(name, scope, pkg, seen) {
    const def = scope.types.get(name);
    if (def) {
      const key = `${pkg}/${scope.name}/${name}`;
      if (seen.has(key)) throw new Error(`type \`${name}\` refers to itself`);
      const inner = new Set(seen).add(key);
      const r = (t) => this.type(t, scope, pkg, inner);
      switch (def.kind) {
        case "alias":
          return r(def.ty);
        case "record":
          return { record: def.fields.map(([n, t]) => [n, r(t)]) };
        case "variant":
          return { variant: def.cases.map(([n, t]) => [n, t === null ? null : r(t)]) };
        case "enum":
          return { enum: def.names };
        case "flags":
          return { flags: def.names };
        case "resource":
          return { own: name };
      }
    }
    const use = scope.uses.get(name);
    if (use) {
      const { pkg: p, iface } = this.findInterface(use.from, pkg);
      return this.named(use.name, iface, p, seen);
    }
    throw new Error(`unknown type \`${name}\``);
  }
  func(f, scope, pkg) {
    return {
      params: f.params.map(([n, t]) => [n, this.type(t, scope, pkg)]),
      result: this.type(f.result, scope, pkg),
    };
  }
}

/**
 * The functions the world `worldName` (default: the main package's only
 * world) of the WIT at `path` exports, keyed as `tessera call` names them:
 * `name` for a function of the world, `<interface>#<name>` for one of an
 * interface (the interface being `name`, `ns:pkg/name` or
 * `ns:pkg/name@version`; every form is a key). Each is
 * `{ interface, name, params: [[name, type], …], result: type | null }`,
 * `interface` being the full name jco exports the interface under
 * (`ns:pkg/name@version`), or null.
 */
export function exportedFunctions(path, worldName) {
  const wit = loadWit(path);
  const resolver = new Resolver(wit);
  const main = wit.packages.find((p) => p.name === wit.main);
  if (!main) throw new Error(`${path}: no package`);
  let world;
  if (worldName) {
    world = main.worlds.find((w) => w.name === worldName);
    if (!world) throw new Error(`${path}: no world \`${worldName}\` in ${main.name}`);
  } else {
    if (main.worlds.length !== 1) {
      throw new Error(`${path}: ${main.worlds.length} worlds in ${main.name}; name one`);
    }
    world = main.worlds[0];
  }
  const functions = {};
  for (const e of world.exports) {
    if (e.kind === "func") {
      functions[e.name] = { interface: null, name: e.name, ...resolver.func(e, world, main.name) };
      continue;
    }
    let pkg, iface, ifaceName, keys;
    if (e.kind === "inline") {
      pkg = main.name;
      iface = { name: e.name, ...e.iface };
      ifaceName = e.name;
      keys = [e.name];
    } else {
      ({ pkg, iface } = resolver.findInterface(e.path, main.name));
      const [base, version] = pkg.split("@");
      ifaceName = `${base}/${iface.name}${version ? `@${version}` : ""}`;
      keys = [...new Set([iface.name, `${base}/${iface.name}`, ifaceName])];
    }
    for (const f of iface.funcs) {
      const desc = { interface: ifaceName, name: f.name, ...resolver.func(f, iface, pkg) };
      for (const key of keys) functions[`${key}#${f.name}`] = desc;
    }
  }
  return functions;
}
