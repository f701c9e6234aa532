"""The `interpreter` interface of the `sandbox` world (wit/sandbox/sandbox.wit):
a CPython sandbox that runs code given at run time, built into a component
by componentize-py, which generates the `wit_world` bindings imported here
at build time.

componentize-py imports this module while it builds the component and
snapshots the interpreter afterwards. Every module imported then is part of
the component; the component carries no files of the standard library, so a
module that was not imported at build time cannot be imported by the code
later (`ModuleNotFoundError`), unless the host grants a directory holding
the standard library at /python (see README.md). `PRELOADED` lists what is
imported up front.
"""

import ast
import builtins
import encodings
import importlib
import io
import json
import linecache
import pkgutil
import sys
import traceback
from typing import Optional, Tuple

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import interpreter

# Imported at build time so that the code run in the sandbox can import
# them (from `sys.modules`): the standard library modules most code needs.
PRELOADED = (
    # Text, data formats and encodings.
    "json", "re", "string", "textwrap", "csv", "io", "base64", "binascii",
    "html", "urllib.parse", "zlib", "struct", "array", "pprint", "difflib",
    "unicodedata", "shlex", "tomllib", "configparser", "xml.etree.ElementTree",
    "xml.dom.minidom", "codecs",
    # Numbers.
    "math", "cmath", "decimal", "fractions", "numbers", "statistics",
    "random", "secrets", "colorsys",
    # Time. (`_strptime` is what `strptime` of datetime and time imports.)
    "datetime", "time", "calendar", "_strptime",
    # Hashing and identifiers.
    "hashlib", "hmac", "uuid",
    # Data structures and functional tools.
    "collections", "collections.abc", "itertools", "functools", "operator",
    "heapq", "bisect", "copy", "graphlib", "dataclasses", "enum", "typing",
    "contextlib", "abc", "types", "queue",
    # Introspection and the interpreter itself.
    "inspect", "keyword", "traceback", "warnings", "weakref", "contextvars",
    "logging",
    # Files and archives, for directories a host grants.
    "pathlib", "fnmatch", "glob", "shutil", "tempfile", "zipfile", "gzip",
    "sqlite3",
)

for _name in PRELOADED:
    importlib.import_module(_name)

# Every codec, so that `str.encode` and `bytes.decode` know every encoding
# name (each is a module that the codec registry imports on first use),
# less those CPython has no support for here: bz2 (no `_bz2`) and the
# Windows code pages.
for _codec in pkgutil.iter_modules(encodings.__path__):
    if _codec.name not in ("bz2_codec", "mbcs", "oem"):
        importlib.import_module(f"encodings.{_codec.name}")

# Nothing can be written next to the standard library (the host grants no
# files by default), so no bytecode caches are attempted.
sys.dont_write_bytecode = True


def _stream(fd: int, old: io.TextIOWrapper) -> io.TextIOWrapper:
    """A text stream on `fd` that writes all it is given, line by line.

    componentize-py builds CPython unbuffered, so `sys.stdout` writes to the
    raw file, and a WASI stream takes at most 64 KiB per write: the rest of a
    longer `print` would be lost. A buffered writer writes the rest."""
    raw = io.FileIO(fd, "w", closefd=False)
    raw.name = old.name  # "<stdout>", as `repr(sys.stdout)` showed it
    return io.TextIOWrapper(
        io.BufferedWriter(raw),
        encoding=old.encoding,
        errors=old.errors,
        line_buffering=True,
    )


sys.stdout = sys.__stdout__ = _stream(1, sys.stdout)
sys.stderr = sys.__stderr__ = _stream(2, sys.stderr)

# The global namespace of the code, kept by the instance: what one `run`
# defines the next one sees. A fresh instance starts from this, as a script
# run by `python` does.
_namespace = {"__name__": "__main__", "__doc__": None, "__builtins__": builtins}

# How many times `run` has been called on this instance.
_runs = 0


class Interpreter(exports.Interpreter):
    def run(self, code: str) -> Optional[interpreter.Value]:
        global _runs
        _runs += 1
        # Each run is its own "file", so that a traceback in a session tells
        # the code of one run from another's; the source is registered with
        # linecache so tracebacks (and `inspect.getsource`) show its lines.
        filename = "<sandbox>" if _runs == 1 else f"<sandbox-{_runs}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        try:
            return _run(code, filename)
        finally:
            # What the code printed reaches the host before `run` returns.
            _flush()


