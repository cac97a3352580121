//! Ties the pieces together once the runtime exists: signal handlers, the
//! readiness announcement, and the server.

use std::ffi::OsString;
use std::time::Duration;

use crate::cli::Args;
use crate::listeners::Source;
use crate::log::{describe, log, Ident};
use crate::notify;
use crate::server::{self, DrainOptions};

/// Runs the worker to completion; returns the process exit code.
pub async fn serve(args: Args, sources: Vec<Source>, who: Ident) -> i32 {
    // Signal handlers first: READY=1 promises that a drain signal is handled.
    let shutdown = match crate::signals::install(args.drain_signal, args.ignore_drain, who.clone())
    {
        Ok(shutdown) => shutdown,
        Err(e) => {
            log!("cannot install signal handlers: {}", describe(&e));
            return 1;
        }
    };

    let listeners = sources.len();
    let on_ready = announce_ready(
        who.clone(),
        listeners,
        args.ready_delay,
        args.no_ready,
        std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()),
    );
    let opts = DrainOptions {
        idle_grace: args.idle_grace,
        close_spread: args.close_spread,
        drain_timeout: args.drain_timeout,
    };
    match server::run(sources, who, opts, shutdown, on_ready).await {
        Ok(_) => 0,
        Err(msg) => {
            log!("{msg}");
            1
        }
    }
}

/// Started by `server::run` once the accept loops are running.
async fn announce_ready(
    who: Ident,
    listeners: usize,
    delay: Duration,
    no_ready: bool,
    notify_socket: Option<OsString>,
) {
    if no_ready {
        log!("{who} serving on {listeners} listener(s), not sending READY=1 (--no-ready)");
        return;
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(target) = notify_socket {
        let shown = target.to_string_lossy().into_owned();
        let sent = tokio::task::spawn_blocking(move || notify::send(&target, "READY=1")).await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // Keep serving: the supervisor's ready timeout decides what
                // a worker that could not say READY is worth.
                log!(
                    "{who} cannot send READY=1 to NOTIFY_SOCKET={shown}: {}",
                    describe(&e)
                );
                return;
            }
            Err(e) => {
                log!("{who} cannot send READY=1 to NOTIFY_SOCKET={shown}: {e}");
                return;
            }
        }
    }
    log!("{who} ready on {listeners} listener(s)");
}
