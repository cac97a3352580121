//! demo-app's own start-up time: spawn → `READY=1`, measured with a notify
//! socket of the benchmark's own. `n` processes are started at once (as
//! baton starts a generation of `n` workers) and the time is until the last
//! of them says `READY=1`: the floor under baton's HUP → generation ready.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::procs::{temp_dir, Proc};
use crate::reloads::Summary;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Startup {
    /// Processes started at once.
    pub concurrent: usize,
    /// Spawn of the first → READY=1 of the last.
    pub ready: Summary,
}

/// Measures `samples` start-ups of `n` concurrent demo-apps (each on its own
/// ephemeral loopback port), stopping them after each sample.
pub async fn measure(demo_app: &std::path::Path, n: usize, samples: usize) -> Result<Startup> {
    let dir = temp_dir("notify")?;
    let path = dir.path().join("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&path).context("cannot bind the notify socket")?;
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let begun = Instant::now();
        let mut procs = Vec::with_capacity(n);
        for _ in 0..n {
            let mut cmd = Command::new(demo_app);
            cmd.args(["--bind", "127.0.0.1:0"])
                .env("NOTIFY_SOCKET", &path)
                .env_remove("LISTEN_FDS")
                .env_remove("LISTEN_PID");
            procs.push(Proc::spawn("demo-app", cmd, false)?);
        }
        let deadline = begun + Duration::from_secs(10);
        let mut ready = 0;
        let mut buf = [0u8; 256];
        while ready < n {
            let deadline = tokio::time::Instant::from_std(deadline);
            match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Ok(Ok(len)) => {
                    if buf[..len].split(|&b| b == b'\n').any(|l| l == b"READY=1") {
                        ready += 1;
                    }
                }
                Ok(Err(e)) => return Err(e).context("reading the notify socket"),
                Err(_) => bail!("only {ready} of {n} demo-apps sent READY=1 within 10 s"),
            }
        }
        times.push(begun.elapsed());
        for p in &mut procs {
            p.stop(libc::SIGTERM, Duration::from_secs(5)).await;
        }
    }
    Ok(Startup {
        concurrent: n,
        ready: Summary::of(times).context("no samples")?,
    })
}
