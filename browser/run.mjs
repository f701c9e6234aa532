#!/usr/bin/env node
// Runs calls of Tessera components in headless Chromium and prints the
// answers as Tessera's JSON.
//
//   node browser/run.mjs [--out DIR] CALLS.json     (`-`: read stdin)
//
// CALLS.json:
//   {
//     "components": {
//       "hello": {"wasm": "../components/hello.wasm", "wit": "../components/hello/wit", "world": "hello"}
//     },
//     "calls": [
//       {"component": "hello", "function": "greet", "args": {"name": "web"}}
//     ]
//   }
// Paths are relative to the calls file's folder (to the current one for
// stdin). `function` is named as `tessera call` names it (`greet`,
// `types#echo-point`, `tessera:hello/types@0.1.0#echo-point`) and `args` is
// the same JSON object `tessera call --args` takes. `world` may be left out
// when the WIT's package has one world.
//
// What it does:
//   1. `jco transpile` turns each component into JavaScript and core wasm
//      (in DIR/<name>/, by default components/target/browser/<name>/;
//      again only when the component or jco changed), with
//      `--instantiation async` so that every call gets a fresh instance, as
//      in Tessera.
//   2. A static HTTP server on 127.0.0.1 (a free port) serves them, the
//      browser build of preview2-shim (WASI) and a page whose import map
//      resolves the `@bytecodealliance/preview2-shim/*` specifiers to it.
//   3. playwright-core starts Chromium ($CHROMIUM, else /usr/bin/chromium)
//      headless and opens the page, which converts each call's JSON
//      arguments to jco's values from the function's WIT types (read here
//      from the WIT, by wit.mjs), calls it and converts the answer back
//      (values.js).
//   4. One JSON document goes to stdout:
//        {"browser": "…", "jco": "…", "preview2_shim": "…", "playwright_core": "…",
//         "calls": [{"component", "function", "ok", "result" | "error",
//                    "stdout", "stderr", "logs"}, …]}
//      one entry per call, in order: `ok` and `result` as in `tessera call
//      --json` (`ok` false for the `err` of a returned `result`); a trap
//      is `"error": {"kind": "trap", "message": …}`, arguments that do not
//      fit the types `{"kind": "bad-input", …}`, a component that cannot
//      be instantiated (an import the page does not provide)
//      `{"kind": "load", …}`.
// Exit status 0 when every call ran (whatever it answered), 1 when the
// browser or the transpiler failed, 2 for a bad command line or calls file.

import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { dirname, extname, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

import { exportedFunctions } from "./wit.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..");
const modules = join(here, "node_modules");

function die(code, msg) {
  process.stderr.write(`browser/run.mjs: ${msg}\n`);
  process.exit(code);
}

function version(pkg) {
  try {
    return JSON.parse(readFileSync(join(modules, pkg, "package.json"), "utf8")).version;
  } catch {
    die(1, `${pkg} is not installed in browser/node_modules: run scripts/browser.sh`);
  }
}

// --- Command line and calls file -----------------------------------------

let out = join(root, "components/target/browser");
let callsPath = null;
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === "--out") out = resolve(argv[++i] ?? die(2, "--out needs a folder"));
  else if (argv[i] === "-h" || argv[i] === "--help") {
    process.stdout.write("usage: node browser/run.mjs [--out DIR] CALLS.json  (see the top of browser/run.mjs)\n");
    process.exit(0);
  } else if (callsPath === null) callsPath = argv[i];
  else die(2, `unexpected argument ${argv[i]}`);
}
if (callsPath === null) die(2, "usage: node browser/run.mjs [--out DIR] CALLS.json");

const callsText = callsPath === "-" ? readFileSync(0, "utf8") : readFileSync(callsPath, "utf8");
const base = callsPath === "-" ? process.cwd() : dirname(resolve(callsPath));
let spec;
try {
  spec = JSON.parse(callsText);
} catch (e) {
  die(2, `${callsPath}: ${e.message}`);
}
if (!spec?.components || !Array.isArray(spec.calls)) die(2, `${callsPath}: needs "components" and "calls"`);

const versions = {
  jco: version("@bytecodealliance/jco"),
  preview2_shim: version("@bytecodealliance/preview2-shim"),
  playwright_core: version("playwright-core"),
};

// --- Transpiling and reading the WIT -----------------------------------------

const components = {};
for (const [name, c] of Object.entries(spec.components)) {
  if (!/^[a-z][a-z0-9-]*$/.test(name)) die(2, `component name ${JSON.stringify(name)}: use a-z, 0-9 and -`);
  if (!c.wasm || !c.wit) die(2, `component ${name}: needs "wasm" and "wit"`);
  const wasm = resolve(base, c.wasm);
  const wit = resolve(base, c.wit);
  if (!existsSync(wasm)) die(2, `component ${name}: ${wasm} does not exist`);
  let functions;
  try {
    functions = exportedFunctions(wit, c.world);
  } catch (e) {
    die(2, `component ${name}: reading its WIT: ${e.message}`);
  }
  const dir = join(out, name);
  transpile(name, wasm, dir);
  components[name] = { dir, functions };
}

