//! `deep-recursion`: non-tail recursion to a requested depth, used to test
//! the runtime's stack-overflow handling.

wit_bindgen::generate!({
    world: "deep-recursion",
    path: "wit",
});

use std::hint::black_box;

/// The component's single implementation type.
struct Component;

impl Guest for Component {
    fn recurse(depth: u64) -> u64 {
        descend(depth)
    }
}

/// Recurses `depth` times and returns `depth`.
///
/// Every frame keeps a local array alive across the recursive call via
/// `black_box`, so the call is not in tail position and the recursion cannot
/// be turned into a loop.
#[inline(never)]
fn descend(depth: u64) -> u64 {
    let mut frame = [depth; 4];
    black_box(&mut frame);
    if depth == 0 {
        return 0;
    }
    let below = descend(depth - 1);
    black_box(&frame);
    below + 1
}

export!(Component);
