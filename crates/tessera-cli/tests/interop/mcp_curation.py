"""Tool curation and guest diagnostics, seen through the official MCP Python SDK.

The SDK spawns `tessera serve --stdio`. The data directory must hold:

    tool       components/toolchain-exports.wasm  [tools] exclude = ["sub"],
               a title and description for `add`
    internals  components/toolchain-exports.wasm  no manifest: the defaults
    shown      components/toolchain-exports.wasm  [tools] include = ["add",
               "exports#init", "wasi:cli/run#run"]
    hello      components/hello.wasm              no manifest

Prints one JSON line (the tool names it saw) and exits non-zero, with the
failed check on stderr, on any failure.
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


def check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def text_of(result: Any) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


async def unknown_tool(client: Any, name: str, args: dict[str, Any]) -> None:
    try:
        r = await client.call_tool(name, args)
    except MCPError as e:
        check("unknown tool" in str(e), f"{name}: {e}")
        return
    raise AssertionError(f"{name} is not served but was called: {text_of(r)}")


async def scenario(server: Any) -> dict[str, Any]:
    async with Client(server, mode="auto", read_timeout_seconds=60) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        names = sorted(tools)

        # An excluded function is neither listed nor callable; an override
        # replaces the title and the bare `WIT: <signature>` description.
        check("tool__add" in tools, f"tool__add missing from {names}")
        add = tools["tool__add"]
        check(add.title == "Add two numbers", f"title override: {add.title!r}")
        check(add.description == "Returns a + b, wrapping at 2^32.", f"description override: {add.description!r}")
        check("tool__sub" not in tools, f"excluded tool__sub listed: {names}")
        await unknown_tool(client, "tool__sub", {"a": 3, "b": 1})
        r = await client.call_tool("tool__add", {"a": 2, "b": 3})
        check(not r.is_error and r.structured_content == {"result": 5}, f"tool__add: {r}")

        # By default componentize-py's `exports#init` and, beside other
        # functions, `wasi:cli/run#run` are hidden; the rest is served with
        # its bare description.
        check("internals__add" in tools and "internals__sub" in tools, f"defaults: {names}")
        check((tools["internals__sub"].description or "").startswith("WIT: sub("), f"bare description: {tools['internals__sub'].description!r}")
        check("internals__exports__init" not in tools, f"init listed by default: {names}")
        check("internals__run__run" not in tools, f"run listed by default: {names}")
        await unknown_tool(client, "internals__exports__init", {"app-name": "app", "symbols": [], "stub-wasi": False})

        # Listed in `include`, they are served; what `include` leaves out is not.
        check("shown__exports__init" in tools and "shown__run__run" in tools, f"included internals: {names}")
        check("shown__sub" not in tools, f"not included shown__sub listed: {names}")
        r = await client.call_tool("shown__run__run", {})
        check(not r.is_error and r.structured_content == {"result": {"ok": None}}, f"run: {r}")

        # A trap: the message, the backtrace in the text and in the
        # structured content (the HTTP API's error object).
        r = await client.call_tool("shown__exports__init", {"app-name": "app", "symbols": ["x"], "stub-wasi": False})
        check(r.is_error is True and "trapped" in text_of(r), f"init trap: {text_of(r)}")
        err = (r.structured_content or {}).get("error", {})
        check(err.get("code") == "trap" and err.get("run_id"), f"structured error: {r.structured_content}")
        check("guest backtrace:" in text_of(r) and err.get("guest", {}).get("backtrace"), f"backtrace: {text_of(r)}")

        # A guest that logs, writes to stderr and traps: both in the error.
        r = await client.call_tool("hello__types__fail", {"msg": "boom-from-python"})
        text = text_of(r)
        check(r.is_error is True and "trapped" in text, f"fail: {text}")
        check("guest stderr" in text and "panicked" in text and "boom-from-python" in text, f"stderr tail in the text: {text}")
        check("guest logs:" in text and "[error] fail: about to fail: boom-from-python" in text, f"log line in the text: {text}")
        guest = (r.structured_content or {}).get("error", {}).get("guest", {})
        check("boom-from-python" in guest.get("stderr", ""), f"structured stderr: {guest}")
        check(guest.get("stderr_bytes", 0) >= len(guest.get("stderr", "")), f"stderr_bytes: {guest}")
        check(guest.get("logs") == [{"level": "error", "context": "fail", "message": "about to fail: boom-from-python"}], f"structured logs: {guest}")
        check(guest.get("log_records") == 1, f"log_records: {guest}")

        # A guest `err` return: a tool error whose structured content still
        # fits the output schema.
        r = await client.call_tool("hello__types__divide", {"a": 1, "b": 0})
        check(r.is_error is True and r.structured_content == {"result": {"err": "division by zero"}}, f"guest err: {r}")
    return {"tools": names}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tessera", required=True, help="the tessera binary")
    p.add_argument("--data", required=True, help="the data directory")
    a = p.parse_args()
    server = StdioServerParameters(command=a.tessera, args=["serve", "--stdio", "--data", a.data, "--cache-dir", os.path.join(a.data, "cache")])
    try:
        report = anyio.run(scenario, server)
    except AssertionError as e:
        print(f"curation check failed: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
