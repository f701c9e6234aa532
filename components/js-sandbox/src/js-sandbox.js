// The `interpreter` interface of the `sandbox` world (wit/sandbox/sandbox.wit),
// built into a component by componentize-js: JavaScript code given at run
// time, evaluated by SpiderMonkey (through StarlingMonkey).
//
// `run` evaluates the code as a script in the global scope with indirect
// eval: the value of its last expression statement is the result, and what
// it declares is there for the next `run` on the same instance. Eval keeps
// top-level `let`, `const` and `class` to itself, so those are made global
// first, and code with a dynamic `import()` is refused (`prepare`).
//
// The code shares this module's realm and can replace any built-in, so
// everything used after it ran is captured here, before any code runs; the
// results handed to the bindings have no prototype; and the few built-ins the
// generated bindings use to write a result are put back after every run
// (`restoreIntrinsics`).

import { parse } from "../node_modules/acorn/dist/acorn.mjs";

const { apply, defineProperty, getOwnPropertyDescriptor, getPrototypeOf } = Reflect;
const keys = Object.keys;
const globalEval = eval;
const stringify = JSON.stringify;
const isArray = Array.isArray;
const ErrorCtor = Error;
const isError = Error.isError;
const toStr = String;
const objectToString = Object.prototype.toString;
const ObjectPrototype = Object.prototype;
const includes = String.prototype.includes;
const indexOf = String.prototype.indexOf;
const lastIndexOf = String.prototype.lastIndexOf;
const slice = String.prototype.slice;
const stackOf = getOwnPropertyDescriptor(Error.prototype, "stack").get;
const PromiseCtor = Promise;
const then = Promise.prototype.then;
const setTimer = setTimeout;
const clearTimer = clearTimeout;

// How long `run` waits for a promise (the value of the code) to settle. A
// promise nothing will ever settle would otherwise end StarlingMonkey's
// event loop with a trap, and the instance with it.
const PROMISE_WAIT_MS = 5000;

// Built-ins the bindings componentize-js generates use to read the code and
// write the result into linear memory: if the code replaced one, the next
// result could not be returned.
const INTRINSICS = [
  [globalThis, "Uint8Array"],
  [globalThis, "DataView"],
  [DataView.prototype, "buffer"],
  [DataView.prototype, "setInt8"],
  [DataView.prototype, "setInt32"],
  [DataView.prototype, "setUint32"],
  [String.prototype, "charCodeAt"],
  [TextEncoder.prototype, "encodeInto"],
  [TextDecoder.prototype, "decode"],
  [Function.prototype, "call"],
  [Promise.prototype, "then"],
  [Promise.prototype, "constructor"],
].map(([target, key]) => [target, key, getOwnPropertyDescriptor(target, key)]);

function restoreIntrinsics() {
  for (let i = 0; i < INTRINSICS.length; i++) {
    // Indexed, not destructured: destructuring an array calls its iterator.
    const entry = INTRINSICS[i];
    try {
      defineProperty(entry[0], entry[1], entry[2]);
    } catch {
      // A frozen replacement stays; there is nothing more to do.
    }
  }
}

// StarlingMonkey writes `console.debug` to stderr; here it goes to stdout
// with `log` and `info`, while `warn` and `error` stay on stderr.
const log = console.log;
console.debug = log;

// StarlingMonkey's `console.trace` prints the whole stack, this module's
// frames too; here it prints the frames of the code, as tracebacks do.
console.trace = function trace(...args) {
  apply(log, undefined, args.length > 0 ? args : ["Trace"]);
  const frames = userFrames(apply(stackOf, new ErrorCtor(), [])).text;
  if (frames !== "") {
    log(apply(slice, frames, [1]));
  }
};

// The one place code is evaluated, so that every script it runs has the same
// file name in stack traces: `CODE_FILE`, this file's name plus " line N >
// eval". Frames in it (or in code the code evaluated itself) are the code's.
function evaluate(code) {
  return globalEval(code);
}

const MODULE_FILE = new Error().fileName;
const CODE_FILE = evaluate("new Error().fileName");
const CODE_NAME = "<code>";

// --- Before the code runs ------------------------------------------------

// Where the current run's code had text inserted by `prepare`, which shifts
// the columns after it on its line: { line, column, length }, line and
// column 1-based, column in the rewritten code.
let insertions = [];

