//! `wasi:cli/environment` through the gateway.
//!
//! The environment variables and arguments a guest sees are exactly the
//! granted ones; the gateway answers `get-environment` and `get-arguments`
//! itself (from the grants) and reports each read as an interaction, so a
//! journal records what the guest was told.

use wasmtime::StoreContextMut;
use wasmtime::component::Linker;

use super::{HostState, Interaction};

/// The `wasi:cli/environment` instance whose functions are wrapped. Guests
/// importing any `0.2.x` version link against it.
pub const CLI_ENVIRONMENT: &str = "wasi:cli/environment@0.2.12";

/// Replaces `get-environment` and `get-arguments` with gateway answers.
/// Call after wasmtime-wasi's `add_to_linker`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut inst = linker.instance(CLI_ENVIRONMENT)?;
    inst.func_wrap(
        "get-environment",
        |store: StoreContextMut<'_, HostState>, (): ()| {
            let gateway = &store.data().gateway;
            let probe = Interaction::Environment { vars: Vec::new() };
            match gateway.exchange(probe, |_| Interaction::Environment {
                vars: gateway
                    .grants()
                    .env
                    .vars
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            })? {
                Interaction::Environment { vars } => Ok((vars,)),
                _ => unreachable!("exchange returns the probe's kind"),
            }
        },
    )?;
    inst.func_wrap(
        "get-arguments",
        |store: StoreContextMut<'_, HostState>, (): ()| {
            let gateway = &store.data().gateway;
            let probe = Interaction::Arguments { args: Vec::new() };
            match gateway.exchange(probe, |_| {
                let mut args = vec![gateway.scope().function.clone()];
                args.extend(gateway.grants().args.iter().cloned());
                Interaction::Arguments { args }
            })? {
                Interaction::Arguments { args } => Ok((args,)),
                _ => unreachable!("exchange returns the probe's kind"),
            }
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
