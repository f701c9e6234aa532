//! Exit codes, documented in the README and in `tessera --help`.

/// The call (or command) succeeded.
pub const OK: i32 = 0;
/// Tessera itself failed (a bug, or the machine refused something).
pub const INTERNAL: i32 = 1;
/// Bad input: usage, JSON arguments, manifest, component file, function name.
pub const BAD_INPUT: i32 = 2;
/// The guest returned the `err` case of a WIT `result`.
pub const GUEST_ERROR: i32 = 3;
/// The guest trapped or hit a limit (fuel, deadline, memory, stack, output).
pub const TRAP: i32 = 4;
/// The call failed and a grant denied something during it (HTTP host, file).
pub const DENIED: i32 = 5;

/// A replay departed from its recording.
pub const DIVERGED: i32 = 6;

/// `audit verify`: the audit log is not as it was written.
pub const TAMPERED: i32 = 7;

/// The trust policy refused a component, or a signature does not verify.
pub const UNTRUSTED: i32 = 8;

/// `policy test`: a decision is not the expected one; `policy what-if`:
/// decisions would change.
pub const CHANGED: i32 = 9;

/// The exit code for a runtime error raised before the guest ran.
pub fn for_error(e: &tessera_runtime::Error) -> i32 {
    use tessera_runtime::Error as E;
    match e {
        E::Engine { .. } | E::Task { .. } => INTERNAL,
        E::Untrusted { .. } => UNTRUSTED,
        E::Busy { .. } | E::Instantiate { .. } | E::SessionEnded { .. } => TRAP,
        E::Read { .. }
        | E::NotWasm { .. }
        | E::Adapt { .. }
        | E::Compile { .. }
        | E::Link { .. }
        | E::Compose { .. }
        | E::Manifest(_)
        | E::Grant { .. }
        | E::Bind { .. }
        | E::NoSuchFunction { .. }
        | E::NotServed { .. }
        | E::Ambiguous { .. }
        | E::NotCallable { .. }
        | E::BadArguments { .. }
        | E::BadHttpRequest { .. } => BAD_INPUT,
    }
}
