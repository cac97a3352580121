//! `--watch PATH`: reload when a file or a directory's entries change.
//!
//! inotify watches directories, so a file is watched through its parent
//! (an editor's rename-over, a deploy's `mv`, an in-place write all show
//! there under the file's name), and so is a Kubernetes ConfigMap mount,
//! whose files are symlinks through `..data`, swapped atomically: events on
//! names starting with `..` count too. A directory is watched itself.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::io::unix::AsyncFd;

/// How long changes are gathered before the reload they cause.
pub const DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(500);

struct Fd(Inotify);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

pub struct Watcher {
    fd: AsyncFd<Fd>,
    /// Per watch: the names that count in it (None: any).
    watches: Vec<(WatchDescriptor, Option<OsString>, PathBuf)>,
}

impl Watcher {
    pub fn new(paths: &[PathBuf]) -> io::Result<Option<Watcher>> {
        if paths.is_empty() {
            return Ok(None);
        }
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        let flags = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_ATTRIB;
        let mut watches = Vec::new();
        for path in paths {
            let (dir, name) = if path.is_dir() {
                (path.clone(), None)
            } else {
                let parent = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                (
                    parent.to_path_buf(),
                    path.file_name().map(|n| n.to_os_string()),
                )
            };
            let wd = inotify.add_watch(&dir, flags).map_err(|e| {
                io::Error::new(
                    io::Error::from(e).kind(),
                    format!("--watch {}: {e}", path.display()),
                )
            })?;
            watches.push((wd, name, path.clone()));
        }
        // SAFETY: the Inotify moves into the AsyncFd, so its descriptor stays
        // open exactly as long as the registration (register's requirement).
        let fd = unsafe { AsyncFd::register(Fd(inotify)) }?;
        Ok(Some(Watcher { fd, watches }))
    }

    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.watches.iter().map(|(_, _, p)| p.as_path())
    }

    /// Wait for a change to a watched path; returns which one.
    pub async fn changed(&self) -> io::Result<PathBuf> {
        loop {
            let mut guard = self.fd.readable().await?;
            let events = match guard.get_inner().0.read_events() {
                Ok(events) => events,
                Err(nix::errno::Errno::EAGAIN) => {
                    guard.clear_ready();
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            for ev in events {
                for (wd, name, path) in &self.watches {
                    if ev.wd != *wd {
                        continue;
                    }
                    let counts = match (name, &ev.name) {
                        (None, _) => true,
                        (Some(want), Some(got)) => {
                            got == want || got.to_string_lossy().starts_with("..")
                        }
                        (Some(_), None) => false,
                    };
                    if counts {
                        return Ok(path.clone());
                    }
                }
            }
        }
    }
}
