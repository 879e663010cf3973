//! `berthctl logs`: docker's grammar.

use clap::Args;

#[derive(Args, Debug, PartialEq)]
pub struct LogsArgs {
    /// Keep printing new output while the container runs (across a berthd
    /// restart too).
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines ("all": every line). docker's `-n` is
    /// berthctl's `--namespace`.
    #[arg(long, default_value = "all")]
    pub tail: String,
    /// Only lines written since a time: RFC 3339 (2024-05-01T10:00:00Z),
    /// Unix seconds (1714557600[.5]), or a duration ago (10m, 1h30m).
    #[arg(long)]
    pub since: Option<String>,
    /// Prefix every line with the time it was written.
    #[arg(short, long)]
    pub timestamps: bool,
    /// The container.
    pub container: String,
}
