//! `baton [OPTIONS] -- PROGRAM [ARGS...]`: parse, run, map errors to exit codes
//! (0 clean stop, 1 runtime failure, 2 usage or configuration error).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // `baton reload|status|stop …` talk to a running baton.
    let args: Vec<_> = std::env::args_os().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        Some("reload" | "status" | "stop" | "upgrade" | "drain" | "undrain") => {
            return baton::client::main(args)
        }
        // Run by a running baton on the binary it is about to exec.
        Some("upgrade-check") => return baton::upgrade::check_main(),
        Some("verify") => return verify(&args),
        Some("help") => return help(&args[2..]),
        _ => {}
    }
    // Until the event loop's handlers exist, a HUP or TERM would kill baton
    // (their default action): hold them pending, `run` lets them through.
    baton::process::block_control_signals();
    let cli = match baton::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return program_without_dashes(&e).unwrap_or_else(|| baton::usage_error(e)),
    };
    init_logging();
    // An upgrade: the previous image of this process handed its state over.
    if let Some(state) = baton::upgrade::take_state() {
        ensure_std_fds();
        let result = state
            .map_err(|why| baton::Error::Io(std::io::Error::other(why)))
            .and_then(|state| {
                let config = baton::Config::from_cli(cli)?;
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(baton::Error::from)?
                    .block_on(baton::supervisor::resume(config, state))
            });
        return exit(result);
    }
    // Sockets from systemd first, while fds 3… can only be what our parent
    // passed: once the runtime exists, a LISTEN_FDS that claims more fds than
    // were passed would make baton adopt its own epoll fd.
    let inherited = baton::listeners::inherit_from_env();
    ensure_std_fds();
    let result = inherited.map_err(baton::Error::from).and_then(|inherited| {
        let config = baton::Config::from_cli(cli)?;
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(baton::Error::from)?
            .block_on(baton::run(config, inherited))
    });
    exit(result)
}

fn exit(result: Result<(), baton::Error>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("baton: {e:#}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `baton help`: the supervisor's help; `baton help reload|status|stop|verify`:
/// that command's.
fn help(rest: &[std::ffi::OsString]) -> ExitCode {
    use clap::CommandFactory;
    match rest.first().and_then(|a| a.to_str()) {
        None => {
            let _ = baton::Cli::command().print_long_help();
            ExitCode::SUCCESS
        }
        Some(cmd @ ("reload" | "status" | "stop" | "upgrade" | "drain" | "undrain")) => {
            baton::client::main(vec!["baton".into(), cmd.into(), "--help".into()])
        }
        Some("verify") => verify(&["baton".into(), "verify".into(), "--help".into()]),
        Some(other) => {
            eprintln!(
                "baton: no command {other:?}: the commands are reload, status, stop, upgrade, drain, \
                 undrain, verify and help (see baton --help)"
            );
            ExitCode::from(2)
        }
    }
}

/// `baton verify ARGS`: execs `baton-verify verify ARGS`, installed beside
/// this binary (see `baton::verify`), so the checker's code is not part of
/// the supervisor's.
fn verify(args: &[std::ffi::OsString]) -> ExitCode {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("baton-verify")));
    let Some(exe) = beside.filter(|p| p.is_file()) else {
        eprintln!(
            "baton: `baton verify` runs baton-verify, which is not installed beside baton \
             (`cargo install --path supervisor` installs both)"
        );
        return ExitCode::from(3);
    };
    // execv, not std::process::Command: Command's machinery alone would add
    // tens of KiB to baton's resident code.
    let cstr = |s: &std::ffi::OsStr| CString::new(s.as_bytes()).ok();
    let argv: Option<Vec<CString>> = std::iter::once(exe.as_os_str())
        .chain(args[1..].iter().map(|a| a.as_os_str()))
        .map(cstr)
        .collect();
    let (Some(path), Some(argv)) = (cstr(exe.as_os_str()), argv) else {
        eprintln!("baton: an argument of `baton verify` contains a NUL byte");
        return ExitCode::from(2);
    };
    let err = nix::unistd::execv(&path, &argv).unwrap_err();
    eprintln!("baton: cannot run {}: {err}", exe.display());
    ExitCode::from(3)
}

/// `baton --listen ADDR ./my-app`: the program was given without `--`, so
/// clap sees an unexpected argument. Say what to write instead.
fn program_without_dashes(e: &clap::Error) -> Option<ExitCode> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    if arg.starts_with('-') {
        return None;
    }
    eprintln!(
        "baton: unexpected argument {arg:?}: put the program and its arguments after `--`, \
         e.g. baton --listen 127.0.0.1:8080 -- {arg} (see baton --help)"
    );
    Some(ExitCode::from(2))
}

/// Human-readable lines on stderr; `BATON_LOG` sets the level (`debug`),
/// or levels by target (`baton=debug,warn`); unset or unreadable: `info`.
///
/// A `Targets` filter, not an `EnvFilter`: the same directives without
/// span and field matching, whose regex engine made about a tenth of
/// baton's resident code.
fn init_logging() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = std::env::var("BATON_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .finish()
        .with(filter)
        .init();
}

/// Put baton's descriptor table in order before it opens anything:
/// - if fd 0, 1 or 2 is closed, the first socket baton opens would land
///   there and be mistaken for stdio by every worker: fill the gaps with
///   /dev/null;
/// - every fd inherited from baton's parent (above 2) becomes close-on-exec,
///   so that every fd baton holds is CLOEXEC and nothing reaches a worker
///   except what the spawner places at fd 3, 4, … (sockets passed by systemd
///   stay open: CLOEXEC only matters at exec).
fn ensure_std_fds() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries the descriptor table.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            if let Ok(f) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                use std::os::fd::IntoRawFd;
                // open() returned the lowest free fd, which is this one (or a
                // lower gap filled earlier in this loop): keep it open.
                let _ = f.into_raw_fd();
            }
        }
    }
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on
    // existing descriptors; it closes nothing. ENOSYS on old kernels is fine.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        );
    }
}
