//! Evaluator threads: where a decision asked for on a guest's fiber stack
//! is made (Cedar needs a stack `stacker` can measure). One thread per
//! core, started on first use, each with a 4 MiB stack.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};

use cedar_policy::Authorizer;

use super::{Caller, Interaction, Policies, Verdict, decide_here};

type Job = (Arc<Policies>, Caller, Interaction, SyncSender<Verdict>);

fn pool() -> Option<&'static Mutex<SyncSender<Job>>> {
    static POOL: OnceLock<Option<Mutex<SyncSender<Job>>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = sync_channel::<Job>(64);
        let rx = Arc::new(Mutex::new(rx));
        let threads = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        let mut started = 0;
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("tessera-policy-{i}"))
                .stack_size(4 << 20)
                .spawn(move || serve(&rx));
            if spawned.is_ok() {
                started += 1;
            }
        }
        (started > 0).then(|| Mutex::new(tx))
    })
    .as_ref()
}

fn serve(jobs: &Mutex<Receiver<Job>>) {
    let authorizer = Authorizer::new();
    loop {
        let job = jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok((policies, caller, interaction, reply)) = job else {
            return;
        };
        let _ = reply.send(decide_here(&authorizer, &policies, &caller, &interaction));
    }
}

/// The decision, made on an evaluator thread; `None` when no thread could
/// be started or it went away.
pub(super) fn decide(
    policies: Arc<Policies>,
    caller: Caller,
    interaction: Interaction,
) -> Option<Verdict> {
    let sender = pool()?.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let (reply, answer) = sync_channel(1);
    sender.send((policies, caller, interaction, reply)).ok()?;
    answer.recv().ok()
}
