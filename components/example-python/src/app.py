"""The `catalog` interface of the `tool` world (wit/example/catalog.wit),
built into a component by componentize-py, which generates the `wit_world`
bindings imported here at build time. The same interface is implemented in
Rust, JavaScript, C and Go under components/example-<language>, and every
one answers the same JSON to the same call."""

from typing import List, Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import catalog

# WIT integers are plain Python ints: nothing wraps by itself, so the
# bounds of u32 and u64 are kept here.
U32_MAX = 2**32 - 1
U64_MASK = 2**64 - 1


class Catalog(exports.Catalog):
    def summarize(self, items: List[catalog.Item]) -> catalog.Summary:
        units = 0
        value_cents = 0
        largest: Optional[catalog.Item] = None
        for item in items:
            units += item.quantity
            if item.price_cents is not None:
                # u64 arithmetic, as in the other languages.
                value_cents = (value_cents + item.quantity * item.price_cents) & U64_MASK
            # Strictly more: the first item wins a tie.
            if largest is None or item.quantity > largest.quantity:
                largest = item
        # Python orders `str` by code point, which is the byte order of
        # UTF-8; a set keeps each tag once.
        tags = sorted({tag for item in items for tag in item.tags})
        return catalog.Summary(
            items=len(items),
            units=units,
            value_cents=value_cents,
            largest=None if largest is None else largest.name,
            tags=tags,
        )

    def filter(self, items: List[catalog.Item], tag: Optional[str]) -> List[catalog.Item]:
        if tag is None:
            return items
        return [item for item in items if tag in item.tags]

    def restock(self, items: List[catalog.Item], name: str, units: int) -> List[catalog.Item]:
        # Raising `Err` returns the `err` case of the WIT `result`.
        for item in items:
            if item.name == name:
                if item.quantity + units > U32_MAX:
                    raise Err(catalog.RestockError_Overflow())
                item.quantity += units
                return items
        raise Err(catalog.RestockError_UnknownItem(name))
