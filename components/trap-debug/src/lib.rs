//! `trap-debug`: a trap three calls deep, in a component that keeps its
//! DWARF, for the runtime's source-level backtraces.

wit_bindgen::generate!({
    world: "trap-debug",
    path: "wit",
});

/// The component's single implementation type.
struct Component;

impl Guest for Component {
    fn divide(a: i32, b: i32) -> i32 {
        outer_step(a, b)
    }
}

#[inline(never)]
fn outer_step(a: i32, b: i32) -> i32 {
    std::hint::black_box(middle_step(a, b)) + 0
}

#[inline(never)]
fn middle_step(a: i32, b: i32) -> i32 {
    std::hint::black_box(innermost_divide(a, b))
}

#[inline(never)]
fn innermost_divide(a: i32, b: i32) -> i32 {
    let b = std::hint::black_box(b);
    if b == 0 {
        // A plain `unreachable` trap, without Rust's panic machinery, so
        // the backtrace starts in this function.
        core::arch::wasm32::unreachable()
    }
    a.wrapping_div(b)
}

export!(Component);