// The first dynamic `import()` in `node` (an acorn AST), if any.
function findImport(node) {
  if (node.type === "ImportExpression") {
    return node;
  }
  const names = keys(node);
  for (let i = 0; i < names.length; i++) {
    const child = node[names[i]];
    if (typeof child === "object" && child !== null) {
      const found = isArray(child) || typeof child.type === "string" ? findImport(child) : undefined;
      if (found !== undefined) {
        return found;
      }
    }
  }
  return undefined;
}

// Returns the code to evaluate for `code`.
//
// Its top-level `let` and `const` become `var` (of the same length, so
// positions do not move), and each top-level class is followed by a
// declaration that copies it onto the global object when it is defined (a
// class declaration, since its completion is empty: the value of the code
// stays that of its last statement). Strict code is left alone: strict eval
// keeps even `var` to itself.
//
// A dynamic `import()` would make StarlingMonkey look for the module in the
// filesystem, whose functions componentize-js replaces with traps: the
// instance would end. Code that has one (outside strings it evaluates
// itself) throws a TypeError instead, before any of it runs.
//
// Code that does not parse is returned as it is, for SpiderMonkey to report.
function prepare(code) {
  insertions = [];
  const imports = apply(includes, code, ["import"]);
  if (!imports && !apply(includes, code, ["let"]) && !apply(includes, code, ["const"]) && !apply(includes, code, ["class"])) {
    return code;
  }
  let program;
  try {
    program = parse(code, { ecmaVersion: "latest", sourceType: "script", locations: true });
  } catch {
    return code;
  }
  if (imports) {
    let found;
    try {
      found = findImport(program);
    } catch {
      // Too deep to walk; SpiderMonkey has parsed deeper code than acorn.
    }
    if (found !== undefined) {
      const refusal = new TypeError("import() is not available: the sandbox has no modules to load");
      refusal.lineNumber = found.loc.start.line;
      refusal.columnNumber = found.loc.start.column + 1;
      throw refusal;
    }
  }
  const body = program.body;
  for (let i = 0; i < body.length && typeof body[i].directive === "string"; i++) {
    if (body[i].directive === "use strict") {
      return code;
    }
  }
  let out = "";
  let done = 0;
  let shiftLine = 0;
  let shift = 0;
  for (let i = 0; i < body.length; i++) {
    const node = body[i];
    if (node.type === "VariableDeclaration" && (node.kind === "let" || node.kind === "const")) {
      const end = node.start + node.kind.length;
      if (apply(slice, code, [node.start, end]) === node.kind) {
        out += apply(slice, code, [done, node.start]) + (node.kind === "let" ? "var" : "var  ");
        done = end;
      }
    } else if (node.type === "ClassDeclaration") {
      const name = node.id.name;
      const copy = ` class __tessera_${name} { static { globalThis.${name} = ${name}; } }`;
      out += apply(slice, code, [done, node.end]) + copy;
      done = node.end;
      const line = node.loc.end.line;
      shift = line === shiftLine ? shift : 0;
      shiftLine = line;
      insertions[insertions.length] = { __proto__: null, line, column: node.loc.end.column + 1 + shift, length: copy.length };
      shift += copy.length;
    }
  }
  return out + apply(slice, code, [done]);
}

// A column of the current run's rewritten code as a column of its code.
function originalColumn(line, column) {
  let original = column;
  for (let i = 0; i < insertions.length; i++) {
    const at = insertions[i];
    if (at.line === line && column >= at.column + at.length) {
      original -= at.length;
    }
  }
  return original;
}

// --- Values ----------------------------------------------------------------

function isPlain(value) {
  if (isArray(value)) {
    return true;
  }
  const proto = getPrototypeOf(value);
  return proto === ObjectPrototype || proto === null;
}

// JSON.stringify(value) when it represents the value: not for what it
// skips (undefined, functions, symbols) or refuses (BigInt, cycles), not
// for a non-finite number (it would say `null`), and not for an object
// other than a plain one or an array that has nothing to say but `{}` (a
// Map, a Set, a Promise, a RegExp, an Error, …).
function toJson(value) {
  if (typeof value === "number" && (value !== value || value === Infinity || value === -Infinity)) {
    return undefined;
  }
  let json;
  try {
    json = apply(stringify, undefined, [value]);
  } catch {
    return undefined;
  }
  if (typeof json !== "string") {
    return undefined;
  }
  if (json === "{}" && typeof value === "object" && !isPlain(value)) {
    return undefined;
  }
  return json;
}

