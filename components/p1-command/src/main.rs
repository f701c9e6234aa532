//! `p1-command`: a WASI preview 1 command (core module with `_start`) used
//! to test the runtime's preview 1 adapter path. Prints a greeting, then
//! each argument after the program name, then the `GREETING` variable, one
//! per line.

fn main() {
    println!("hello from wasip1");
    for arg in std::env::args().skip(1) {
        println!("{arg}");
    }
    match std::env::var("GREETING") {
        Ok(value) => println!("{value}"),
        Err(_) => println!("GREETING unset"),
    }
}
