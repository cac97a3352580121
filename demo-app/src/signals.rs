//! Signal handling: which signals drain, and SIGQUIT's immediate exit.
//!
//! Handlers are installed synchronously by [`install`] (tokio registers the
//! OS handler inside `signal()`), so once it returns a drain signal can no
//! longer kill us with its default action. That is why `READY=1` is only sent
//! after `install` has run: a supervisor that drains us right after READY
//! must find the handler in place.

use std::future::Future;
use std::io;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::cli::SignalName;
use crate::log::{log, Ident};

/// Installs the handlers and returns the drain trigger: a future that
/// resolves on the first drain signal (never, with `ignore_drain`).
///
/// The drain signals are SIGTERM, SIGINT and `drain_signal`. SIGQUIT exits
/// at once with code 0, unless it was chosen as the drain signal (then the
/// explicit choice wins and it drains).
pub fn install(
    drain_signal: SignalName,
    ignore_drain: bool,
    who: Ident,
) -> io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut drain_set = vec![SignalName::TERM, SignalName::INT];
    if !drain_set.contains(&drain_signal) {
        drain_set.push(drain_signal);
    }

    // One forwarding task per signal; the drain future reads the channel, so
    // any of them can trigger it. Repeats (a second SIGTERM while draining)
    // are absorbed by the still-installed handlers and ignored.
    let (tx, mut rx) = mpsc::unbounded_channel::<SignalName>();
    for sig in drain_set.iter().copied() {
        let mut stream = signal(SignalKind::from_raw(sig.number))?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(sig).is_err() {
                    break;
                }
            }
        });
    }

    if !drain_set.contains(&SignalName::QUIT) {
        let mut quit = signal(SignalKind::quit())?;
        let who = who.clone();
        tokio::spawn(async move {
            if quit.recv().await.is_some() {
                log!("{who} got SIGQUIT, exiting without draining");
                std::process::exit(0);
            }
        });
    }

    Ok(async move {
        while let Some(sig) = rx.recv().await {
            if ignore_drain {
                log!("{who} ignoring {sig} (--ignore-drain)");
                continue;
            }
            log!("{who} got {sig}, draining");
            return;
        }
        // All senders gone: cannot happen while the forwarding tasks live
        // (they loop forever); never drain on it.
        std::future::pending::<()>().await
    })
}
