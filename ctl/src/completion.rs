//! `berthctl completion bash|zsh|fish`: the shell's completion script,
//! generated from the command definitions by clap_complete.

use crate::cli::{Cli, Shell};
use clap::CommandFactory;

pub(crate) fn print(shell: Shell) -> anyhow::Result<()> {
    let sh = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut out = std::io::stdout().lock();
    clap_complete::generate(sh, &mut Cli::command(), "berthctl", &mut out);
    std::io::Write::flush(&mut out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::cli::Cli;
    use clap::CommandFactory;

    #[test]
    fn every_shell_gets_a_script_naming_the_new_commands() {
        for sh in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut buf = Vec::new();
            clap_complete::generate(sh, &mut Cli::command(), "berthctl", &mut buf);
            let s = String::from_utf8(buf).unwrap();
            assert!(s.contains("berthctl") && s.contains("commit"), "{sh:?}");
        }
    }
}
