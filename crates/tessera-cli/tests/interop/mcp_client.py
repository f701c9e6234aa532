"""Drives Tessera's MCP server with the official MCP Python SDK.

One scenario, over stdio (the SDK spawns `tessera serve --stdio`) or over
streamable HTTP (a running `tessera serve`, with a bearer token when one is
given: then a client without a token must be refused first), in either
connection mode of the SDK: `legacy` (the initialize handshake) or `auto` (2026-07-28 when the
server offers it). The data directory must hold these components:

    hello   components/hello.wasm       (no grants)
    netx    components/net-escape.wasm  (no grants: every request is denied)
    spin    components/spin.wasm        (max_concurrent = 1, long deadline)
    swappy  components/hello.wasm       (swapped to spin.wasm during the run)

Over stdio the server's compile cache is `<data>/cache`, where the test
put the compiled components.

Prints one JSON line with what the Rust side checks in the journal, and
exits non-zero (with the failed check on stderr) on any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from typing import Any

import anyio
from mcp import Client, MCPError
from mcp.client.stdio import StdioServerParameters

TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def text_of(result: Any) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


async def scenario(server: Any, mode: str, swap: list[str]) -> dict[str, Any]:
    list_changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if getattr(message, "method", None) == "notifications/tools/list_changed":
            list_changed.set()

    report: dict[str, Any] = {"mode": mode, "run_ids": {}}
    async with Client(server, mode=mode, message_handler=on_message, read_timeout_seconds=60) as client:
        report["protocol_version"] = client.protocol_version
        check(client.server_info is not None and client.server_info.name == "tessera", f"server info: {client.server_info}")
        caps = client.server_capabilities
        check(caps.tools is not None and caps.tools.list_changed is True, f"tools capability: {caps.tools}")

        # Every function of every component is a tool with a valid name.
        tools = {t.name: t for t in (await client.list_tools()).tools}
        for name in tools:
            check(TOOL_NAME.match(name) is not None, f"invalid tool name {name!r}")
        for expected in ["hello__greet", "hello__types__echo-point", "netx__fetch-status", "spin__spin", "swappy__greet"]:
            check(expected in tools, f"tool {expected} missing from {sorted(tools)}")
        greet = tools["hello__greet"]
        check("Greets `name`" in (greet.description or ""), f"description from WIT docs: {greet.description!r}")
        check(greet.input_schema["properties"]["name"]["type"] == "string", f"inputSchema: {greet.input_schema}")
        check(greet.input_schema.get("required") == ["name"], f"inputSchema required: {greet.input_schema}")
        ann = greet.annotations
        check(ann is not None and ann.read_only_hint is True and ann.open_world_hint is False, f"annotations: {ann}")
        out = greet.output_schema or {}
        check(out.get("properties", {}).get("result", {}).get("type") == "string", f"outputSchema: {out}")

        # A call, with structured content matching the output schema.
        r = await client.call_tool("hello__greet", {"name": "Ada"})
        check(not r.is_error, f"greet failed: {text_of(r)}")
        check(r.structured_content == {"result": "Hello, Ada!"}, f"structured content: {r.structured_content}")
        check(text_of(r) == "Hello, Ada!", f"text content: {text_of(r)!r}")
        meta = r.meta or {}
        check("tessera/run_id" in meta, f"run id in _meta: {meta}")
        report["run_ids"]["greet"] = meta["tessera/run_id"]

        r = await client.call_tool("hello__types__echo-point", {"v": {"x": 3, "y": -4}})
        check(not r.is_error and r.structured_content == {"result": {"x": 3, "y": -4}}, f"echo-point: {r}")

        # Tool errors: a guest error, bad arguments, a denied grant, a trap.
        r = await client.call_tool("hello__types__divide", {"a": 1, "b": 0})
        check(r.is_error is True and "division by zero" in text_of(r), f"guest error: {r}")
        r = await client.call_tool("hello__greet", {"name": 5})
        check(r.is_error is True and "$.name" in text_of(r), f"bad arguments: {r}")
        r = await client.call_tool("netx__fetch-status", {"url": "http://example.com/"})
        check(r.is_error is True and "denied" in text_of(r), f"denied grant: {text_of(r)}")
        report["run_ids"]["denied"] = (r.meta or {}).get("tessera/run_id")
        r = await client.call_tool("hello__types__fail", {"msg": "boom"})
        check(r.is_error is True and "trapped" in text_of(r), f"trap: {text_of(r)}")

        # An unknown tool is a protocol error; the session carries on.
        try:
            await client.call_tool("nope__nothing", {})
            check(False, "unknown tool accepted")
        except MCPError as e:
            check("unknown tool" in str(e), f"unknown tool error: {e}")
        r = await client.call_tool("hello__greet", {"name": "again"})
        check(not r.is_error, "session unusable after a protocol error")

        # Cancellation interrupts the guest: `spin` never returns and its
        # deadline is minutes away, and the component takes one call at a
        # time, so it is free again only once the cancelled call stopped.
        with anyio.move_on_after(1.0) as scope:
            await client.call_tool("spin__spin", {})
        check(scope.cancelled_caught, "spin returned")
        freed = False
        for _ in range(200):
            r = await client.call_tool("spin__count", {"n": 1000})
            if not r.is_error:
                check(r.structured_content == {"result": 1000}, f"count: {r.structured_content}")
                freed = True
                break
            check("busy" in text_of(r), f"unexpected error after cancel: {text_of(r)}")
            await anyio.sleep(0.05)
        check(freed, "the cancelled call kept running")

        # A hot swap sends list_changed; the new version's tools replace the old.
        async def swap_and_wait(wait: Any) -> None:
            done = await anyio.to_thread.run_sync(lambda: subprocess.run(swap, capture_output=True, text=True))
            check(done.returncode == 0, f"swap command failed: {done.stderr}")
            with anyio.fail_after(30):
                await wait()

        if client.protocol_version >= "2026-07-28":
            async with client.listen(tools_list_changed=True) as sub:
                check(sub.honored is not None and sub.honored.tools_list_changed is True, f"listen filter: {sub.honored}")

                async def next_event() -> None:
                    async for _event in sub:
                        return

                await swap_and_wait(next_event)
        else:
            await swap_and_wait(list_changed.wait)
        tools = {t.name for t in (await client.list_tools()).tools}
        check("swappy__count" in tools and "swappy__greet" not in tools, f"tools after swap: {sorted(tools)}")
        r = await client.call_tool("swappy__count", {"n": 7})
        check(not r.is_error and r.structured_content == {"result": 7}, f"new version: {r}")
    return report


def http_target(url: str, token: str | None) -> Any:
    """A streamable HTTP transport, with a bearer token if given."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    client = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300))
    return streamable_http_client(url, http_client=client)


