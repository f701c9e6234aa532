"""Serves components built with other languages' toolchains to the official
MCP Python SDK: a JavaScript one (componentize-js) and a Python one
(componentize-py), over stdio (the SDK spawns `tessera serve --stdio`) or
streamable HTTP (a running `tessera serve`). The data directory must hold:

    js  components/text-js.wasm   (no grants)
    py  components/stats-py.wasm  (no grants)

Checks the tools listed and their schemas, calls with structured arguments
(records, lists, options, enums, flags, variants, tuples, results), a
WIT `err` returned by each language, and an exception each guest throws,
which must be a tool error (`isError`), not a protocol failure.

`--internal-exports listed|hidden` says what to expect of componentize-py's
own `exports` interface (its `init` function, which the toolchain calls at
build time and which traps when called at run time).

Prints one JSON line (tool names, run ids) for the Rust side, and exits
non-zero (with the failed check on stderr) on any failure.
"""

from __future__ import annotations

import argparse
import os
import json
import sys
from typing import Any

import anyio
from mcp import Client, MCPError
from mcp.client.stdio import StdioServerParameters

# componentize-py's build-time initialization export (the unversioned,
# package-less interface `exports` with function `init`).
PY_INIT_TOOL = "py__exports__init"


def check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def text_of(result: Any) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


async def call_ok(client: Any, tool: str, args: dict[str, Any]) -> Any:
    """Calls `tool`; it must succeed. Returns the structured `result`."""
    r = await client.call_tool(tool, args)
    check(not r.is_error, f"{tool}({args}) failed: {text_of(r)}")
    check(isinstance(r.structured_content, dict) and "result" in r.structured_content, f"{tool}: structured content {r.structured_content}")
    check((r.meta or {}).get("tessera/run_id") is not None, f"{tool}: no run id in _meta {r.meta}")
    return r.structured_content["result"]


async def call_err(client: Any, tool: str, args: dict[str, Any]) -> str:
    """Calls `tool`; it must be a tool error. Returns its text."""
    r = await client.call_tool(tool, args)
    check(r.is_error is True, f"{tool}({args}) did not fail: {r}")
    # Structured content of a tool error, when there is any, is the HTTP
    # API's error body (`{"error": {...}}`) or a guest `err` (`{"result": {"err": ...}}`).
    sc = r.structured_content
    check(
        sc is None
        or (isinstance(sc, dict) and ("error" in sc or (isinstance(sc.get("result"), dict) and "err" in sc["result"]))),
        f"{tool}: an error with unexpected structured content {sc}",
    )
    return text_of(r)


def props(tool: Any) -> dict[str, Any]:
    return tool.input_schema.get("properties", {})


def result_schema(tool: Any) -> dict[str, Any]:
    return (tool.output_schema or {}).get("properties", {}).get("result", {})


