//! `text-consumer`: the consumer of the composition example
//! (`wit/text/text.wit`, world `consumer`) in Rust. It imports
//! `example:text/transform`, which a manifest's `[imports]` binds to a
//! provider component such as `text-provider` (`docs/composition.md`), and
//! exports `report`, built from calls to that import.
//! `components/text-consumer-py` is the same consumer in Python.

wit_bindgen::generate!({
    world: "consumer",
    // A symlink to the shared `wit/text` package.
    path: "wit",
});

use example::text::transform;

/// The component's single implementation type.
struct Component;

impl Guest for Component {
    fn report(text: String) -> Report {
        Report {
            shout: transform::upper(&text) + "!",
            counts: transform::count(&text),
            longest: transform::longest(&text),
            // The provider answers from its own environment...
            provider: transform::signature(),
            // ...and this from the consumer's: grants do not cross the link.
            consumer: std::env::var("SIGNATURE").ok(),
        }
    }
}

export!(Component);