async def refused_without_token(url: str, mode: str) -> None:
    """The server requires tokens: a client without one gets nowhere."""
    try:
        with anyio.fail_after(30):
            async with Client(http_target(url, None), mode=mode) as client:
                await client.list_tools()
    except TimeoutError:
        raise AssertionError("no answer to a client without a token") from None
    except Exception:  # the SDK reports the 401 as an error (or a group of them);
        return  # the Rust side checks the server's audit log for the refusal
    raise AssertionError("a client without a token was served")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--mode", choices=["legacy", "auto"], required=True)
    p.add_argument("--url", help="streamable HTTP endpoint, e.g. http://127.0.0.1:7878/mcp")
    p.add_argument("--token", help="bearer token for --url (the server requires tokens)")
    p.add_argument("--tessera", help="the tessera binary, to spawn over stdio")
    p.add_argument("--data", required=True, help="the data directory")
    p.add_argument("--swap", required=True, help="JSON list: the command that swaps `swappy` to a new version")
    a = p.parse_args()
    try:
        if a.url and a.token:
            anyio.run(refused_without_token, a.url, a.mode)
            server: Any = http_target(a.url, a.token)
        elif a.url:
            server = a.url
        else:
            server = StdioServerParameters(command=a.tessera, args=["serve", "--stdio", "--data", a.data, "--cache-dir", os.path.join(a.data, "cache")])
        report = anyio.run(scenario, server, a.mode, json.loads(a.swap))
    except AssertionError as e:
        print(f"interop check failed ({a.mode}): {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
