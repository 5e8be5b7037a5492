//! The `tcpstate` binary: parses the command line, runs the command, and
//! turns every error into one line on stderr with a non-zero exit status.

use std::process::ExitCode;

use clap::Parser as _;
use tcpstate::{
    cli::{Cli, Command},
    twview, watch,
};

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("tcpstate: internal error: {info} (please report this)");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!(
                "tcpstate: {} (see tcpstate --help)",
                first_line(&e.to_string())
            );
            return ExitCode::from(2);
        }
    };
    // The eBPF programs' diagnostics arrive through aya-log.
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Warn)
        .parse_default_env()
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tcpstate: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Watch(args) => watch::run(args).await,
            Command::Timewait(args) => twview::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcpstate: error: {}", one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// clap's message without its "error: " prefix and usage lines.
fn first_line(msg: &str) -> &str {
    let line = msg.lines().next().unwrap_or(msg);
    line.strip_prefix("error: ").unwrap_or(line)
}

/// Joins a multi-line message (e.g. a verifier log) into one line.
fn one_line(msg: &str) -> String {
    msg.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}
