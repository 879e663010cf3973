//! Syntax of docker's `cp`, `commit`, `system df|prune`, the `prune`
//! subcommands and `completion`.

use clap::{Args, Subcommand, ValueEnum};

#[derive(Args, Debug)]
pub struct CpArgs {
    /// CONTAINER:SRC or a host path.
    pub src: String,
    /// CONTAINER:DEST or a host path (exactly one side names a container).
    pub dest: String,
}

#[derive(Args, Debug)]
pub struct CommitArgs {
    pub container: String,
    /// Name of the new image (docker-normalized); untagged when absent.
    pub reference: Option<String>,
    /// Commit message (kept in the image's history).
    #[arg(short, long)]
    pub message: Option<String>,
    /// Author (e.g. "Jane <jane@example.com>").
    #[arg(short, long)]
    pub author: Option<String>,
    /// Pause the container while committing (docker's default).
    #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set)]
    pub pause: bool,
}

#[derive(Subcommand, Debug)]
pub enum System {
    /// Disk usage of images, containers and volumes.
    Df,
    /// Remove stopped containers, unused networks and dangling images.
    Prune {
        /// Remove every image no container uses, not only dangling ones.
        #[arg(short, long)]
        all: bool,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
        /// Also remove volumes no container uses.
        #[arg(long)]
        volumes: bool,
    },
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove every image no container uses, not only dangling ones.
    #[arg(short, long)]
    pub all: bool,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ForceArgs {
    /// Do not ask for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}