async def scenario(server: Any, internal: str) -> dict[str, Any]:
    report: dict[str, Any] = {"run_ids": {}}
    async with Client(server, mode="auto", read_timeout_seconds=120) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        report["tools"] = sorted(tools)

        # --- the tools and their schemas --------------------------------
        js_tools = {"js__reverse", "js__text__count", "js__text__slugify", "js__text__change-case", "js__text__tokenize", "js__text__json-entries", "js__text__explode"}
        py_tools = {"py__stats__summarize", "py__stats__describe", "py__stats__histogram", "py__stats__parse-ints", "py__stats__fail"}
        missing = (js_tools | py_tools) - set(tools)
        check(not missing, f"tools {sorted(missing)} missing from {sorted(tools)}")
        expected = js_tools | py_tools | ({PY_INIT_TOOL} if internal == "listed" else set())
        check(set(tools) == expected, f"tools: expected {sorted(expected)}, got {sorted(tools)}")

        slug = tools["js__text__slugify"]
        check(props(slug)["text"]["type"] == "string", f"slugify text: {slug.input_schema}")
        check(slug.input_schema.get("required") == ["text"], f"slugify: an option parameter is not required: {slug.input_schema}")
        check("max-len" in props(slug), f"slugify max-len: {slug.input_schema}")
        check(result_schema(slug).get("type") == "string", f"slugify result: {slug.output_schema}")
        case = props(tools["js__text__change-case"])["to"]
        check(sorted(case.get("enum", [])) == ["lower", "title", "upper"], f"change-case enum: {case}")
        counts = result_schema(tools["js__text__count"])
        check(set(counts.get("properties", {})) == {"words", "lines", "chars", "top-word"}, f"count result record: {counts}")
        check(props(tools["py__stats__summarize"])["values"].get("type") == "array", f"summarize values: {tools['py__stats__summarize'].input_schema}")
        for t in js_tools | py_tools:
            check(tools[t].description, f"{t} has no description")
            ann = tools[t].annotations
            check(ann is not None and ann.read_only_hint is True and ann.open_world_hint is False, f"{t} annotations (no grants): {ann}")

        # --- JavaScript: calls with structured arguments ----------------
        r = await call_ok(client, "js__reverse", {"text": "héllo, wörld"})
        check(r == "dlröw ,olléh", f"reverse: {r!r}")
        r = await call_ok(client, "js__text__count", {"text": "the cat and the hat\nthe end\n"})
        check(r == {"words": 7, "lines": 2, "chars": 28, "top-word": "the"}, f"count: {r}")
        r = await call_ok(client, "js__text__count", {"text": ""})
        check(r == {"words": 0, "lines": 0, "chars": 0, "top-word": None}, f"count of nothing: {r}")
        r = await call_ok(client, "js__text__slugify", {"text": "  Hello, World! 2026 edition "})
        check(r == "hello-world-2026-edition", f"slugify: {r!r}")
        r = await call_ok(client, "js__text__slugify", {"text": "Hello, World! 2026 edition", "max-len": 12})
        check(r == "hello-world", f"slugify cut: {r!r}")
        r = await call_ok(client, "js__text__change-case", {"text": "mIxEd case words", "to": "title"})
        check(r == "Mixed Case Words", f"change-case: {r!r}")
        r = await call_ok(client, "js__text__tokenize", {"text": "Pi is 3.14, isn't it?"})
        check(
            r == [{"word": "Pi"}, {"word": "is"}, {"number": 3.14}, {"punct": ","}, {"word": "isn"}, {"punct": "'"}, {"word": "t"}, {"word": "it"}, {"punct": "?"}],
            f"tokenize: {r}",
        )
        r = await call_ok(client, "js__text__json-entries", {"json": '{"b": [1, 2], "a": {"x": null}}'})
        check(r == {"ok": [{"key": "a", "value": '{"x":null}'}, {"key": "b", "value": "[1,2]"}]}, f"json-entries: {r}")

        # A WIT `err` (a JavaScript `throw` in a function returning `result`).
        t = await call_err(client, "js__text__json-entries", {"json": "[1, 2]"})
        check("expected a JSON object, got an array" in t, f"json-entries err: {t}")
        t = await call_err(client, "js__text__json-entries", {"json": "{nope"})
        check("invalid JSON" in t, f"json-entries invalid: {t}")
        # Arguments are checked against the WIT types before the guest runs.
        t = await call_err(client, "js__text__change-case", {"text": "x", "to": "shouting"})
        check("$.to" in t, f"bad enum argument: {t}")
        # A thrown `Error` in a function without `result`: a trap, reported
        # as a tool error; the component keeps serving.
        r = await client.call_tool("js__text__explode", {"message": "kaboom from JS"})
        check(r.is_error is True, f"explode did not fail: {r}")
        report["explode"] = text_of(r)
        check("trapped" in text_of(r), f"explode: {text_of(r)}")
        report["run_ids"]["explode"] = (r.meta or {}).get("tessera/run_id")
        r = await call_ok(client, "js__reverse", {"text": "still here"})
        check(r == "ereh llits", f"after the trap: {r!r}")

        # --- Python: calls with structured arguments --------------------
        r = await call_ok(client, "py__stats__summarize", {"values": [3, 1, 4, 1, 5, 9]})
        check(r == {"count": 6, "mean": 23 / 6, "median": 3.5, "range": [1.0, 9.0]}, f"summarize: {r}")
        r = await call_ok(client, "py__stats__summarize", {"values": []})
        check(r == {"count": 0, "mean": None, "median": None, "range": None}, f"summarize nothing: {r}")
        r = await call_ok(client, "py__stats__describe", {"values": [2, 4, 4, 4, 5, 5, 7, 9], "which": ["total", "stdev"]})
        check(r == [{"name": "stdev", "value": 2.0}, {"name": "total", "value": 40.0}], f"describe: {r}")
        r = await call_ok(client, "py__stats__histogram", {"values": [0, 1, 2, 3, 4, 10], "buckets": 2})
        check(r == {"ok": [5, 1]}, f"histogram: {r}")
        r = await call_ok(client, "py__stats__parse-ints", {"texts": ["ff", "zz", "-10", "7fffffffffffffff"], "base": 16})
        check(r == [255, None, -16, 2**63 - 1], f"parse-ints: {r}")

        # A WIT `err` (`raise Err(...)`), with a variant payload.
        t = await call_err(client, "py__stats__histogram", {"values": [1, "NaN", 2], "buckets": 3})
        check("not-finite" in t and "1" in t, f"histogram err: {t}")
        t = await call_err(client, "py__stats__histogram", {"values": [1], "buckets": 0})
        check("no-buckets" in t, f"histogram no-buckets: {t}")
        t = await call_err(client, "py__stats__parse-ints", {"texts": [], "base": 256})
        check("$.base" in t, f"bad u8 argument: {t}")
        # A raised exception: a trap, reported as a tool error.
        r = await client.call_tool("py__stats__fail", {"message": "kaboom from Python"})
        check(r.is_error is True, f"fail did not fail: {r}")
        report["fail"] = text_of(r)
        check("trapped" in text_of(r), f"fail: {text_of(r)}")
        report["run_ids"]["fail"] = (r.meta or {}).get("tessera/run_id")
        r = await call_ok(client, "py__stats__summarize", {"values": [1]})
        check(r["count"] == 1, f"after the trap: {r}")

        # componentize-py's `init`, when listed, is a tool that fails.
        if internal == "listed":
            init = tools[PY_INIT_TOOL]
            report["init_schema_bytes"] = len(json.dumps(init.input_schema))
            r = await client.call_tool(PY_INIT_TOOL, {"app-name": "app", "symbols": {"exports": [], "resources": [], "records": [], "flags": [], "tuples": [], "variants": [], "enums": [], "options": [], "results": []}, "stub-wasi": False})
            report["init_call"] = {"is_error": r.is_error, "text": text_of(r)}
            check(r.is_error is True, f"calling componentize-py's init succeeded: {r}")
        else:
            # Hidden, it is not a tool either: calling it must not run it.
            try:
                r = await client.call_tool(PY_INIT_TOOL, {})
                check(r.is_error is True, f"hidden {PY_INIT_TOOL} was called: {r}")
                report["init_call"] = {"is_error": True, "text": text_of(r)}
            except MCPError as e:
                report["init_call"] = {"protocol_error": str(e)}
    return report