// String(value), or a tag like `[object Object]` for what cannot be
// converted (an object without a prototype, a throwing `toString`).
function display(value) {
  try {
    return toStr(value);
  } catch {
    try {
      return apply(objectToString, value, []);
    } catch {
      return "[object]";
    }
  }
}

// The `value` record: `json` as above; `text` String(value) (a string is
// its own text), except that a plain object or an array, or another object
// whose String is just a tag like `[object Object]`, shows its JSON when it
// has one.
function describe(value) {
  const json = toJson(value);
  if (typeof value !== "object" || value === null || json === undefined) {
    return { __proto__: null, json, text: display(value) };
  }
  if (isPlain(value)) {
    return { __proto__: null, json, text: json };
  }
  const text = display(value);
  const tag = apply(indexOf, text, ["[object "]) === 0 && text[text.length - 1] === "]";
  return { __proto__: null, json, text: tag ? json : text };
}

// --- Failures --------------------------------------------------------------

function read(object, key) {
  try {
    return object[key];
  } catch {
    return undefined;
  }
}

// One frame of a SpiderMonkey stack, `name@file:line:column`.
function frame(line) {
  const at = apply(lastIndexOf, line, ["@"]);
  const colon2 = apply(lastIndexOf, line, [":"]);
  const colon1 = apply(lastIndexOf, line, [":", colon2 - 1]);
  if (at < 0 || colon1 <= at) {
    return undefined;
  }
  return {
    __proto__: null,
    name: apply(slice, line, [0, at]),
    file: apply(slice, line, [at + 1, colon1]),
    line: +apply(slice, line, [colon1 + 1, colon2]),
    column: +apply(slice, line, [colon2 + 1]),
  };
}

// The frames of `stack` in the code, file names shown as `<code>` and runs
// of a repeated frame (deep recursion) collapsed, plus the place of the
// innermost frame in the code itself (not in code it evaluated).
function userFrames(stack) {
  let text = "";
  let place;
  let previous = "";
  let repeats = 0;
  const flush = () => {
    if (repeats > 0) {
      text += `\n  [Previous line repeated ${repeats} more time${repeats === 1 ? "" : "s"}]`;
      repeats = 0;
    }
  };
  let start = 0;
  while (start < stack.length) {
    let end = apply(indexOf, stack, ["\n", start]);
    if (end < 0) {
      end = stack.length;
    }
    const f = frame(apply(slice, stack, [start, end]));
    start = end + 1;
    if (f === undefined || apply(indexOf, f.file, [CODE_FILE]) !== 0) {
      continue;
    }
    if (f.file === CODE_FILE) {
      // (A frame of an earlier run's code, on a line where this run's had a
      // class, would be moved too: SpiderMonkey names them all the same.)
      f.column = originalColumn(f.line, f.column);
      if (place === undefined) {
        place = f;
      }
    }
    const shown = `${f.name}@${CODE_NAME}${apply(slice, f.file, [CODE_FILE.length])}:${f.line}:${f.column}`;
    if (shown === previous) {
      repeats++;
      continue;
    }
    flush();
    text += `\n  ${shown}`;
    previous = shown;
  }
  flush();
  return { text, place };
}

function position(n) {
  return typeof n === "number" && n >= 1 && n <= 0xffffffff ? n >>> 0 : undefined;
}

