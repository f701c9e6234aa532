// Tessera's JSON for WIT values ↔ the JavaScript values of jco's bindings,
// driven by the type descriptions wit.mjs makes. Runs in the page (and in
// Node: it uses nothing of either).
//
// Tessera's mapping (crates/tessera-runtime/src/json.rs):
//   integers → numbers (64-bit ones exact); f32/f64 → numbers, or "NaN",
//   "Infinity", "-Infinity"; char, string → strings; list, tuple → arrays;
//   record → object keyed by the WIT field names; variant → "case" or
//   {"case": payload}; enum → "case"; option → null or the value
//   ({"some": …} when the inner type is itself an option); result →
//   {"ok": …} / {"err": …} (null payload when absent); flags → array of the
//   set names.
// jco's: 64-bit integers → BigInt; lists of numbers → typed arrays;
//   records and flags → objects keyed by lowerCamelCase names (flags as
//   booleans); variant → {tag, val}; enum → "case"; option → undefined or
//   the value ({tag: "none"} / {tag: "some", val} when the inner type is an
//   option); result → {tag: "ok" | "err", val}, except a function's own
//   result, which is returned when ok and thrown (a ComponentError whose
//   `payload` is the error) when not.

/** A number whose JSON text is already made (bigints, floats). */
export class RawNumber {
  constructor(text) {
    this.text = text;
  }
}

/** jco's name for a WIT identifier: `price-cents` → `priceCents`. */
export function camel(name) {
  return name
    .split("-")
    .map((w, i) => (i === 0 ? w.toLowerCase() : w.charAt(0).toUpperCase() + w.slice(1).toLowerCase()))
    .join("");
}

const TYPED_ARRAYS = {
  u8: Uint8Array, s8: Int8Array, u16: Uint16Array, s16: Int16Array,
  u32: Uint32Array, s32: Int32Array, u64: BigUint64Array, s64: BigInt64Array,
  f32: Float32Array, f64: Float64Array,
};

const INT_RANGES = {
  s8: [-(2n ** 7n), 2n ** 7n - 1n], u8: [0n, 2n ** 8n - 1n],
  s16: [-(2n ** 15n), 2n ** 15n - 1n], u16: [0n, 2n ** 16n - 1n],
  s32: [-(2n ** 31n), 2n ** 31n - 1n], u32: [0n, 2n ** 32n - 1n],
  s64: [-(2n ** 63n), 2n ** 63n - 1n], u64: [0n, 2n ** 64n - 1n],
};

function kindOf(ty) {
  return typeof ty === "string" ? ty : Object.keys(ty).find((k) => k !== "len");
}

function isOption(ty) {
  return ty !== null && typeof ty === "object" && "option" in ty;
}

function bad(path, what, v) {
  let shown;
  try {
    shown = JSON.stringify(v, (_, x) => (typeof x === "bigint" ? x.toString() : x));
  } catch {
    shown = String(v);
  }
  return new TypeError(`${path}: expected ${what}, got ${shown}`);
}

/**
 * Tessera's JSON `v` (integers beyond 2^53 as BigInt) as the value jco's
 * bindings take for type `ty`.
 */
