//! Accept loops, connections, and the drain.
//!
//! The drain is built so that no request the kernel accepted is lost, and
//! no request a client sends on a keep-alive connection either:
//!
//! * Stop accepting by dropping the tokio listener: that removes it from our
//!   epoll set and closes only our fd. The socket lives on in the supervisor
//!   and in the next generation, which picks up whatever is still queued.
//! * Never call hyper's `graceful_shutdown` on drain: it closes idle
//!   keep-alive connections at once, racing a client that has just sent its
//!   next request on one (hyper#3792), and it treats a just-accepted
//!   connection whose first request is not read yet as idle too. Instead
//!   every response written after the drain began carries
//!   `Connection: close` ("lame duck"): hyper closes the connection after
//!   writing it, and the client reconnects — to the next generation. That
//!   close never races a request: the client reads the header before it
//!   sends another one.
//! * An idle connection is closed by us only once it has been idle for
//!   `idle_grace` plus a random share of `close_spread` (counted from the
//!   drain's start or its last response, whichever is later), and only then
//!   via `graceful_shutdown`. Closing an idle connection always races the
//!   client's next request (it may be on the wire as we close), so we do it
//!   only after an idle time a client must tolerate anyway: the keep-alive
//!   timeout servers apply in normal operation (Apache's default is 5 s),
//!   which every client meets without a reload, and which a pooled client
//!   (urllib3, browsers) notices before reusing the connection. A client
//!   that keeps using its connection — any think time shorter than the
//!   grace — is never closed on while idle: its next request gets the
//!   `close` answer. This is HAProxy's `option idle-close-on-response`,
//!   and the spread is its `close-spread-time`: the idle connections of a
//!   generation are closed over a window, not at one instant, so clients
//!   that reconnect at once do not hit the new generation as one storm.
//!   The price: a worker with idle connections lives up to grace + spread
//!   (10 s by default) after the drain signal, well inside baton's
//!   `--drain-timeout` (30 s) and our own `drain_timeout`. The old rule (a
//!   1-s grace, all at once) lost requests: a client whose think time ended
//!   as the grace expired had its request cut (the benchmark's think-time
//!   scenario, `tests/idle_keepalive.rs`).
//!
//! UDP sockets get an echo loop (`udp.rs`) instead of an accept loop; on
//! drain it stops reading at once, and counts as drained then.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderValue, CONNECTION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::listeners::{self, Listener, Source};
use crate::log::{describe, log, Ident};
use crate::routes::App;

/// Drain tuning, from the command line.
#[derive(Clone, Debug)]
pub struct DrainOptions {
    /// An idle connection is closed after this long without a request
    /// (counted from the drain's start or its last response)…
    pub idle_grace: Duration,
    /// …plus a random share of this, drawn per connection.
    pub close_spread: Duration,
    pub drain_timeout: Duration,
}

/// How `run` ended (both mean exit code 0).
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every connection finished.
    Drained,
    /// `drain_timeout` expired with this many connections still open.
    TimedOut { cut: usize },
}

