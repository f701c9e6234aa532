// The `text` interface and the `reverse` function of the `text-js` world
// (wit/text.wit), built into a component by componentize-js.

// StarlingMonkey has no Unicode property classes in regular expressions:
// words are ASCII letters and digits here.
const WORD = /[A-Za-z0-9]+/g;

function count(text) {
  const words = text.split(/\s+/).filter((w) => w.length > 0);
  const freq = new Map();
  let topWord;
  let best = 0;
  for (const w of words) {
    const key = w.toLowerCase();
    const n = (freq.get(key) ?? 0) + 1;
    freq.set(key, n);
    // The first word to reach the highest count wins ties.
    if (n > best) {
      best = n;
      topWord = key;
    }
  }
  let lines = 0;
  if (text.length > 0) {
    lines = text.split("\n").length - (text.endsWith("\n") ? 1 : 0);
  }
  return { words: words.length, lines, chars: [...text].length, topWord };
}

function slugify(text, maxLen) {
  const slug = text
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter((w) => w.length > 0)
    .join("-");
  if (maxLen === undefined || slug.length <= maxLen) {
    return slug;
  }
  return slug.slice(0, maxLen).replace(/-+$/, "");
}

function changeCase(text, to) {
  switch (to) {
    case "upper":
      return text.toUpperCase();
    case "lower":
      return text.toLowerCase();
    case "title":
      return text.toLowerCase().replace(WORD, (w) => w[0].toUpperCase() + w.slice(1));
    default:
      throw new Error(`unknown case ${to}`);
  }
}

function tokenize(text) {
  const tokens = [];
  const pieces = /\s*(?:(\d+(?:\.\d+)?(?![A-Za-z0-9]))|([A-Za-z0-9]+)|(\S))/guy;
  let m;
  while ((m = pieces.exec(text)) !== null) {
    if (m[1] !== undefined) {
      tokens.push({ tag: "number", val: Number(m[1]) });
    } else if (m[2] !== undefined) {
      tokens.push({ tag: "word", val: m[2] });
    } else if (m[3] !== undefined) {
      tokens.push({ tag: "punct", val: m[3] });
    }
  }
  return tokens;
}

function jsonEntries(json) {
  let value;
  try {
    value = JSON.parse(json);
  } catch (e) {
    // A thrown value becomes the `err` case of the `result`.
    throw `invalid JSON: ${e.message}`;
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw `expected a JSON object, got ${Array.isArray(value) ? "an array" : value === null ? "null" : typeof value}`;
  }
  return Object.keys(value)
    .sort()
    .map((key) => ({ key, value: JSON.stringify(value[key]) }));
}

function explode(message) {
  throw new Error(message);
}

export const text = { count, slugify, changeCase, tokenize, jsonEntries, explode };

export function reverse(text) {
  return [...text].reverse().join("");
}
