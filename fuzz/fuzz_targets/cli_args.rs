//! The command line: arguments separated by NUL bytes, parsed and validated
//! as `main` does, then turned into the kernel settings and the filter.
#![no_main]

use clap::Parser as _;
use libfuzzer_sys::fuzz_target;
use tcpstate::cli::Cli;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let args = text.split('\0');
    let Ok(cli) = Cli::try_parse_from(std::iter::once("tcpstate").chain(args)) else {
        return;
    };
    let _ = cli.validate();
    if let Some(common) = cli.command.common() {
        let _ = common.settings();
        let _ = common.filter();
    }
});
