//! Usage errors: what a user typed wrong, as one line and exit code 2.

/// A clap error as one line naming the culprit (exit 2), or help/version
/// printed as clap formats them (exit 0).
pub fn usage_error(e: clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return std::process::ExitCode::SUCCESS;
    }
    // clap's first paragraph (a message, sometimes followed by the missing
    // arguments on their own lines), joined into one line.
    let text = e.to_string();
    let first: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let first = first.join(" ");
    let first = first.strip_prefix("error: ").unwrap_or(&first);
    eprintln!("baton: {first} (see baton --help)");
    std::process::ExitCode::from(2)
}