function transpile(name, wasm, dir) {
  const flags = ["--instantiation", "async", "--no-nodejs-compat", "--quiet"];
  const stamp = JSON.stringify({
    wasm: createHash("sha256").update(readFileSync(wasm)).digest("hex"),
    jco: versions.jco,
    flags,
  });
  const stampFile = join(dir, ".tessera-stamp.json");
  if (existsSync(join(dir, `${name}.js`)) && existsSync(stampFile) && readFileSync(stampFile, "utf8") === stamp) return;
  // Made beside the folder and moved into place, so that a run that fails
  // or runs alongside leaves no half-written output.
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  const started = Date.now();
  const jco = join(modules, ".bin/jco");
  const r = spawnSync(jco, ["transpile", wasm, "--name", name, "-o", tmp, ...flags], {
    stdio: ["ignore", process.stderr, "inherit"],
  });
  if (r.status !== 0) {
    rmSync(tmp, { recursive: true, force: true });
    die(1, `jco transpile ${wasm} failed (${r.error?.message ?? `status ${r.status}`})`);
  }
  writeFileSync(join(tmp, ".tessera-stamp.json"), stamp);
  rmSync(dir, { recursive: true, force: true });
  renameSync(tmp, dir);
  process.stderr.write(`transpiled ${wasm} with jco ${versions.jco} into ${dir} in ${Date.now() - started} ms\n`);
}

const calls = spec.calls.map((call, i) => {
  const c = components[call.component];
  if (!c) die(2, `calls[${i}]: no component ${JSON.stringify(call.component)}`);
  const desc = c.functions[call.function];
  if (!desc) {
    const names = Object.keys(c.functions).filter((k) => !k.includes(":"));
    die(2, `calls[${i}]: ${call.component} exports no function ${JSON.stringify(call.function)}; it has ${names.join(", ")}`);
  }
  return { component: call.component, function: call.function, desc };
});

// --- The server ----------------------------------------------------------------

const shimLib = join(modules, "@bytecodealliance/preview2-shim/lib");
const importMap = {
  imports: {
    "@bytecodealliance/preview2-shim": "/shim/browser/index.js",
    "@bytecodealliance/preview2-shim/instantiation": "/shim/common/instantiation.js",
  },
};
for (const f of readdirSync(join(shimLib, "browser"))) {
  if (f.endsWith(".js") && f !== "index.js") {
    importMap.imports[`@bytecodealliance/preview2-shim/${f.slice(0, -3)}`] = `/shim/browser/${f}`;
  }
}
const page = `<!doctype html>
<meta charset="utf-8">
<title>Tessera components in the browser</title>
<script type="importmap">${JSON.stringify(importMap)}</script>
<script type="module" src="/browser/page.js"></script>
`;

const TYPES = { ".js": "text/javascript", ".wasm": "application/wasm", ".html": "text/html", ".json": "application/json" };

// The file a URL path names, or null: only under the folders served.
function fileFor(path) {
  const inside = (dir, rest) => {
    const f = resolve(dir, rest);
    return f.startsWith(dir + sep) ? f : null;
  };
  let m;
  if ((m = /^\/browser\/(page\.js|values\.js)$/.exec(path))) return join(here, m[1]);
  if ((m = /^\/shim\/(.+)$/.exec(path))) return inside(shimLib, m[1]);
  if ((m = /^\/out\/([a-z][a-z0-9-]*)\/(.+)$/.exec(path)) && components[m[1]]) return inside(components[m[1]].dir, m[2]);
  return null;
}

const server = createServer((req, res) => {
  const path = decodeURIComponent(new URL(req.url, "http://localhost").pathname);
  const headers = { "cache-control": "no-store" };
  if (path === "/") {
    res.writeHead(200, { ...headers, "content-type": "text/html; charset=utf-8" }).end(page);
    return;
  }
  const file = fileFor(path);
  if (!file || !existsSync(file)) {
    res.writeHead(404, headers).end("not found");
    return;
  }
  res.writeHead(200, { ...headers, "content-type": TYPES[extname(file)] ?? "application/octet-stream" });
  res.end(readFileSync(file));
});
await new Promise((ok, fail) => server.listen(0, "127.0.0.1", ok).on("error", fail));
const origin = `http://127.0.0.1:${server.address().port}`;

// --- The browser ---------------------------------------------------------------

const { chromium } = await import("playwright-core");
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
if (!existsSync(executablePath)) {
  server.close();
  die(1, `no Chromium at ${executablePath}: run scripts/browser.sh (it installs Debian's chromium) or set CHROMIUM`);
}
let browser;
let code = 0;
try {
  browser = await chromium.launch({ executablePath, headless: true, args: ["--disable-dev-shm-usage"] });
  const tab = await browser.newPage();
  const problems = [];
  tab.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  tab.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") problems.push(`console ${m.type()}: ${m.text()}`);
  });
  tab.on("requestfailed", (r) => problems.push(`request failed: ${r.url()}`));
  tab.on("response", (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`);
  });
  await tab.goto(`${origin}/`);
  try {
    await tab.waitForFunction(() => window.tesseraReady === true, null, { timeout: 30_000 });
  } catch (e) {
    throw new Error(`the page did not load: ${e.message}\n${problems.join("\n")}`);
  }
  const plan = {
    callsText,
    calls,
    components: Object.fromEntries(Object.keys(components).map((n) => [n, { url: `${origin}/out/${n}/${n}.js` }])),
  };
  const answers = await tab.evaluate((p) => window.runCalls(p), plan);
  const head = Object.entries({ browser: `Chromium ${browser.version()}`, ...versions })
    .map(([k, v]) => `  ${JSON.stringify(k)}: ${JSON.stringify(v)},\n`)
    .join("");
  process.stdout.write(`{\n${head}  "calls": [\n${answers.map((a) => `    ${a}`).join(",\n")}\n  ]\n}\n`);
} catch (e) {
  process.stderr.write(`browser/run.mjs: ${e.stack ?? e}\n`);
  code = 1;
} finally {
  await browser?.close();
  server.close();
}
process.exit(code);
