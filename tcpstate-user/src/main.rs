//! The `tcpstate` binary: parses the command line, runs the command, and
//! turns every error into one line on stderr with a non-zero exit status.

use std::process::ExitCode;

use clap::Parser as _;
use tcpstate::{
    cli::{Cli, Command},
    cmd,
    diagnose::findings::Severity,
    messages,
};

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        messages::error(format_args!("internal error: {info} (please report this)"));
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => return usage_error(&clap_message(&e)),
    };
    if let Err(msg) = cli.validate() {
        return usage_error(&msg);
    }
    let result = match &cli.command {
        Command::Generate { what } => {
            cmd::generate::run(*what, &mut std::io::stdout().lock()).map(|()| ExitCode::SUCCESS)
        }
        command => trace(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            messages::error(format_args!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// Runs a tracing command to its end.
fn trace(command: &Command) -> anyhow::Result<ExitCode> {
    // The eBPF programs' diagnostics arrive through aya-log.
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Warn)
        .parse_default_env()
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the runtime: {e}"))?;
    let result = runtime.block_on(async {
        match command {
            Command::Watch(args) => cmd::watch::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Timewait(args) => cmd::timewait::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Diagnose(args) => cmd::diagnose::run(args).await.map(verdict),
            Command::Serve(args) => cmd::serve::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Generate { what } => {
                cmd::generate::run(*what, &mut std::io::stdout()).map(|()| ExitCode::SUCCESS)
            }
        }
    });
    // A start-up cut short by a signal may still be loading or dumping on a
    // blocking thread: do not wait for it.
    runtime.shutdown_background();
    result
}

/// `diagnose`'s exit status: 0 healthy (or information only), 3 a
/// warning, 4 critical; never 1 (an error) or 2 (a usage error).
fn verdict(worst: Severity) -> ExitCode {
    match worst {
        Severity::Info => ExitCode::SUCCESS,
        Severity::Warning => ExitCode::from(3),
        Severity::Critical => ExitCode::from(4),
    }
}

/// An invalid command line: one line, exit status 2.
fn usage_error(msg: &str) -> ExitCode {
    messages::note_args(format_args!("{msg} (see tcpstate --help)"));
    ExitCode::from(2)
}

/// clap's message as one line: without its "error: " prefix and usage
/// lines, but with the values it would accept.
fn clap_message(e: &clap::Error) -> String {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let commands: Vec<String> = <Cli as clap::CommandFactory>::command()
            .get_subcommands()
            .filter(|c| c.get_name() != "help")
            .map(|c| c.get_name().to_string())
            .collect();
        return format!("a command is needed: {}", commands.join(" or "));
    }
    let text = e.to_string();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let first = shorten_quoted(first.strip_prefix("error: ").unwrap_or(first));
    match lines
        .map(str::trim)
        .find(|l| l.starts_with("[possible values:"))
    {
        Some(values) => format!("{first} {values}"),
        None => first,
    }
}

/// `line` with the value clap quotes (`invalid value '...' for '--x'`) cut
/// when it is long: clap echoes it whatever its size.
fn shorten_quoted(line: &str) -> String {
    const MAX: usize = 40;
    let Some(rest) = line.strip_prefix("invalid value '") else {
        return line.to_string();
    };
    match rest.split_once("' for '") {
        Some((value, tail)) if value.chars().count() > MAX => {
            let cut: String = value.chars().take(MAX).collect();
            format!("invalid value '{cut}…' for '{tail}")
        }
        _ => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_quoted_values_are_cut() {
        let long = "1".repeat(5000);
        let line = format!("invalid value '{long}' for '--duration <SECS>': '1111…' (5000 bytes)");
        let short = shorten_quoted(&line);
        assert!(short.len() < 200, "{short}");
        assert!(
            short.contains("…' for '--duration <SECS>': '1111…'"),
            "{short}"
        );
        assert_eq!(
            shorten_quoted("invalid value 'b' for 'c'"),
            "invalid value 'b' for 'c'"
        );
    }
}
