//! demo-app: a tokio + hyper HTTP/1.1 server that follows baton's worker
//! contract (see ARCHITECTURE.md §3). This file only orders the start-up:
//! arguments → sockets → runtime → serve → exit code.
//!
//! Modules: `cli` (flags), `sources` (which protocol names the sockets:
//! LISTEN_FDS, SERVER_STARTER_PORT, EINHORN_FDS or --bind), `listeners`
//! (binding, and checking what an inherited fd is), `server` (accept loops,
//! HTTP connections, the drain), `udp` (the echo loop), `routes`, `notify`
//! (READY=1), `signals`, `log`, `app` (ties them together).

mod app;
mod cli;
mod listeners;
mod log;
mod notify;
mod routes;
mod server;
mod signals;
mod sources;
mod udp;

use clap::Parser;

use crate::log::{log, Ident};

fn main() {
    std::process::exit(real_main());
}

fn real_main() -> i32 {
    // clap exits with code 2 on usage errors.
    let args = cli::Args::parse();

    let who = Ident::from_env();
    // Sockets before the runtime: listenfd edits the environment, which is
    // only safe while this is the only thread.
    let sources = match sources::collect(args.sockets_from, &args.bind, &who) {
        Ok(sources) => sources,
        Err(e @ listeners::Error::Usage(_)) => {
            log!("{e}");
            return 2;
        }
        Err(e @ listeners::Error::Runtime(_)) => {
            log!("{e}");
            return 1;
        }
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            log!(
                "cannot start the tokio runtime: {}",
                crate::log::describe(&e)
            );
            return 1;
        }
    };
    let code = runtime.block_on(app::serve(args, sources, who));
    // Connection tasks cut by the drain timeout are still parked on the
    // runtime; do not wait for them.
    runtime.shutdown_background();
    code
}
