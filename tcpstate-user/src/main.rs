//! The `tcpstate` binary: parses the command line, runs the command, and
//! turns every error into one line on stderr with a non-zero exit status.

use std::process::ExitCode;

use clap::Parser as _;
use tcpstate::{
    cli::{Cli, Command},
    cmd, messages,
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
        Err(e) => {
            messages::note_args(format_args!(
                "{} (see tcpstate --help)",
                first_line(&e.to_string())
            ));
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
            messages::error(format_args!("starting the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Watch(args) => cmd::watch::run(args).await,
            Command::Timewait(args) => cmd::timewait::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            messages::error(format_args!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// clap's message without its "error: " prefix and usage lines.
fn first_line(msg: &str) -> &str {
    let line = msg.lines().next().unwrap_or(msg);
    line.strip_prefix("error: ").unwrap_or(line)
}