// The `failure` record for a thrown value. An error (or an object with a
// string `name` and `message`, like a DOMException) gives its name as the
// kind; anything else thrown gives its `typeof` (`throw "x"`: kind `string`,
// message `x`).
function failure(thrown) {
  const errorLike =
    (typeof thrown === "object" || typeof thrown === "function") &&
    thrown !== null &&
    (isError(thrown) || (typeof read(thrown, "name") === "string" && typeof read(thrown, "message") === "string"));
  if (!errorLike) {
    const message = typeof thrown === "string" ? thrown : describe(thrown).text;
    return {
      __proto__: null,
      kind: typeof thrown,
      message,
      line: undefined,
      column: undefined,
      traceback: `uncaught exception: ${message}`,
    };
  }
  const name = read(thrown, "name");
  const kind = typeof name === "string" && name !== "" ? name : "Error";
  const rawMessage = read(thrown, "message");
  const message = typeof rawMessage === "string" ? rawMessage : rawMessage === undefined ? "" : display(rawMessage);
  let stack;
  try {
    stack = apply(stackOf, thrown, []);
  } catch {
    stack = read(thrown, "stack");
  }
  const frames = userFrames(typeof stack === "string" ? stack : "");
  let line;
  let column;
  let traceback = frames.text;
  if (isError(thrown) && read(thrown, "fileName") === MODULE_FILE && frames.place === undefined) {
    // The code as a whole failed (it did not parse, or `prepare` refused
    // it): the error's position is in the code.
    line = position(read(thrown, "lineNumber"));
    column = position(originalColumn(line, read(thrown, "columnNumber")));
    if (line !== undefined) {
      traceback = `\n  @${CODE_NAME}:${line}:${column ?? 1}`;
    }
  } else if (frames.place !== undefined) {
    line = position(frames.place.line);
    column = position(frames.place.column);
  }
  return { __proto__: null, kind, message, line, column, traceback: `${kind}: ${message}${traceback}` };
}

// --- The interface ---------------------------------------------------------

const ok = (value) => ({ __proto__: null, tag: "ok", val: value === undefined ? undefined : describe(value) });
const err = (thrown) => ({ __proto__: null, tag: "err", val: failure(thrown) });

// `make(value)`, or a failure if turning the value into a result failed
// (say, out of memory in JSON.stringify).
function safe(make, value) {
  try {
    return make(value);
  } catch {
    const message = "the result could not be converted";
    return {
      __proto__: null,
      tag: "err",
      val: { __proto__: null, kind: "InternalError", message, line: undefined, column: undefined, traceback: `InternalError: ${message}` },
    };
  }
}

function isPromise(value) {
  if (typeof value !== "object" || value === null) {
    return false;
  }
  try {
    // Only a promise has a [[PromiseState]]; `then` checks for it and throws
    // for anything else. The reaction added does nothing.
    apply(then, value, [undefined, () => {}]);
    return true;
  } catch {
    return false;
  }
}

// Resolves `resolve` with `result` from a timer: jobs the code queued
// (promise reactions, zero-delay timers) run first, so none of them runs
// between the intrinsics being put back and the bindings writing the result.
function resolveLater(resolve, result) {
  setTimer(() => {
    restoreIntrinsics();
    resolve(result);
  }, 0);
}

function deliver(result) {
  return new PromiseCtor((resolve) => resolveLater(resolve, result));
}

// A promise of the result of a promise the code gave: its value, its
// rejection, or a failure after PROMISE_WAIT_MS.
function settle(promise) {
  return new PromiseCtor((resolve) => {
    const timer = setTimer(() => {
      const message = `the promise did not settle within ${PROMISE_WAIT_MS / 1000} s`;
      resolveLater(resolve, safe(err, { __proto__: null, name: "Error", message }));
    }, PROMISE_WAIT_MS);
    const done = (make) => (value) => {
      clearTimer(timer);
      resolveLater(resolve, safe(make, value));
    };
    apply(then, promise, [done(ok), done(err)]);
  });
}

function run(code) {
  let result;
  try {
    const value = evaluate(prepare(code));
    result = isPromise(value) ? settle(value) : deliver(safe(ok, value));
  } catch (e) {
    result = deliver(safe(err, e));
  }
  // The bindings await what `run` returns: that uses the promise intrinsics.
  restoreIntrinsics();
  return result;
}

export const interpreter = { run };

// Go through the parser and the paths above while the component is built, so
// that they are compiled into the snapshot rather than on each first use.
// (Nothing is evaluated that would declare a name or queue a job.)
prepare("let a = [1, { b: `c` }]; const d = a.map((x) => x * 2); class E { f() { return d; } }");
try {
  prepare("import('x')");
} catch (e) {
  failure(e);
}
describe(evaluate("[1, { b: 'c', d: [true, null] }]"));
for (const code of ["null.x", "("]) {
  try {
    evaluate(code);
  } catch (e) {
    failure(e);
  }
}
