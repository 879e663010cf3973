//! What the parser tests of `run` and the container commands share.

use super::{Cli, Command, RunArgs};
use clap::Parser;

/// `berthctl ARGS…` parsed.
pub fn parse(args: &[&str]) -> Result<Command, clap::Error> {
    let mut v = vec!["berthctl"];
    v.extend_from_slice(args);
    Ok(Cli::try_parse_from(v)?.command)
}

/// `berthctl run ARGS…` parsed.
pub fn parse_run(args: &[&str]) -> Result<RunArgs, clap::Error> {
    let mut v = vec!["run"];
    v.extend_from_slice(args);
    match parse(&v)? {
        Command::Run(r) => Ok(r),
        c => panic!("parsed as {c:?}"),
    }
}

/// `args` must be refused while parsing as a bad value whose message
/// names `flag` and says each of `says`.
pub fn assert_bad_value<T: std::fmt::Debug>(
    parsed: Result<T, clap::Error>,
    args: &[&str],
    flag: &str,
    says: &[&str],
) {
    let e = parsed.expect_err("accepted");
    assert_eq!(
        e.kind(),
        clap::error::ErrorKind::ValueValidation,
        "{args:?}"
    );
    let e = e.to_string();
    assert!(e.contains(flag), "{args:?}: {e}");
    for s in says {
        assert!(e.contains(s), "{args:?}: {e}");
    }
}
