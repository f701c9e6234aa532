//! `spin`: CPU-bound loops used to test the runtime's fuel, epoch and
//! wall-clock limits.

wit_bindgen::generate!({
    world: "spin",
    path: "wit",
});

use std::hint::black_box;

/// The component's single implementation type.
struct Component;

impl Guest for Component {
    fn spin() {
        // `black_box` makes every iteration observable, so the loop survives
        // optimization and never terminates on its own.
        let mut i: u64 = 0;
        loop {
            i = black_box(i.wrapping_add(1));
        }
    }

    fn count(n: u64) -> u64 {
        // Each iteration feeds the previous value through `black_box`, so
        // the result depends on every iteration and cannot be folded to `n`.
        let mut acc: u64 = 0;
        for _ in 0..black_box(n) {
            acc = black_box(acc + 1);
        }
        acc
    }

    fn ticker(every: u64) {
        let mut n: u64 = 0;
        loop {
            for _ in 0..black_box(every) {
                n = black_box(n.wrapping_add(1));
            }
            println!("tick {n}");
        }
    }
}

export!(Component);