export function toJco(v, ty, path = "$") {
  const kind = kindOf(ty);
  switch (kind) {
    case "bool":
      if (typeof v !== "boolean") throw bad(path, "bool", v);
      return v;
    case "s8": case "u8": case "s16": case "u16":
    case "s32": case "u32": case "s64": case "u64": {
      let n;
      if (typeof v === "bigint") n = v;
      else if (typeof v === "number" && Number.isInteger(v)) n = BigInt(v);
      else throw bad(path, kind, v);
      const [lo, hi] = INT_RANGES[kind];
      if (n < lo || n > hi) throw bad(path, kind, v);
      return kind === "s64" || kind === "u64" ? n : Number(n);
    }
    case "f32": case "f64":
      if (typeof v === "number") return v;
      if (typeof v === "bigint") return Number(v);
      if (v === "NaN") return NaN;
      if (v === "Infinity") return Infinity;
      if (v === "-Infinity") return -Infinity;
      throw bad(path, kind, v);
    case "char":
      if (typeof v !== "string" || [...v].length !== 1) throw bad(path, "char", v);
      return v;
    case "string":
      if (typeof v !== "string") throw bad(path, "string", v);
      return v;
    case "list": {
      if (!Array.isArray(v)) throw bad(path, "list", v);
      if (ty.len !== undefined && v.length !== ty.len) throw bad(path, `${ty.len} items`, v);
      const items = v.map((x, i) => toJco(x, ty.list, `${path}[${i}]`));
      const Typed = typeof ty.list === "string" ? TYPED_ARRAYS[ty.list] : undefined;
      return Typed ? Typed.from(items) : items;
    }
    case "tuple":
      if (!Array.isArray(v) || v.length !== ty.tuple.length) throw bad(path, `tuple of ${ty.tuple.length}`, v);
      return v.map((x, i) => toJco(x, ty.tuple[i], `${path}[${i}]`));
    case "map":
      if (!Array.isArray(v)) throw bad(path, "map", v);
      return new Map(v.map((pair, i) => [
        toJco(pair[0], ty.map[0], `${path}[${i}][0]`),
        toJco(pair[1], ty.map[1], `${path}[${i}][1]`),
      ]));
    case "record": {
      if (v === null || typeof v !== "object" || Array.isArray(v)) throw bad(path, "record", v);
      const out = {};
      for (const [name, fty] of ty.record) {
        const x = v[name];
        if (x === undefined && !isOption(fty)) throw bad(`${path}.${name}`, "a field", x);
        out[camel(name)] = toJco(x === undefined ? null : x, fty, `${path}.${name}`);
      }
      for (const k of Object.keys(v)) {
        if (!ty.record.some(([n]) => n === k)) throw bad(`${path}.${k}`, "no such field", v[k]);
      }
      return out;
    }
    case "variant": {
      const [tag, payload, hasPayload] = tagged(v, path);
      const c = ty.variant.find(([n]) => n === tag);
      if (!c) throw bad(path, `a case of ${ty.variant.map(([n]) => n).join(", ")}`, v);
      if (c[1] === null) {
        if (hasPayload && payload !== null) throw bad(path, `no payload for ${tag}`, v);
        return { tag };
      }
      if (!hasPayload) throw bad(path, `a payload for ${tag}`, v);
      return { tag, val: toJco(payload, c[1], `${path}.${tag}`) };
    }
    case "enum":
      if (!ty.enum.includes(v)) throw bad(path, `one of ${ty.enum.join(", ")}`, v);
      return v;
    case "flags": {
      if (!Array.isArray(v)) throw bad(path, "flags", v);
      const out = {};
      for (const name of ty.flags) out[camel(name)] = false;
      for (const x of v) {
        if (!ty.flags.includes(x)) throw bad(path, `flags of ${ty.flags.join(", ")}`, v);
        out[camel(x)] = true;
      }
      return out;
    }
    case "option":
      if (isOption(ty.option)) {
        if (v === null) return { tag: "none" };
        if (v === null || typeof v !== "object" || !("some" in v)) throw bad(path, 'null or {"some": …}', v);
        return { tag: "some", val: toJco(v.some, ty.option, `${path}.some`) };
      }
      return v === null ? undefined : toJco(v, ty.option, path);
    case "result": {
      const [tag, payload, hasPayload] = tagged(v, path);
      if (tag !== "ok" && tag !== "err") throw bad(path, '{"ok": …} or {"err": …}', v);
      const pty = ty.result[tag];
      if (pty === null) {
        if (hasPayload && payload !== null) throw bad(path, `no payload for ${tag}`, v);
        return { tag, val: undefined };
      }
      if (!hasPayload) throw bad(path, `a payload for ${tag}`, v);
      return { tag, val: toJco(payload, pty, `${path}.${tag}`) };
    }
    default:
      throw new TypeError(`${path}: ${kind} values cannot be passed from JSON`);
  }
}

// `"case"` or `{"case": payload}` → [case, payload, has payload].
function tagged(v, path) {
  if (typeof v === "string") return [v, undefined, false];
  if (v !== null && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length === 1) {
    const [k] = Object.keys(v);
    return [k, v[k], true];
  }
  throw bad(path, '"case" or {"case": payload}', v);
}

// A float's JSON as Tessera (serde_json) writes it: always with a fraction
// or an exponent, so that both sides parse to the same JSON number.
function f64Json(x) {
  if (Number.isNaN(x)) return "NaN";
  if (x === Infinity) return "Infinity";
  if (x === -Infinity) return "-Infinity";
  if (Object.is(x, -0)) return new RawNumber("-0.0");
  const s = String(x);
  return new RawNumber(/^-?[0-9]+$/.test(s) ? `${s}.0` : s);
}

// Tessera prints an f32 as the shortest decimal that reads back as the same
// f32, taken as an f64.
function f32Json(x) {
  if (!Number.isFinite(x)) return f64Json(x);
  for (let p = 1; p <= 9; p++) {
    const shortest = Number(x.toPrecision(p));
    if (Math.fround(shortest) === x) return f64Json(shortest);
  }
  return f64Json(x);
}

