"""The `transform` interface of the `provider` world (wit/text/text.wit),
the composition example's provider, built into a component by
componentize-py, which generates the `wit_world` bindings imported here at
build time. components/text-provider is the same provider in Rust, and both
answer the same JSON to the same call."""

import os
from typing import Optional

from wit_world import exports
from wit_world.exports import transform


class Transform(exports.Transform):
    def upper(self, text: str) -> str:
        return text.upper()

    def count(self, text: str) -> transform.Counts:
        # `len` counts code points, which for a WIT string are Unicode
        # scalar values; `split()` splits on runs of whitespace, as Rust's
        # `split_whitespace` does.
        return transform.Counts(chars=len(text), words=len(text.split()))

    def longest(self, text: str) -> Optional[str]:
        # `max` returns the first of equal length.
        return max(text.split(), key=len, default=None)

    def signature(self) -> Optional[str]:
        # The provider's own environment: what its manifest grants.
        return os.environ.get("SIGNATURE")