def _run(code: str, filename: str) -> Optional[interpreter.Value]:
    # Raising `Err` returns the `err` case of the WIT `result`; any other
    # exception would trap, so none may escape.
    try:
        body, last = _compile(code, filename)
    except Exception as e:
        raise Err(_guarded(_syntax_failure, e)) from None
    try:
        exec(body, _namespace)
        value = eval(last, _namespace) if last is not None else None
        if value is None:
            return None
        text = repr(value)
    except BaseException as e:  # SystemExit and MemoryError included
        raise Err(_guarded(_runtime_failure, e, filename)) from None
    return interpreter.Value(json=_to_json(value), text=_clean(text))


def _compile(code: str, filename: str):
    """Compiles `code`, less its last statement when that is an expression,
    and that expression on its own (or None)."""
    tree = ast.parse(code, filename, "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    body = compile(tree, filename, "exec", dont_inherit=True)
    if last is not None:
        last = compile(last, filename, "eval", dont_inherit=True)
    return body, last


def _syntax_failure(e: Exception) -> interpreter.Failure:
    # The parser gives a 1-based line and a 1-based column in characters.
    if isinstance(e, SyntaxError):
        message = e.msg or ""
        line = _positive(e.lineno)
        text = linecache.getline(e.filename, line) if e.filename and line else ""
        if e.text is None and text:
            # Errors found after parsing (`return` outside a function) come
            # without the line's text, which the traceback shows, and with
            # columns in UTF-8 bytes.
            e.text = text
            if _positive(e.offset):
                e.offset = _column(text, e.offset - 1)
            if _positive(e.end_offset):
                e.end_offset = _column(text, e.end_offset - 1)
        column = _positive(e.offset)
    else:
        message, line, column = _str(e), None, None
    return interpreter.Failure(
        kind=type(e).__name__,
        message=_clean(message),
        line=line,
        column=column,
        traceback=_clean("".join(traceback.format_exception_only(e))),
    )


def _runtime_failure(e: BaseException, filename: str) -> interpreter.Failure:
    # The traceback starts with this module's frames (`run`, `exec`), which
    # are left out: it starts at the first frame of code given to `run`.
    tb = e.__traceback__
    while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<sandbox"):
        tb = tb.tb_next
    # The place is the innermost frame of this run's code (a function of an
    # earlier run, or of the standard library, is called from there).
    line = column = None
    t = tb
    while t is not None:
        if t.tb_frame.f_code.co_filename == filename:
            line, column = _position(t, filename)
        t = t.tb_next
    return interpreter.Failure(
        kind=type(e).__name__,
        message=_clean(_str(e)),
        line=line,
        column=column,
        traceback=_clean("".join(traceback.format_exception(type(e), e, tb))),
    )


def _position(tb, filename: str) -> Tuple[Optional[int], Optional[int]]:
    """The 1-based line and column (in characters) of a traceback entry."""
    line, column = _positive(tb.tb_lineno), None
    positions = list(tb.tb_frame.f_code.co_positions())
    index = tb.tb_lasti // 2  # positions are per 2-byte code unit
    if 0 <= index < len(positions):
        start, _, offset, _ = positions[index]
        if start is not None and offset is not None:
            line, column = start, _column(linecache.getline(filename, start), offset)
    return line, column


def _column(text: str, offset: int) -> int:
    """The 1-based column in characters of the 0-based UTF-8 byte `offset`
    of the line `text`."""
    return len(text.encode()[:offset].decode(errors="replace")) + 1


def _guarded(make, e: BaseException, *args) -> interpreter.Failure:
    """The failure `make` describes `e` with, or a plainer one when that
    fails too (out of memory, a broken `__str__`, …)."""
    try:
        return make(e, *args)
    except BaseException:
        name = getattr(type(e), "__name__", "Exception")
        return interpreter.Failure(
            kind=_clean(str(name)), message="", line=None, column=None, traceback=""
        )


def _to_json(value) -> Optional[str]:
    """`value` as JSON, or None when it has no JSON form (objects, NaN,
    cycles, integers too long to convert, …)."""
    try:
        return _clean(json.dumps(value, ensure_ascii=False, allow_nan=False))
    except Exception:
        return None


def _str(e: BaseException) -> str:
    try:
        return str(e)
    except Exception:
        return "<exception str() failed>"


def _positive(n) -> Optional[int]:
    return n if isinstance(n, int) and n > 0 else None


def _clean(text: str) -> str:
    # A WIT string is UTF-8: lone surrogates (`"\ud800"`) are written as
    # escapes instead of failing the call.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:
            pass
