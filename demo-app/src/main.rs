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

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let baton_workers = std::env::var("BATON_WORKERS").ok();
    let threads = match runtime_threads(args.threads, baton_workers.as_deref(), cores) {
        Ok(n) => n,
        Err(e) => {
            log!("{e}; using one runtime thread per core ({cores})");
            cores
        }
    };
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let runtime = match builder.enable_all().build() {
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

/// How many runtime threads: `--threads` if given; else this worker's
/// share of the cores when the supervisor says how many workers its
/// generation has (`BATON_WORKERS`), at least 1; else one per core (tokio's
/// own default). 1 means a current-thread runtime: with as many workers as
/// cores, each then runs on one core without cross-thread wake-ups, where a
/// thread per core in every worker only has them contend.
fn runtime_threads(
    flag: Option<u16>,
    baton_workers: Option<&str>,
    cores: usize,
) -> Result<usize, String> {
    if let Some(n) = flag {
        return Ok(usize::from(n));
    }
    match baton_workers {
        None => Ok(cores),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(workers) if workers > 0 => Ok((cores / workers).max(1)),
            _ => Err(format!(
                "BATON_WORKERS={v:?} is not a positive number of workers"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::runtime_threads;

    #[test]
    fn threads_are_the_worker_share_of_the_cores() {
        // No supervisor hint: one per core.
        assert_eq!(runtime_threads(None, None, 2), Ok(2));
        // baton says how many workers share the machine.
        assert_eq!(runtime_threads(None, Some("1"), 2), Ok(2));
        assert_eq!(runtime_threads(None, Some("2"), 2), Ok(1));
        assert_eq!(runtime_threads(None, Some("16"), 2), Ok(1));
        assert_eq!(runtime_threads(None, Some("2"), 8), Ok(4));
        assert_eq!(runtime_threads(None, Some("3"), 8), Ok(2));
        // The flag wins.
        assert_eq!(runtime_threads(Some(3), Some("2"), 2), Ok(3));
        assert_eq!(runtime_threads(Some(1), None, 8), Ok(1));
        // Garbage is reported, not guessed at.
        assert!(runtime_threads(None, Some("0"), 2).is_err());
        assert!(runtime_threads(None, Some("two"), 2).is_err());
    }
}
