//! `text-provider-wrong`: a provider of `example:text/transform@0.1.0`
//! whose types do not match the composition example's (`wit/text`): its
//! own `wit/text.wit` (a copy, not a symlink) has `count` return a bare
//! `u32` and `longest` take an extra `limit`. It exists for Tessera's
//! tests, which bind a consumer's import of `example:text/transform`
//! (`text-consumer`) to it through a manifest's `[imports]` and check that
//! the runtime refuses the link at load time, naming both sides
//! (`docs/composition.md`). Its functions work, so a call that somehow got
//! through would not trap by itself.

wit_bindgen::generate!({
    world: "provider",
    // Its own folder, deliberately different from `wit/text`.
    path: "wit",
});

use exports::example::text::transform::Guest;

/// The component's single implementation type.
struct Component;

impl Guest for Component {
    fn upper(text: String) -> String {
        text.to_uppercase()
    }

    fn count(text: String) -> u32 {
        u32::try_from(text.chars().count()).unwrap_or(u32::MAX)
    }

    fn longest(text: String, limit: u32) -> Option<String> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut longest: Option<(&str, usize)> = None;
        for word in text.split_whitespace() {
            let len = word.chars().count();
            // Strictly longer: the first word wins a tie.
            if len <= limit && longest.is_none_or(|(_, l)| len > l) {
                longest = Some((word, len));
            }
        }
        longest.map(|(word, _)| word.to_string())
    }

    fn signature() -> Option<String> {
        std::env::var("SIGNATURE").ok()
    }
}

export!(Component);
