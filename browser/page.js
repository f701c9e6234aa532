// The page's side of browser/run.mjs: instantiates each transpiled
// component afresh for every call (as Tessera does), with WASI from
// preview2-shim's browser build, and returns each call's answer as
// Tessera's JSON text.

import { WASIShim } from "@bytecodealliance/preview2-shim/instantiation";
import { _setStdout, _setStderr, _setEnv, _setArgs } from "@bytecodealliance/preview2-shim/cli";
import { _setPreopens } from "@bytecodealliance/preview2-shim/filesystem";
import { callWithJson, camel, parseJson, stringify } from "./values.js";

// Nothing granted, as Tessera without a manifest: no preopened directory
// (the browser shim otherwise preopens an in-memory "/"), no environment
// variables, no arguments.
_setPreopens({});
_setEnv({});
_setArgs([]);

// What the current call writes and logs.
let captured = null;
const decoder = () => new TextDecoder("utf-8");
function sink(name) {
  return {
    write(bytes) {
      if (captured) captured[name].push(new Uint8Array(bytes));
    },
    blockingFlush() {},
  };
}
_setStdout(sink("stdout"));
_setStderr(sink("stderr"));

function text(chunks) {
  const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return decoder().decode(all);
}

// `wasi:logging/logging`, which preview2-shim has not: records each log as
// Tessera reports it ({level, context, message}).
const logging = {
  log(level, context, message) {
    if (captured) captured.logs.push({ level, context, message });
  },
};

const modules = new Map();
function compile(url) {
  if (!modules.has(url)) modules.set(url, WebAssembly.compileStreaming(fetch(url)));
  return modules.get(url);
}

const bindings = new Map();
function load(url) {
  if (!bindings.has(url)) bindings.set(url, import(url));
  return bindings.get(url);
}

function errorJson(kind, e) {
  const out = { kind, message: String(e?.message ?? e) };
  if (e?.exitError) {
    out.kind = "exit";
    out.code = e.code;
  }
  return out;
}

/**
 * Runs `plan.calls`, each `{ component, function, desc }`, with the
 * arguments of the same call in the calls file, `plan.callsText`, parsed
 * here so that integers past 2^53 stay exact; components are
 * `plan.components[name] = { url }` (of the transpiled JavaScript). Returns
 * one JSON text per call.
 */
async function runCalls(plan) {
  const args = parseJson(plan.callsText).calls.map((c) => c.args ?? {});
  const out = [];
  for (const [i, call] of plan.calls.entries()) {
    const head = `"component":${JSON.stringify(call.component)},"function":${JSON.stringify(call.function)}`;
    const { url } = plan.components[call.component];
    let prepared;
    try {
      prepared = callWithJson(null, call.desc, args[i]);
    } catch (e) {
      out.push(`{${head},"ok":false,"error":${JSON.stringify(errorJson("bad-input", e))}}`);
      continue;
    }
    captured = { stdout: [], stderr: [], logs: [] };
    let answer;
    let fn = null;
    try {
      const { instantiate } = await load(url);
      const imports = new WASIShim().getImportObject();
      imports["wasi:logging/logging"] = logging;
      const root = await instantiate((path) => compile(new URL(path, url).href), imports);
      const scope = call.desc.interface === null ? root : root[call.desc.interface];
      fn = scope?.[camel(call.desc.name)];
      if (typeof fn !== "function") throw new Error(`the component exports no function ${call.function}`);
    } catch (e) {
      answer = `"ok":false,"error":${JSON.stringify(errorJson("load", e))}`;
    }
    if (fn) {
      try {
        const { ok, result } = callWithJson(fn, call.desc, args[i]).finish();
        answer = `"ok":${ok},"result":${stringify(result)}`;
      } catch (e) {
        answer = `"ok":false,"error":${JSON.stringify(errorJson("trap", e))}`;
      }
    }
    const io = `"stdout":${JSON.stringify(text(captured.stdout))},"stderr":${JSON.stringify(text(captured.stderr))},"logs":${JSON.stringify(captured.logs)}`;
    captured = null;
    out.push(`{${head},${answer},${io}}`);
  }
  return out;
}

window.runCalls = runCalls;
window.tesseraReady = true;
