//! `text-provider`: the provider of the composition example
//! (`wit/text/text.wit`, world `provider`) in Rust. It exports
//! `example:text/transform`, which a consumer such as `text-consumer`
//! imports once a manifest's `[imports]` binds it to this component
//! (`docs/composition.md`). `components/text-provider-py` is the same
//! provider in Python and answers the same JSON to the same call.

wit_bindgen::generate!({
    world: "provider",
    // A symlink to the shared `wit/text` package.
    path: "wit",
});

use exports::example::text::transform::{Counts, Guest};

/// The component's single implementation type.
struct Component;

/// A count as a WIT `u32`: a string passed in is shorter than 4 GiB, so
/// this saturates only in theory.
fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Guest for Component {
    fn upper(text: String) -> String {
        text.to_uppercase()
    }

    fn count(text: String) -> Counts {
        Counts {
            chars: to_u32(text.chars().count()),
            words: to_u32(text.split_whitespace().count()),
        }
    }

    fn longest(text: String) -> Option<String> {
        let mut longest: Option<(&str, usize)> = None;
        for word in text.split_whitespace() {
            let len = word.chars().count();
            // Strictly longer: the first word wins a tie.
            if longest.is_none_or(|(_, l)| len > l) {
                longest = Some((word, len));
            }
        }
        longest.map(|(word, _)| word.to_string())
    }

    fn signature() -> Option<String> {
        // The provider's own environment: what its manifest grants.
        std::env::var("SIGNATURE").ok()
    }
}

export!(Component);
