//! `wasi:sockets`: refused by the gateway, with an audit event and a step.
//!
//! Raw sockets and name lookup are never granted: outbound traffic goes
//! through `wasi:http`, where the allow-list applies. The three entry points
//! — `create-tcp-socket`, `create-udp-socket` and `resolve-addresses` — are
//! replaced by the gateway and answer `access-denied`; without a socket or a
//! lookup stream no other socket function can be reached. Each refusal is a
//! `sockets`/`deny` audit event and a journal step, so a journal shows the
//! attempt and a replay checks it.

use serde::{Deserialize, Serialize};
use wasmtime::component::{Linker, Val};
use wasmtime_wasi::WasiCtxBuilder;

use super::{Capability, Effects, Section};
use crate::audit::Decision;
use crate::gateway::{Gateway, Op};
use crate::host::HostState;
use crate::manifest::ManifestError;

/// The sockets capability: no grant, every entry point refused.
#[derive(Debug)]
pub struct Sockets;

/// What the guest tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "attempt")]
pub enum SocketAttempt {
    /// `create-tcp-socket`.
    CreateTcpSocket,
    /// `create-udp-socket`.
    CreateUdpSocket,
    /// `resolve-addresses`.
    ResolveAddresses {
        /// The name.
        name: String,
    },
}

/// A refused socket operation; the response is the error code returned.
pub struct Refused;
impl Op for Refused {
    const CAPABILITY: &'static str = "sockets";
    const NAME: &'static str = "refused";
    type Request = SocketAttempt;
    type Response = String;
}

/// The socket entry points, by instance.
pub const ENTRY_POINTS: &[(&str, &str)] = &[
    ("wasi:sockets/tcp-create-socket@0.2.12", "create-tcp-socket"),
    ("wasi:sockets/udp-create-socket@0.2.12", "create-udp-socket"),
    ("wasi:sockets/ip-name-lookup@0.2.12", "resolve-addresses"),
];

fn refuse(
    store: wasmtime::StoreContextMut<'_, HostState>,
    attempt: SocketAttempt,
    results: &mut [Val],
) -> wasmtime::Result<()> {
    let gateway = &store.data().gateway;
    let target = match &attempt {
        SocketAttempt::CreateTcpSocket => "tcp".to_string(),
        SocketAttempt::CreateUdpSocket => "udp".to_string(),
        SocketAttempt::ResolveAddresses { name } => format!("resolve {name}"),
    };
    gateway.audit(
        "sockets",
        target,
        Decision::Deny,
        Some("raw sockets and name lookup are never granted; use wasi:http".into()),
    );
    let code = gateway.exchange::<Refused>(attempt, |_| "access-denied".to_string())?;
    results[0] = Val::Result(Err(Some(Box::new(Val::Enum(code)))));
    Ok(())
}

impl Capability for Sockets {
    const NAME: &'static str = "sockets";
    const MANIFEST_KEYS: &'static [&'static str] = &[];
    type Grant = ();
    type State = ();

    fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        for (instance, name) in ENTRY_POINTS {
            let mut inst = super::shadowing(linker, instance, &[name])?;
            match *name {
                "create-tcp-socket" => inst.func_new(name, |store, _, _params, results| {
                    refuse(store, SocketAttempt::CreateTcpSocket, results)
                })?,
                "create-udp-socket" => inst.func_new(name, |store, _, _params, results| {
                    refuse(store, SocketAttempt::CreateUdpSocket, results)
                })?,
                _ => inst.func_new_async(name, |mut store, _, params, results| {
                    Box::new(async move {
                        // The network is borrowed for the call: the borrow
                        // ends here, or the call traps when it returns.
                        if let Some(Val::Resource(network)) = params.first() {
                            network.resource_drop_async(&mut store).await?;
                        }
                        let name = match params.get(1) {
                            Some(Val::String(s)) => s.clone(),
                            _ => String::new(),
                        };
                        refuse(store, SocketAttempt::ResolveAddresses { name }, results)
                    })
                })?,
            }
        }
        linker.allow_shadowing(false);
        Ok(())
    }

    fn grant(_: &Section<'_>) -> Result<(), ManifestError> {
        Ok(())
    }

    fn state(_: &(), _: &Gateway, _: &mut WasiCtxBuilder) -> Result<(), crate::Error> {
        Ok(())
    }

    fn effects(_: &()) -> Effects {
        Effects::NONE
    }
}
