"""The `consumer` world (wit/text/text.wit), the composition example's
consumer, built into a component by componentize-py, which generates the
`wit_world` bindings imported here at build time. `report` calls the
imported `transform`, which a manifest's `[imports]` binds to a provider
component. components/text-consumer is the same consumer in Rust."""

import os

import wit_world
from wit_world.imports import transform


class WitWorld(wit_world.WitWorld):
    def report(self, text: str) -> wit_world.Report:
        return wit_world.Report(
            shout=transform.upper(text) + "!",
            counts=transform.count(text),
            longest=transform.longest(text),
            # The provider answers from its own environment, and this from
            # the consumer's: grants do not cross the link.
            provider=transform.signature(),
            consumer=os.environ.get("SIGNATURE"),
        )
