#!/usr/bin/env python3
"""Checks that implementations of `tessera:example/catalog` (wit/example)
answer alike.

Usage: scripts/check-catalog.py [--tessera PATH] [COMPONENT.wasm ...]

Runs the same calls (`tessera call --json`) on every component given
(default: components/example-c.wasm and components/example-go.wasm) and
compares each JSON result with the answer this script computes from the
WIT's text (the `expected_*` functions), so any two implementations that
pass also agree with each other. Prints one line per call that differs and
a closing `N passed, N failed` line; exits 1 when any call failed.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
U32_MAX = 4294967295


def item(name, quantity, price=None, tags=()):
    return {"name": name, "quantity": quantity, "price-cents": price, "tags": list(tags)}


# --- the answers, from the WIT ------------------------------------------------


def expected_summarize(items):
    largest = None
    for it in items:
        if largest is None or it["quantity"] > largest["quantity"]:
            largest = it  # the first one on a tie
    tags = sorted({t for it in items for t in it["tags"]}, key=lambda t: t.encode())
    return {
        "items": len(items),
        "units": sum(it["quantity"] for it in items),
        "value-cents": sum(
            it["quantity"] * it["price-cents"] for it in items if it["price-cents"] is not None
        ),
        "largest": None if largest is None else largest["name"],
        "tags": tags,
    }


def expected_filter(items, tag):
    return [it for it in items if tag is None or tag in it["tags"]]


def expected_restock(items, name, units):
    for i, it in enumerate(items):
        if it["name"] == name:
            if it["quantity"] + units > U32_MAX:
                return {"err": "overflow"}
            out = [dict(x) for x in items]
            out[i]["quantity"] += units
            return {"ok": out}
    return {"err": {"unknown-item": name}}


# --- the calls -----------------------------------------------------------------

shelf = [
    item("bolt", 120, 15, ["metal", "small", "metal"]),
    item("nut", 300, None, ["small", "metal"]),
    item("gear", 300, 250, ["Metal", "z", "", "é", "ab", "a"]),
    item("spring", 0, 99, []),
    item("nut", 7, 3, ["spare"]),
]
big = [item(f"item-{i}", i * 7919 % 100000, None if i % 3 else i, [f"t{i % 97}", "all"]) for i in range(4000)]
huge_price = [item("a", U32_MAX, U32_MAX, ["x"]), item("b", U32_MAX, None, ["x"])]

CASES = [
    ("summarize empty", "summarize", {"items": []}),
    ("summarize shelf", "summarize", {"items": shelf}),
    ("summarize u64 sums", "summarize", {"items": huge_price}),
    ("summarize one item, no tags", "summarize", {"items": [item("solo", 5)]}),
    ("summarize 4000 items", "summarize", {"items": big}),
    ("filter empty list", "filter", {"items": [], "tag": "metal"}),
    ("filter null tag", "filter", {"items": shelf, "tag": None}),
    ("filter metal", "filter", {"items": shelf, "tag": "metal"}),
    ("filter Metal (case)", "filter", {"items": shelf, "tag": "Metal"}),
    ("filter empty tag", "filter", {"items": shelf, "tag": ""}),
    ("filter matches none", "filter", {"items": shelf, "tag": "wood"}),
    ("filter 4000 items", "filter", {"items": big, "tag": "t5"}),
    ("restock empty list", "restock", {"items": [], "name": "bolt", "units": 1}),
    ("restock unknown", "restock", {"items": shelf, "name": "washer", "units": 10}),
    ("restock first of two", "restock", {"items": shelf, "name": "nut", "units": 5}),
    ("restock to max", "restock", {"items": [item("a", U32_MAX - 1)], "name": "a", "units": 1}),
    ("restock overflow", "restock", {"items": [item("a", U32_MAX - 1)], "name": "a", "units": 2}),
    ("restock overflow u32 max", "restock", {"items": shelf, "name": "gear", "units": U32_MAX}),
    ("restock zero", "restock", {"items": shelf, "name": "spring", "units": 0}),
    ("restock 4000 items", "restock", {"items": big, "name": "item-3999", "units": 1}),
]

EXPECTED = {
    "summarize": lambda a: expected_summarize(a["items"]),
    "filter": lambda a: expected_filter(a["items"], a["tag"]),
    "restock": lambda a: expected_restock(a["items"], a["name"], a["units"]),
}


def call(tessera, component, function, args):
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(args, f)
        f.flush()
        proc = subprocess.run(
            [tessera, "call", "--json", component, function, "--args-file", f.name],
            capture_output=True,
            text=True,
        )
    try:
        out = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return None, f"no JSON (exit {proc.returncode}): {proc.stderr.strip()[:300]}"
    if "error" in out:
        return None, json.dumps(out["error"])[:300]
    return out.get("result"), None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tessera", default=os.path.join(ROOT, "target/debug/tessera"))
    parser.add_argument("components", nargs="*")
    opts = parser.parse_args()
    components = opts.components or [
        os.path.join(ROOT, "components", f"example-{lang}.wasm") for lang in ("c", "go")
    ]
    passed = failed = 0
    for component in components:
        label = os.path.relpath(component, ROOT)
        for case, function, args in CASES:
            want = EXPECTED[function](args)
            got, error = call(opts.tessera, component, function, args)
            if error is None and got == want:
                passed += 1
                continue
            failed += 1
            shown = error if error else json.dumps(got)[:300]
            print(f"FAIL {label} {case}: got {shown}; want {json.dumps(want)[:300]}")
        print(f"{label}: {len(CASES)} calls checked", file=sys.stderr)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