/// Serves `sources` until `shutdown` resolves, then drains.
///
/// `on_ready` is started once every listener is registered with the runtime
/// and its accept (or echo) loop is running (callers install signal handlers
/// before calling `run`), and is abandoned if the drain begins first: a
/// worker that is already draining must not announce READY=1.
///
/// Errors are registration failures before serving started.
pub async fn run<S, R>(
    sources: Vec<Source>,
    who: Ident,
    opts: DrainOptions,
    shutdown: S,
    on_ready: R,
) -> Result<Outcome, String>
where
    S: Future<Output = ()>,
    R: Future<Output = ()> + Send + 'static,
{
    // Register everything first so that a failure leaves no loop running.
    let mut bound = Vec::with_capacity(sources.len());
    for source in sources {
        let (socket, label) = register(source.listener).map_err(|e| {
            format!(
                "cannot register listener{}: {}",
                source.origin,
                describe(&e)
            )
        })?;
        log!("listening on {label}{}", source.origin);
        bound.push((socket, label));
    }
    let streams = bound
        .iter()
        .filter(|(s, _)| matches!(s, Bound::Stream(_)))
        .count();
    let datagrams = bound.len() - streams;

    let drain = CancellationToken::new();
    let tracker = TaskTracker::new();
    let ctx = Arc::new(ConnCtx {
        app: App::new(&who),
        drain: drain.clone(),
        idle_grace: opts.idle_grace,
        close_spread: opts.close_spread,
    });

    let loops: Vec<_> = bound
        .into_iter()
        .map(|(socket, label)| match socket {
            Bound::Stream(listener) => tokio::spawn(accept_loop(
                listener,
                drain.clone(),
                tracker.clone(),
                ctx.clone(),
            )),
            Bound::Datagram(socket) => tokio::spawn(crate::udp::echo_loop(
                socket,
                label,
                who.clone(),
                drain.clone(),
            )),
        })
        .collect();

    // The loops are spawned and their sockets already sit in epoll: from
    // here on every queued connection will be accepted, every queued
    // datagram answered.
    let ready = tokio::spawn(on_ready);

    shutdown.await;
    let deadline = Instant::now() + opts.drain_timeout;
    ready.abort();
    drain.cancel();
    // Wait until every loop has dropped its socket; a connection accepted
    // just before is already handed to the tracker by then, a datagram read
    // just before already answered.
    for handle in loops {
        let _ = handle.await;
    }
    tracker.close();
    let udp_part = if datagrams > 0 {
        format!(" and reading on {datagrams} UDP socket(s)")
    } else {
        String::new()
    };
    log!(
        "{who} draining: stopped accepting on {streams} listener(s){udp_part}, {} connection(s) open",
        tracker.len()
    );

    tokio::select! {
        () = tracker.wait() => {
            log!("{who} drained, exiting");
            Ok(Outcome::Drained)
        }
        () = tokio::time::sleep_until(deadline) => {
            let cut = tracker.len();
            log!(
                "{who} drain timeout ({}) expired, cutting {cut} connection(s), exiting",
                humantime::format_duration(opts.drain_timeout)
            );
            Ok(Outcome::TimedOut { cut })
        }
    }
}

/// A socket registered with the runtime.
enum Bound {
    Stream(BoundListener),
    Datagram(UdpSocket),
}

enum BoundListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl BoundListener {
    /// Cancel-safe (both tokio `accept`s are): if `select!` drops this future
    /// without it having returned, no connection was taken off the queue.
    async fn accept(&self) -> io::Result<Stream> {
        match self {
            BoundListener::Tcp(l) => {
                let (stream, _) = l.accept().await?;
                // Small responses: do not let Nagle hold them back.
                let _ = stream.set_nodelay(true);
                Ok(Stream::Tcp(stream))
            }
            BoundListener::Unix(l) => Ok(Stream::Unix(l.accept().await?.0)),
        }
    }
}

/// std → tokio, with a label for log lines (`127.0.0.1:8080`,
/// `udp://127.0.0.1:5353`, `unix:/path`). Inherited fds arrive without
/// O_NONBLOCK and tokio requires it.
fn register(listener: Listener) -> io::Result<(Bound, String)> {
    Ok(match listener {
        Listener::Tcp(l) => {
            l.set_nonblocking(true)?;
            let label = l.local_addr()?.to_string();
            let l = BoundListener::Tcp(TcpListener::from_std(l)?);
            (Bound::Stream(l), label)
        }
        Listener::Unix(l) => {
            l.set_nonblocking(true)?;
            let label = listeners::unix_label(&l.local_addr()?);
            let l = BoundListener::Unix(UnixListener::from_std(l)?);
            (Bound::Stream(l), label)
        }
        Listener::Udp(s) => {
            s.set_nonblocking(true)?;
            let label = format!("udp://{}", s.local_addr()?);
            (Bound::Datagram(UdpSocket::from_std(s)?), label)
        }
    })
}

async fn accept_loop(
    listener: BoundListener,
    drain: CancellationToken,
    tracker: TaskTracker,
    ctx: Arc<ConnCtx>,
) {
    loop {
        tokio::select! {
            // biased: once the drain began, stop even if more connections
            // are queued; they stay in the shared socket for the next
            // generation.
            biased;
            () = drain.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    // Tracked from the moment it is accepted, so the drain
                    // waits for it like any other connection.
                    tracker.spawn(serve(stream, ctx.clone()));
                }
                Err(e) => {
                    // ECONNABORTED and friends are per-connection; EMFILE
                    // and ENOBUFS clear up later. Back off briefly so a
                    // persistent error does not spin.
                    log!("accept failed: {}", describe(&e));
                    tokio::select! {
                        () = drain.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
            },
        }
    }
    // Explicit for the reader: dropping deregisters from epoll and closes
    // our fd only. Never shutdown(2): the socket is shared.
    drop(listener);
}

