//! `baton-verify`: what `baton verify` runs (see `baton::verify`).
//!
//! A binary of its own, installed beside `baton`, so that the load kit and
//! the checker add nothing to the supervisor's own code and memory: `baton
//! verify ARGS` execs `baton-verify verify ARGS`, and this one starts the
//! `baton` beside it.

use std::ffi::OsString;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    // Run directly as `baton-verify ARGS`, or exec'd as `… verify ARGS`.
    if args.get(1).is_none_or(|a| a != "verify") {
        args.insert(1.min(args.len()), "verify".into());
    }
    baton::verify::main(args)
}
