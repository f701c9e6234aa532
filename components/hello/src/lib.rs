//! `hello`: a small demo component with a pure greeting, stdio and
//! `wasi:logging` output, and echo functions covering every WIT type.

wit_bindgen::generate!({
    world: "hello",
    path: "wit",
    // Also generate bindings for the vendored `wasi:logging` import.
    generate_all,
});

use std::cell::Cell;

use exports::tessera::hello::types::{
    Color, Counter, Guest as TypesGuest, GuestCounter, Item, Perms, Point, Shape,
};
use self::wasi::logging::logging::{Level, log};

/// The component's single implementation type.
struct Component;

impl Guest for Component {
    fn greet(name: String) -> String {
        format!("Hello, {name}!")
    }

    fn chatter(msg: String) -> u32 {
        println!("stdout: {msg}");
        eprintln!("stderr: {msg}");
        log(Level::Info, "hello", &msg);
        u32::try_from(msg.len()).unwrap_or(u32::MAX)
    }

    fn busy_host(rounds: u32) -> u64 {
        let mut sum: u64 = 0;
        for i in 0..rounds {
            let wall = ::wasi::clocks::wall_clock::now();
            let mono = ::wasi::clocks::monotonic_clock::now();
            let r = ::wasi::random::random::get_random_u64();
            log(Level::Debug, "busy", "round");
            sum = sum
                .wrapping_add(wall.seconds ^ u64::from(wall.nanoseconds))
                .wrapping_add(mono)
                .wrapping_add(r)
                .wrapping_add(u64::from(i));
        }
        sum
    }

    fn bump() -> u32 {
        use std::sync::atomic::{AtomicU32, Ordering};
        static CALLS: AtomicU32 = AtomicU32::new(0);
        CALLS.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Backing state of the `counter` resource.
struct CounterImpl {
    next: Cell<u32>,
}

impl GuestCounter for CounterImpl {
    fn new(start: u32) -> Self {
        Self {
            next: Cell::new(start),
        }
    }

    fn next(&self) -> u32 {
        let value = self.next.get();
        self.next.set(value.wrapping_add(1));
        value
    }
}

impl TypesGuest for Component {
    type Counter = CounterImpl;

    fn echo_bool(v: bool) -> bool {
        v
    }
    fn echo_s8(v: i8) -> i8 {
        v
    }
    fn echo_u8(v: u8) -> u8 {
        v
    }
    fn echo_s16(v: i16) -> i16 {
        v
    }
    fn echo_u16(v: u16) -> u16 {
        v
    }
    fn echo_s32(v: i32) -> i32 {
        v
    }
    fn echo_u32(v: u32) -> u32 {
        v
    }
    fn echo_s64(v: i64) -> i64 {
        v
    }
    fn echo_u64(v: u64) -> u64 {
        v
    }
    fn echo_f32(v: f32) -> f32 {
        v
    }
    fn echo_f64(v: f64) -> f64 {
        v
    }
    fn echo_char(v: char) -> char {
        v
    }
    fn echo_string(v: String) -> String {
        v
    }
    fn echo_list(v: Vec<u32>) -> Vec<u32> {
        v
    }
    fn echo_bytes(v: Vec<u8>) -> Vec<u8> {
        v
    }
    fn echo_tuple(v: (u8, String, bool)) -> (u8, String, bool) {
        v
    }
    fn echo_point(v: Point) -> Point {
        v
    }
    fn echo_items(items: Vec<Item>) -> Vec<Item> {
        items
    }
    fn echo_shape(v: Shape) -> Shape {
        v
    }
    fn echo_color(v: Color) -> Color {
        v
    }
    fn echo_option(v: Option<String>) -> Option<String> {
        v
    }
    fn echo_nested_option(v: Option<Option<u32>>) -> Option<Option<u32>> {
        v
    }
    fn echo_result(v: Result<u32, String>) -> Result<u32, String> {
        v
    }
    fn echo_unit_result(v: Result<(), ()>) -> Result<(), ()> {
        v
    }
    fn echo_perms(v: Perms) -> Perms {
        v
    }

    fn no_result(_v: u32) {}

    fn divide(a: i32, b: i32) -> Result<i32, String> {
        if b == 0 {
            return Err("division by zero".to_string());
        }
        // `i32::MIN / -1` overflows; wrap rather than trap.
        Ok(a.wrapping_div(b))
    }

    fn fail(msg: String) -> u32 {
        log(Level::Error, "fail", &format!("about to fail: {msg}"));
        panic!("{msg}");
    }

    fn make_counter(start: u32) -> Counter {
        Counter::new(CounterImpl::new(start))
    }
}

export!(Component);