/// What every connection task shares.
struct ConnCtx {
    app: App,
    drain: CancellationToken,
    idle_grace: Duration,
    close_spread: Duration,
}

/// Per-connection activity, updated by the service fn, read by the idle
/// watcher.
struct Activity {
    /// Requests whose response has not been produced yet.
    in_flight: AtomicUsize,
    /// Time of the last response (or of the accept), as µs since `born`.
    last_us: AtomicU64,
    born: Instant,
    /// Woken whenever the two fields above change.
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            last_us: AtomicU64::new(0),
            born: Instant::now(),
            changed: Notify::new(),
        }
    }

    fn last(&self) -> Instant {
        self.born + Duration::from_micros(self.last_us.load(Ordering::SeqCst))
    }

    fn begin(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        RequestGuard(self.clone())
    }
}

/// Marks one request in flight; dropping it (response produced, or the
/// handler cancelled because the client went away) records the activity.
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let a = &self.0;
        let now_us = a.born.elapsed().as_micros().try_into().unwrap_or(u64::MAX);
        // Store the time before decrementing: the watcher must never see
        // "nothing in flight" together with a stale last-activity time.
        a.last_us.store(now_us, Ordering::SeqCst);
        a.in_flight.fetch_sub(1, Ordering::SeqCst);
        a.changed.notify_waiters();
    }
}

async fn serve(stream: Stream, ctx: Arc<ConnCtx>) {
    match stream {
        Stream::Tcp(s) => serve_io(s, ctx).await,
        Stream::Unix(s) => serve_io(s, ctx).await,
    }
}

async fn serve_io<T>(io: T, ctx: Arc<ConnCtx>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let service = {
        let ctx = ctx.clone();
        let activity = activity.clone();
        service_fn(move |req| {
            let ctx = ctx.clone();
            let guard = activity.begin();
            async move {
                let mut resp = ctx.app.respond(&req).await;
                // Checked when the response is ready, not when the request
                // came in: a request in flight when the drain began gets
                // `close` too. hyper sees this header and closes the
                // connection after writing the response.
                if ctx.drain.is_cancelled() {
                    resp.headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                drop(guard);
                Ok::<_, Infallible>(resp)
            }
        })
    };

    // No timer is configured, so hyper applies no header-read timeout: a
    // fresh connection is never closed behind our back.
    let conn = http1::Builder::new().serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);

    // Errors here are the peer's doing (reset, bad request); hyper already
    // answered what could be answered. Nothing useful to log per connection.
    let grace = ctx.idle_grace + ctx.close_spread.mul_f64(random_fraction());
    tokio::select! {
        _ = conn.as_mut() => {}
        () = idle_after_drain(&activity, &ctx.drain, grace) => {
            // Idle for the whole grace: now graceful_shutdown closes it at
            // once (and would let an in-flight request finish if one had
            // just started).
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// A number in [0, 1), different for every call: std's `RandomState` is
/// seeded from the OS once per thread and bumps its keys on every `new()`,
/// which is all the spread needs.
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Resolves once the drain has begun and the connection then had no request
/// in flight for `grace` (this connection's share of the spread included),
/// counted from the drain's start or the last response, whichever is later. A just-accepted connection with no request
/// yet is covered by the same rule (its "last activity" is the accept), so it
/// gets the full grace for its first request to arrive.
async fn idle_after_drain(activity: &Activity, drain: &CancellationToken, grace: Duration) {
    drain.cancelled().await;
    let drain_started = Instant::now();
    loop {
        // Register for wake-ups before reading the state, so a change
        // between the read and the wait is not missed.
        let changed = activity.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();

        if activity.in_flight.load(Ordering::SeqCst) > 0 {
            changed.await;
            continue;
        }
        let deadline = drain_started.max(activity.last()) + grace;
        if Instant::now() >= deadline {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            () = &mut changed => {}
        }
    }
}
