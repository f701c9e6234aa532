//go:build wasip1

// The canonical ABI of the world `tool` (wit/example), written by hand:
// the Go toolchain exports these functions under the core names that
// `wasm-tools component new` expects, and the functions lift their
// arguments from linear memory and lower their results into it. Layouts
// (size/alignment, byte offsets) follow the component model's
// CanonicalABI.md:
//
//	string, list<T>        ptr u32 @0, len u32 @4                  (8/4)
//	option<u32>            discriminant u8 @0, value u32 @4        (8/4)
//	item                   name @0, quantity @8, price-cents @12,
//	                       tags @20                                (28/4)
//	summary                items @0, units @8, value-cents @16,
//	                       largest (option<string>) @24: disc @24,
//	                       ptr @28, len @32; tags @36              (48/8)
//	result<list<item>, restock-error>
//	                       disc @0; ok list @4; err variant @4:
//	                       disc @4, unknown-item string @8         (16/4)
//
// Each export's results take more than one flat value, so it returns a
// pointer to a return area it allocated.
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
// allocator over it that is not Go: adapter_realloc.py finds the arena by
// its magic bytes in the linked module's data and adds that function as
// the export `cabi_realloc_adapter`. Word 4 holds the next free address
// (0 before the first allocation).
var adapterArena = struct {
	magic [16]byte
	next  uint32
	_     [12]byte
	data  [256 << 10]byte
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

func load8(addr uint32) uint8   { return *(*uint8)(at(addr)) }
func load32(addr uint32) uint32 { return *(*uint32)(at(addr)) }

func store8(addr uint32, v uint8)   { *(*uint8)(at(addr)) = v }
func store32(addr uint32, v uint32) { *(*uint32)(at(addr)) = v }
func store64(addr uint32, v uint64) { *(*uint64)(at(addr)) = v }

// --- lifting ------------------------------------------------------------

func liftString(ptr, n uint32) string {
	if n == 0 {
		return ""
	}
	return string(bytes(ptr, n)) // a copy
}

func liftItems(ptr, n uint32) []Item {
	items := make([]Item, n)
	for i := range items {
		base := ptr + uint32(i)*28
		item := &items[i]
		item.Name = liftString(load32(base), load32(base+4))
		item.Quantity = load32(base + 8)
		if load8(base+12) != 0 {
			price := load32(base + 16)
			item.PriceCents = &price
		}
		tagsPtr, tagsLen := load32(base+20), load32(base+24)
		item.Tags = make([]string, tagsLen)
		for j := range item.Tags {
			tag := tagsPtr + uint32(j)*8
			item.Tags[j] = liftString(load32(tag), load32(tag+4))
		}
	}
	return items
}

// --- lowering (into callMemory) -------------------------------------------

// lowerString stores s at addr (ptr, len).
func lowerString(addr uint32, s string) {
	ptr := allocate(&callMemory, uint32(len(s)), 1)
	copy(bytes(ptr, uint32(len(s))), s)
	store32(addr, ptr)
	store32(addr+4, uint32(len(s)))
}

// lowerStrings stores the list<string> ss at addr (ptr, len).
func lowerStrings(addr uint32, ss []string) {
	ptr := allocate(&callMemory, uint32(len(ss))*8, 4)
	for i, s := range ss {
		lowerString(ptr+uint32(i)*8, s)
	}
	store32(addr, ptr)
	store32(addr+4, uint32(len(ss)))
}

// lowerItems stores the list<item> items at addr (ptr, len).
func lowerItems(addr uint32, items []Item) {
	ptr := allocate(&callMemory, uint32(len(items))*28, 4)
	for i, item := range items {
		base := ptr + uint32(i)*28
		lowerString(base, item.Name)
		store32(base+8, item.Quantity)
		if item.PriceCents != nil {
			store8(base+12, 1)
			store32(base+16, *item.PriceCents)
		}
		lowerStrings(base+20, item.Tags)
	}
	store32(addr, ptr)
	store32(addr+4, uint32(len(items)))
}

// --- exports --------------------------------------------------------------

//go:wasmexport tessera:example/catalog@0.1.0#summarize
func exportSummarize(itemsPtr, itemsLen uint32) uint32 {
	gcOn()
	defer gcOff()
	s := Summarize(liftItems(itemsPtr, itemsLen))
	ret := allocate(&callMemory, 48, 8)
	store32(ret, s.Items)
	store64(ret+8, s.Units)
	store64(ret+16, s.ValueCents)
	if s.Largest != nil {
		store8(ret+24, 1)
		lowerString(ret+28, *s.Largest)
	}
	lowerStrings(ret+36, s.Tags)
	return ret
}

//go:wasmexport tessera:example/catalog@0.1.0#filter
func exportFilter(itemsPtr, itemsLen, tagIsSome, tagPtr, tagLen uint32) uint32 {
	gcOn()
	defer gcOff()
	var tag *string
	if tagIsSome != 0 {
		t := liftString(tagPtr, tagLen)
		tag = &t
	}
	items := Filter(liftItems(itemsPtr, itemsLen), tag)
	ret := allocate(&callMemory, 8, 4)
	lowerItems(ret, items)
	return ret
}

//go:wasmexport tessera:example/catalog@0.1.0#restock
func exportRestock(itemsPtr, itemsLen, namePtr, nameLen, units uint32) uint32 {
	gcOn()
	defer gcOff()
	items, err := Restock(liftItems(itemsPtr, itemsLen), liftString(namePtr, nameLen), units)
	ret := allocate(&callMemory, 16, 4)
	switch {
	case err == nil:
		lowerItems(ret+4, items) // ok: discriminant 0
	case err.Overflow:
		store8(ret, 1)
		store8(ret+4, 1)
	default:
		store8(ret, 1)
		lowerString(ret+8, err.UnknownItem) // unknown-item: discriminant 0
	}
	return ret
}

// The post-return functions: the host has copied the results out, so the
// call's memory can go.

//go:wasmexport cabi_post_tessera:example/catalog@0.1.0#summarize
func postSummarize(uint32) { callMemory = nil }

//go:wasmexport cabi_post_tessera:example/catalog@0.1.0#filter
func postFilter(uint32) { callMemory = nil }

//go:wasmexport cabi_post_tessera:example/catalog@0.1.0#restock
func postRestock(uint32) { callMemory = nil }
