//! `memory-hog`: allocates and touches a requested amount of memory so the
//! runtime's linear-memory limits can be tested.

wit_bindgen::generate!({
    world: "memory-hog",
    path: "wit",
});

use std::hint::black_box;

/// The component's single implementation type.
struct Component;

/// One mebibyte.
const MIB: usize = 1024 * 1024;
/// Stride for touching memory: a typical OS page, smaller than a wasm page.
const PAGE: usize = 4096;

impl Guest for Component {
    fn hog(mib: u32) -> u32 {
        let len = (mib as usize)
            .checked_mul(MIB)
            .expect("requested size overflows the address space");
        // Allocation failure (the host refusing `memory.grow`) aborts, which
        // traps the instance.
        let mut block = vec![0u8; len];
        for offset in (0..len).step_by(PAGE) {
            block[offset] = 1;
        }
        black_box(&mut block);
        mib
    }
}

export!(Component);
