// The `catalog` interface of the `tool` world (wit/example/catalog.wit),
// built into a component by componentize-js. The same interface is
// implemented in Rust, Python, C and Go under components/example-<language>,
// and every one answers the same JSON to the same call.
//
// How the WIT types arrive here: records are objects with camelCase fields
// (`priceCents`), `option<T>` is the value or `undefined`, `u32` a Number,
// `u64` a BigInt, a variant `{ tag: "unknown-item", val: name }`, and the
// `err` case of a `result` is whatever the function throws.

const U32_MAX = 4294967295;

// Orders strings by code point, which is the byte order of their UTF-8.
// JavaScript's own `<` and `sort()` compare UTF-16 code units, which put
// U+10000 and above (surrogate pairs) before U+E000..U+FFFF.
function byCodePoint(a, b) {
  const x = a[Symbol.iterator]();
  const y = b[Symbol.iterator]();
  for (;;) {
    const p = x.next();
    const q = y.next();
    if (p.done || q.done) {
      return (p.done ? 0 : 1) - (q.done ? 0 : 1);
    }
    const d = p.value.codePointAt(0) - q.value.codePointAt(0);
    if (d !== 0) {
      return d;
    }
  }
}

function summarize(items) {
  // u64 sums as BigInt: a Number is exact only up to 2^53.
  let units = 0n;
  let valueCents = 0n;
  let largest;
  const tags = new Set();
  for (const item of items) {
    units += BigInt(item.quantity);
    if (item.priceCents !== undefined) {
      valueCents = BigInt.asUintN(64, valueCents + BigInt(item.quantity) * BigInt(item.priceCents));
    }
    // Strictly more: the first item wins a tie.
    if (largest === undefined || item.quantity > largest.quantity) {
      largest = item;
    }
    for (const tag of item.tags) {
      tags.add(tag);
    }
  }
  return {
    items: items.length,
    units,
    valueCents,
    largest: largest?.name,
    tags: [...tags].sort(byCodePoint),
  };
}

function filter(items, tag) {
  if (tag === undefined) {
    return items;
  }
  return items.filter((item) => item.tags.includes(tag));
}

function restock(items, name, units) {
  const item = items.find((item) => item.name === name);
  if (item === undefined) {
    // A thrown value becomes the `err` case of the `result`.
    throw { tag: "unknown-item", val: name };
  }
  if (item.quantity + units > U32_MAX) {
    throw { tag: "overflow" };
  }
  item.quantity += units;
  return items;
}

export const catalog = { summarize, filter, restock };
