//! Test certificates and keys made with the `openssl` CLI.

use std::path::Path;
use std::process::Command;

/// Runs the `openssl` CLI; panics with its output when it fails.
pub fn run_openssl(openssl: &Path, args: &[&str]) {
    let o = Command::new(openssl).args(args).output().expect("openssl");
    assert!(o.status.success(), "openssl {args:?}: {o:?}");
}

/// A self-signed RSA certificate for `cn`, valid for a day (PEM key and
/// certificate, as a test CA or token issuer needs).
pub fn self_signed(openssl: &Path, cn: &str, key: &Path, cert: &Path) {
    run_openssl(
        openssl,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            key.to_str().expect("utf-8 path"),
            "-out",
            cert.to_str().expect("utf-8 path"),
        ],
    );
}
