//! `berthctl volume …`: docker's volume commands.

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum Volume {
    /// Create a volume (an existing one is left as it is).
    Create {
        /// Name ([a-zA-Z0-9][a-zA-Z0-9_.-]+; generated when absent).
        name: Option<String>,
        /// Labels (key=value).
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// List volumes.
    #[command(visible_alias = "list")]
    Ls {
        /// Print names only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show volumes in detail (JSON).
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes (refused while a container uses them).
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every volume no container uses.
    Prune {
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
    },
}