/** jco's value `v` of type `ty` as Tessera's JSON (see `stringify`). */
export function fromJco(v, ty) {
  const kind = kindOf(ty);
  switch (kind) {
    case "bool": case "char": case "string": case "enum":
      return v;
    case "s8": case "u8": case "s16": case "u16": case "s32": case "u32":
      return Number(v);
    case "s64": case "u64":
      return new RawNumber(BigInt(v).toString());
    case "f32":
      return f32Json(Math.fround(v));
    case "f64":
      return f64Json(v);
    case "list":
      return Array.from(v, (x) => fromJco(x, ty.list));
    case "tuple":
      return ty.tuple.map((t, i) => fromJco(v[i], t));
    case "map":
      return Array.from(v instanceof Map ? v.entries() : v, ([k, x]) => [fromJco(k, ty.map[0]), fromJco(x, ty.map[1])]);
    case "record": {
      const out = {};
      for (const [name, fty] of ty.record) out[name] = fromJco(v[camel(name)], fty);
      return out;
    }
    case "variant": {
      const c = ty.variant.find(([n]) => n === v.tag);
      if (!c) throw new TypeError(`variant case ${v.tag} is not one of the type's`);
      return c[1] === null ? c[0] : { [c[0]]: fromJco(v.val, c[1]) };
    }
    case "flags":
      return ty.flags.filter((name) => v[camel(name)]);
    case "option":
      if (isOption(ty.option)) {
        return v.tag === "none" ? null : { some: fromJco(v.val, ty.option) };
      }
      return v === undefined || v === null ? null : fromJco(v, ty.option);
    case "result": {
      const pty = ty.result[v.tag];
      return { [v.tag]: pty === null ? null : fromJco(v.val, pty) };
    }
    case "own": case "borrow":
      return "<resource>";
    default:
      throw new TypeError(`${kind} values have no JSON form`);
  }
}

/**
 * Calls `fn` (a jco export) with Tessera's JSON arguments `args` (an object
 * keyed by parameter name) for the function `desc` ({ params, result }).
 * Returns `{ ok, result }` as Tessera's JSON: `ok` is false only for the
 * `err` of a `result` the function returns, as in `tessera call --json`.
 * What the guest throws otherwise (a trap) is thrown.
 */
export function callWithJson(fn, desc, args) {
  for (const ty of [...desc.params.map(([, t]) => t), desc.result]) {
    const why = notJsonCallable(ty);
    if (why) throw new TypeError(why);
  }
  if (args === null || typeof args !== "object" || Array.isArray(args)) {
    throw new TypeError("$: the arguments must be an object keyed by parameter name");
  }
  for (const k of Object.keys(args)) {
    if (!desc.params.some(([n]) => n === k)) throw new TypeError(`$.${k}: no such parameter`);
  }
  const values = desc.params.map(([name, ty]) => {
    const v = args[name];
    if (v === undefined && !isOption(ty)) throw new TypeError(`$.${name}: missing argument`);
    return toJco(v === undefined ? null : v, ty, `$.${name}`);
  });
  return { values, finish: () => invoke(fn, desc, values) };
}

// Why a type cannot cross the JSON boundary, if it cannot (as Tessera's
// `json::not_json_callable`).
function notJsonCallable(ty) {
  if (ty === null || typeof ty === "string") return null;
  const kind = kindOf(ty);
  switch (kind) {
    case "own": case "borrow":
      return "resources are handles into a live instance and are not callable from JSON";
    case "unsupported":
      return "async futures, streams and error contexts are not callable from JSON";
    case "list": return notJsonCallable(ty.list);
    case "option": return notJsonCallable(ty.option);
    case "map": case "tuple": return ty[kind].map(notJsonCallable).find(Boolean) ?? null;
    case "result": return notJsonCallable(ty.result.ok) ?? notJsonCallable(ty.result.err);
    case "record": return ty.record.map(([, t]) => notJsonCallable(t)).find(Boolean) ?? null;
    case "variant": return ty.variant.map(([, t]) => notJsonCallable(t)).find(Boolean) ?? null;
    default: return null;
  }
}

function invoke(fn, desc, values) {
  const ty = desc.result;
  const isResult = ty !== null && typeof ty === "object" && "result" in ty;
  let ret;
  try {
    ret = fn(...values);
  } catch (e) {
    // jco throws the `err` of the function's own `result` as a
    // ComponentError carrying it as `payload`.
    if (isResult && e !== null && typeof e === "object" && Object.prototype.hasOwnProperty.call(e, "payload")) {
      const ety = ty.result.err;
      return { ok: false, result: { err: ety === null ? null : fromJco(e.payload, ety) } };
    }
    throw e;
  }
  if (ty === null) return { ok: true, result: null };
  if (isResult) {
    const oty = ty.result.ok;
    return { ok: true, result: { ok: oty === null ? null : fromJco(ret, oty) } };
  }
  return { ok: true, result: fromJco(ret, ty) };
}

/** JSON text of a value from `fromJco` (RawNumber written as it is). */
export function stringify(v) {
  if (v instanceof RawNumber) return v.text;
  if (v === null || typeof v === "boolean") return String(v);
  if (typeof v === "number") {
    if (!Number.isFinite(v)) throw new TypeError(`${v} has no JSON form`);
    return String(v);
  }
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "string") return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(stringify).join(",")}]`;
  return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}:${stringify(x)}`).join(",")}}`;
}

/**
 * Parses JSON keeping integers beyond 2^53 exact, as BigInt (needs the
 * reviver's `source`, which Chromium has and Node 20 has not; without it
 * such integers lose precision, as with JSON.parse).
 */
export function parseJson(text) {
  return JSON.parse(text, function (_key, value, context) {
    if (typeof value === "number" && !Number.isSafeInteger(value) && context?.source && /^-?[0-9]+$/.test(context.source)) {
      return BigInt(context.source);
    }
    return value;
  });
}
