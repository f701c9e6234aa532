//! What `tessera new` writes: the starter WIT world and each language's
//! starter code.

use super::adapter::ARENA_BYTES;
use super::*;

/// The starter WIT: one interface, `tool`, whose `greet` takes a string
/// and a flag and answers a record with an option, or an error.
fn starter_wit(name: &str) -> String {
    format!(
        r#"package local:{name}@0.1.0;

/// The {name} tool.
interface tool {{
    /// What `greet` answers.
    record greeting {{
        /// The greeting.
        text: string,
        /// How many characters the name has.
        length: u32,
        /// The greeting in capitals, when asked for.
        shout: option<string>,
    }}

    /// Greets `name`; `loud` adds the greeting in capitals. An empty name
    /// is an error.
    greet: func(name: string, loud: bool) -> result<greeting, string>;
}}

/// The {name} component.
world {name} {{
    export tool;
}}
"#
    )
}

/// The files of a new project, by path relative to its directory.
pub(super) fn starter_files(name: &str, lang: Lang) -> Vec<(String, String)> {
    let mut files = vec![(format!("wit/{name}.wit"), starter_wit(name))];
    match lang {
        Lang::Rust => {
            let snake = snake(name);
            files.push((
                "Cargo.toml".into(),
                format!(
                    r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
wit-bindgen = "{WIT_BINDGEN}"

[profile.release]
opt-level = "s"
strip = true

# A project of its own, not a member of an enclosing workspace.
[workspace]
"#
                ),
            ));
            files.push((
                "src/lib.rs".into(),
                format!(
                    r#"//! The `tool` interface of the `{name}` world (wit/{name}.wit).

wit_bindgen::generate!({{ world: "{name}", path: "wit" }});

use exports::local::{snake}::tool::{{Greeting, Guest}};

struct Component;

impl Guest for Component {{
    fn greet(name: String, loud: bool) -> Result<Greeting, String> {{
        if name.is_empty() {{
            return Err("the name is empty".to_string());
        }}
        let text = format!("Hello, {{name}}!");
        Ok(Greeting {{
            length: name.chars().count() as u32,
            shout: loud.then(|| text.to_uppercase()),
            text,
        }})
    }}
}}

export!(Component);
"#
                ),
            ));
        }
        Lang::Python => {
            files.push((
                "app.py".into(),
                format!(
                    r#""""The `tool` interface of the `{name}` world (wit/{name}.wit).

componentize-py generates the `wit_world` bindings imported here when the
component is built."""

from typing import Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import tool


class Tool(exports.Tool):
    def greet(self, name: str, loud: bool) -> tool.Greeting:
        if not name:
            # A WIT `result`'s error is raised as `Err`.
            raise Err("the name is empty")
        text = f"Hello, {{name}}!"
        shout: Optional[str] = text.upper() if loud else None
        return tool.Greeting(text=text, length=len(name), shout=shout)
"#
                ),
            ));
        }
        Lang::Js => {
            files.push((
                format!("src/{name}.js"),
                format!(
                    r#"// The `tool` interface of the `{name}` world (wit/{name}.wit), built
// into a component by componentize-js. A WIT `result`'s error is a thrown
// value; an `option` is a value or `undefined`.

export const tool = {{
  greet(name, loud) {{
    if (name.length === 0) {{
      throw "the name is empty";
    }}
    const text = `Hello, ${{name}}!`;
    return {{
      text,
      length: [...name].length,
      shout: loud ? text.toUpperCase() : undefined,
    }};
  }},
}};
"#
                ),
            ));
        }
        Lang::C => {
            files.push((format!("src/{name}.c"), fill(C_SOURCE, name)));
        }
        Lang::Go => {
            files.push(("go.mod".into(), format!("module {name}\n\ngo 1.24\n")));
            files.push(("main.go".into(), fill(GO_MAIN, name)));
            files.push(("tool.go".into(), fill(GO_TOOL, name)));
            files.push(("abi.go".into(), fill(GO_ABI, name)));
        }
    }
    let note = match lang {
        Lang::C => format!(
            "\n`wit-bindgen c` generates the bindings (`{}.h`, `{}.c`) into `build/bindings` when the component is built.\n",
            snake(name),
            snake(name)
        ),
        Lang::Go => "\n`abi.go` is the canonical ABI of this world, written by hand: change it with the WIT.\n".into(),
        _ => String::new(),
    };
    files.push((
        "README.md".into(),
        format!(
            "# {name}\n\nA Tessera component in {lang}, made by `tessera new`.\n\n```sh\ntessera build .\ntessera call {name}.wasm greet --args '{{\"name\": \"Ada\", \"loud\": true}}'\n```\n\nThe interface is `wit/{name}.wit`; change it and the code together.\n{note}",
            lang = lang_name(lang)
        ),
    ));
    files
}

/// A template with `@NAME@` (the component's name) and `@SNAKE@` (its
/// name in `snake_case`, as wit-bindgen spells it) filled in, and the
/// Go adapter arena's size.
fn fill(template: &str, name: &str) -> String {
    template
        .replace("@NAME@", name)
        .replace("@SNAKE@", &snake(name))
        .replace("@ARENA_BYTES@", &ARENA_BYTES.to_string())
}

/// The C starter: `greet` on the bindings `wit-bindgen c` generates.
const C_SOURCE: &str = r#"// The `tool` interface of the `@NAME@` world (wit/@NAME@.wit) in C, on the
// bindings that `wit-bindgen c` generates into build/bindings when the
// component is built (@SNAKE@.h, @SNAKE@.c).
//
// Ownership follows wit-bindgen's C conventions: an export owns its
// arguments (it frees them before it returns), and the generated
// post-return function frees what it returns, so every value returned is
// freshly allocated.

#include <stdlib.h>
#include <string.h>
#include <wctype.h>

#include "@SNAKE@.h"

typedef @SNAKE@_string_t string_t;
typedef exports_local_@SNAKE@_tool_greeting_t greeting_t;

// malloc that never returns NULL: running out of memory is a trap.
static void *xmalloc(size_t size) {
    void *p = malloc(size == 0 ? 1 : size);
    if (p == NULL) {
        abort();
    }
    return p;
}

// The number of characters (Unicode scalar values) of a UTF-8 string.
static uint32_t char_count(const string_t *s) {
    uint32_t n = 0;
    for (size_t i = 0; i < s->len; i++) {
        if ((s->ptr[i] & 0xC0) != 0x80) {
            n++;
        }
    }
    return n;
}

// The character at s[*i] (a component's strings are valid UTF-8);
// advances *i past it.
static uint32_t decode(const uint8_t *s, size_t *i) {
    uint8_t b = s[(*i)++];
    if (b < 0x80) {
        return b;
    }
    int extra = b >= 0xF0 ? 3 : b >= 0xE0 ? 2 : 1;
    uint32_t c = b & (0x3F >> extra);
    while (extra-- > 0) {
        c = (c << 6) | (s[(*i)++] & 0x3F);
    }
    return c;
}

// Writes c as UTF-8 at out; returns how many bytes that took.
static size_t encode(uint32_t c, uint8_t *out) {
    if (c < 0x80) {
        out[0] = (uint8_t)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (uint8_t)(0xC0 | (c >> 6));
        out[1] = (uint8_t)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (c >> 12));
        out[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (c & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | (c >> 18));
    out[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (c & 0x3F));
    return 4;
}

// s in capitals, character by character (towupper: wasi-libc's Unicode
// case mapping, one character to one).
static void upper(string_t *dst, const string_t *s) {
    uint8_t *out = xmalloc(s->len * 4);
    size_t n = 0;
    for (size_t i = 0; i < s->len;) {
        n += encode((uint32_t)towupper((wint_t)decode(s->ptr, &i)), out + n);
    }
    dst->ptr = out;
    dst->len = n;
}

bool exports_local_@SNAKE@_tool_greet(string_t *name, bool loud, greeting_t *ret, string_t *err) {
    if (name->len == 0) {
        @SNAKE@_string_free(name);
        // A WIT `result`'s error: the function returns false with *err set.
        @SNAKE@_string_dup(err, "the name is empty");
        return false;
    }
    static const char hello[] = "Hello, ";
    size_t prefix = sizeof hello - 1;
    size_t len = prefix + name->len + 1;
    uint8_t *text = xmalloc(len);
    memcpy(text, hello, prefix);
    memcpy(text + prefix, name->ptr, name->len);
    text[len - 1] = '!';
    ret->text.ptr = text;
    ret->text.len = len;
    ret->length = char_count(name);
    // An `option`: is_some, and val when it is.
    ret->shout.is_some = loud;
    if (loud) {
        upper(&ret->shout.val, &ret->text);
    }
    @SNAKE@_string_free(name);
    return true;
}
"#;

/// The Go starter's `main.go`.
const GO_MAIN: &str = r#"// The `@NAME@` component: a WASI reactor (-buildmode=c-shared) whose
// exports, in abi.go, are its entry points; main runs nothing.
package main

func main() {}
"#;

/// The Go starter's logic, in plain Go.
const GO_TOOL: &str = r#"// The `tool` interface of the `@NAME@` world (wit/@NAME@.wit) in plain Go;
// abi.go lifts the arguments from, and lowers the results into, the
// component's memory.
package main

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// Greeting is the WIT record `greeting`: what Greet answers.
type Greeting struct {
	// The greeting.
	Text string
	// How many characters the name has.
	Length uint32
	// The greeting in capitals, when asked for (an `option`: nil is none).
	Shout *string
}

// Greet greets name; loud adds the greeting in capitals. An empty name is
// an error (the `result`'s error is the error's text).
func Greet(name string, loud bool) (Greeting, error) {
	if name == "" {
		return Greeting{}, errors.New("the name is empty")
	}
	text := "Hello, " + name + "!"
	greeting := Greeting{Text: text, Length: uint32(utf8.RuneCountInString(name))}
	if loud {
		shout := strings.ToUpper(text)
		greeting.Shout = &shout
	}
	return greeting, nil
}
"#;

/// The Go starter's canonical ABI, for exactly the starter world.
const GO_ABI: &str = r#"//go:build wasip1

// The canonical ABI of the world `@NAME@` (wit/@NAME@.wit), written by hand.
//
// Hand-written because wit-bindgen's Go output (`wit-bindgen go`) imports
// go.bytecodealliance.org/pkg, a Go module that only the Go module proxy
// serves, and the proxy is not reachable here (the build runs with
// GOPROXY=off, standard library only). This file covers exactly the
// starter world: when wit/@NAME@.wit changes, change it with the WIT.
//
// The Go toolchain exports these functions under the core names that
// `wasm-tools component new` expects; they lift their arguments from
// linear memory and lower their results into it. Layouts (size/alignment,
// byte offsets) follow the component model's CanonicalABI.md:
//
//	string                 ptr u32 @0, len u32 @4                   (8/4)
//	greeting               text @0, length u32 @8,
//	                       shout (option<string>): discriminant u8 @12,
//	                       ptr @16, len @20                         (24/4)
//	result<greeting, string>
//	                       discriminant u8 @0 (0 ok, 1 err);
//	                       ok greeting @4; err string @4            (28/4)
//
// greet(name: string, loud: bool) takes three flat values (name's pointer
// and length, loud as an i32); its result takes more than one flat value,
// so it returns a pointer to a return area it allocated.
package main

import (
	"runtime"
	"runtime/debug"
	"unsafe"
)

// Memory given to the host for one call: what cabi_realloc allocated for
// the arguments and what the lowering of the results allocated. Holding
// the slices keeps the garbage collector (which does not move objects)
// from reusing that memory until the call's post-return function drops
// them.
var callMemory [][]uint64

// allocate returns the address of size zeroed bytes aligned to align (a
// power of two), held by *owner.
func allocate(owner *[][]uint64, size, align uint32) uint32 {
	if align < 8 {
		align = 8
	}
	buf := make([]uint64, (uintptr(size)+uintptr(align)+7)/8)
	*owner = append(*owner, buf)
	addr := uintptr(unsafe.Pointer(&buf[0]))
	return uint32((addr + uintptr(align) - 1) &^ (uintptr(align) - 1))
}

//go:wasmexport cabi_realloc
func cabiRealloc(old, oldSize, align, newSize uint32) uint32 {
	addr := allocate(&callMemory, newSize, align)
	if old != 0 && oldSize != 0 && newSize != 0 {
		copy(bytes(addr, min(oldSize, newSize)), bytes(old, oldSize))
	}
	return addr
}

// The WASI preview 1 adapter (which turns the Go runtime's WASI calls
// into WASI 0.2 ones) allocates its state and stack through the main
// module's `cabi_realloc_adapter`, and does so during `_initialize`, while
// the Go runtime starts: before any `//go:wasmexport` function may run.
// Nor may the adapter grow linear memory itself, as the Go runtime
// assumes it owns every page past its static data. So the adapter gets
// this static arena, which the Go runtime never touches, and a bump
// allocator over it that is not Go: `tessera build` finds the arena by its
// magic bytes in the linked module's data and adds that function, written
// in WebAssembly, as the export `cabi_realloc_adapter`. Word 4 holds the
// next free address (0 before the first allocation). Keep the layout.
var adapterArena = struct {
	magic [16]byte
	next  uint32
	_     [12]byte
	data  [@ARENA_BYTES@]byte
}{magic: [16]byte{'t', 'e', 's', 's', 'e', 'r', 'a', '-', 'a', 'd', 'a', 'p', 't', 'e', 'r', '!'}}

func init() {
	// A use the linker can see, so that it keeps the arena.
	if adapterArena.magic[0] != 't' {
		panic("adapter arena damaged")
	}
	gcOff()
	// Heap profiling samples allocations, which may read a clock.
	runtime.MemProfileRate = 0
}

// The garbage collector reads clocks (WASI imports). A component may not
// call an import while the host lowers arguments through cabi_realloc, nor
// in a post-return function (wasmtime traps: "cannot leave component
// instance"), so the collector is off but inside an export's own body,
// where it runs as usual: each export calls gcOn first and defers gcOff.
func gcOn()  { debug.SetGCPercent(100) }
func gcOff() { debug.SetGCPercent(-1) }

// --- linear memory ------------------------------------------------------

// Linear memory address addr as a Go pointer (in a wasm32 Go program the
// two are the same number).
func at(addr uint32) unsafe.Pointer { return unsafe.Pointer(uintptr(addr)) }

func bytes(addr, n uint32) []byte { return unsafe.Slice((*byte)(at(addr)), n) }

func store8(addr uint32, v uint8)   { *(*uint8)(at(addr)) = v }
func store32(addr uint32, v uint32) { *(*uint32)(at(addr)) = v }

// liftString copies the string (ptr, n) out of linear memory.
func liftString(ptr, n uint32) string {
	if n == 0 {
		return ""
	}
	return string(bytes(ptr, n))
}

// lowerString stores s at addr (ptr, len), in callMemory.
func lowerString(addr uint32, s string) {
	ptr := allocate(&callMemory, uint32(len(s)), 1)
	copy(bytes(ptr, uint32(len(s))), s)
	store32(addr, ptr)
	store32(addr+4, uint32(len(s)))
}

// --- exports --------------------------------------------------------------

//go:wasmexport local:@NAME@/tool@0.1.0#greet
func exportGreet(namePtr, nameLen, loud uint32) uint32 {
	gcOn()
	defer gcOff()
	greeting, err := Greet(liftString(namePtr, nameLen), loud != 0)
	ret := allocate(&callMemory, 28, 4)
	if err != nil {
		store8(ret, 1)
		lowerString(ret+4, err.Error())
		return ret
	}
	lowerString(ret+4, greeting.Text)
	store32(ret+12, greeting.Length)
	if greeting.Shout != nil {
		store8(ret+16, 1)
		lowerString(ret+20, *greeting.Shout)
	}
	return ret
}

// The post-return function: the host has copied the results out, so the
// call's memory can go.
//
//go:wasmexport cabi_post_local:@NAME@/tool@0.1.0#greet
func postGreet(uint32) { callMemory = nil }
"#;