def failed_checks(e: BaseException) -> Any:
    """The failed checks in `e`: the SDK's task groups wrap them in
    (possibly nested) exception groups."""
    if isinstance(e, AssertionError):
        yield e
    else:
        for sub in getattr(e, "exceptions", ()):
            yield from failed_checks(sub)


def http_target(url: str, token: str | None) -> Any:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    client = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300))
    return streamable_http_client(url, http_client=client)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", help="streamable HTTP endpoint, e.g. http://127.0.0.1:7878/mcp")
    p.add_argument("--token", help="bearer token for --url")
    p.add_argument("--tessera", help="the tessera binary, to spawn over stdio")
    p.add_argument("--data", help="the data directory (with --tessera)")
    p.add_argument("--internal-exports", choices=["listed", "hidden"], required=True)
    a = p.parse_args()
    if a.url:
        server: Any = http_target(a.url, a.token)
    else:
        server = StdioServerParameters(command=a.tessera, args=["serve", "--stdio", "--data", a.data, "--cache-dir", os.path.join(a.data, "cache")])
    try:
        report = anyio.run(scenario, server, a.internal_exports)
    except Exception as e:
        checks = list(failed_checks(e))
        if not checks:
            raise
        for c in checks:
            print(f"polyglot check failed: {c}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
