//! Syntax of containerd's resource commands for leases and tasks.

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum Leases {
    /// List leases.
    #[command(visible_alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
        filters: Vec<String>,
    },
    /// Create a lease; prints its id.
    Create {
        /// Lease id (generated when absent).
        #[arg(long)]
        id: Option<String>,
        /// Expire after this long (e.g. 24h; 0 = never).
        #[arg(long, short = 'x', default_value = "24h")]
        expires: String,
        /// Labels, as key=value.
        labels: Vec<String>,
    },
    /// Remove leases.
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
        /// Wait until what they held is collected.
        #[arg(long)]
        sync: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum Tasks {
    /// List tasks.
    #[command(visible_alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
    },
    /// Start a created task.
    Start { id: String },
    /// Signal a task (SIGTERM by default).
    Kill {
        id: String,
        /// Signal name or number.
        #[arg(short, long, default_value = "SIGTERM")]
        signal: String,
        /// Signal every process of the task.
        #[arg(short, long)]
        all: bool,
        /// Signal this exec process instead.
        #[arg(long)]
        exec_id: Option<String>,
    },
    /// Run another process in a task.
    Exec {
        /// Exec id (default: generated).
        #[arg(long)]
        exec_id: Option<String>,
        #[arg(short, long)]
        tty: bool,
        #[arg(short, long)]
        interactive: bool,
        #[arg(long)]
        cwd: Option<String>,
        #[arg(long)]
        env: Vec<String>,
        #[arg(long, short = 'u')]
        user: Option<String>,
        /// Start it and return.
        #[arg(short, long)]
        detach: bool,
        id: String,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Processes of a task.
    Ps { id: String },
    /// Resource usage of a task.
    Metrics { id: String },
    /// Freeze a task.
    Pause { id: String },
    /// Thaw a task.
    Resume { id: String },
    /// Delete stopped tasks.
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
        /// Kill the task first if it runs.
        #[arg(short, long)]
        force: bool,
    },
    /// Attach to a running task's output (and input).
    Attach { id: String },
}
