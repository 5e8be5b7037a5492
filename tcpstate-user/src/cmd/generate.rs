//! `tcpstate generate`: the man page and the shell completion scripts,
//! written from the command-line definitions so that they never drift from
//! them (the release tarball ships what this writes).

use std::io::Write;

use anyhow::{Context as _, Result};
use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::cli::{Cli, Generated};

/// Writes `what` to `out`.
pub fn run(what: Generated, out: &mut impl Write) -> Result<()> {
    let mut cli = Cli::command();
    match what {
        Generated::Man => man(cli, out).context("writing the man page")?,
        Generated::Bash => completions(Shell::Bash, &mut cli, out),
        Generated::Zsh => completions(Shell::Zsh, &mut cli, out),
        Generated::Fish => completions(Shell::Fish, &mut cli, out),
    }
    out.flush().context("writing to stdout")
}

/// One page for the whole tool: the top level as clap_mangen renders it,
/// then each command's synopsis, description and options in a section of
/// its own (rather than a page per command).
fn man(cli: clap::Command, out: &mut impl Write) -> std::io::Result<()> {
    let page = clap_mangen::Man::new(cli.clone());
    page.render_title(out)?;
    page.render_name_section(out)?;
    page.render_synopsis_section(out)?;
    page.render_description_section(out)?;
    for command in cli.get_subcommands().filter(|c| !c.is_hide_set()) {
        let name = format!("tcpstate {}", command.get_name());
        writeln!(out, ".SH \"{}\"", name.to_uppercase())?;
        let section = clap_mangen::Man::new(command.clone().bin_name(&name));
        section.render_synopsis_section(out)?;
        section.render_description_section(out)?;
        section.render_options_section(out)?;
    }
    page.render_version_section(out)
}

fn completions(shell: Shell, cli: &mut clap::Command, out: &mut impl Write) {
    clap_complete::generate(shell, cli, "tcpstate", out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated(what: Generated) -> String {
        let mut out = Vec::new();
        run(what, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_man_page_and_completions_name_every_command() {
        let man = generated(Generated::Man);
        assert!(man.starts_with(".ie"), "{}", &man[..80]);
        for section in ["WATCH", "TIMEWAIT"] {
            assert!(
                man.contains(&format!(".SH \"TCPSTATE {section}\"")),
                "{man}"
            );
        }
        assert!(man.contains("\\-\\-pressure\\-threshold"), "{man}");
        assert!(!man.contains("GENERATE"), "{man}");
        for shell in [Generated::Bash, Generated::Zsh, Generated::Fish] {
            let script = generated(shell);
            for needed in ["watch", "timewait", "pressure-threshold"] {
                assert!(script.contains(needed), "{shell:?}: no {needed}");
            }
        }
    }
}
