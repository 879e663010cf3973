//! The `OciRuntime` conformance suite: every case runs its containers on the
//! shim's built-in runtime and on runc (driven by the same shim), and
//! asserts that a program inside sees the same thing on both, and what it
//! should see. The harness and the cases are `berth_tests::conformance`.
//! Root only; needs ctr and runc (and script for `tty`). Deliberate
//! differences: docs/compat.md.

use berth_tests::conformance::{hooks, process, propagation, run, security, userns, world};

/// One `#[test]` per case, named as the case.
macro_rules! cases {
    ($($module:ident::$case:ident),* $(,)?) => {$(
        #[test]
        fn $case() {
            run(stringify!($case), $module::$case);
        }
    )*};
}

cases!(
    world::namespaces,
    world::cgroup_namespace,
    world::mounts,
    world::masked_paths,
    world::readonly_paths,
    world::devices,
    world::privileged,
    world::hostname,
    world::cgroup_limits,
    process::capabilities,
    process::rlimits,
    process::user_and_groups,
    process::cwd_and_env,
    process::exit_codes,
    process::signals,
    process::pause_resume,
    process::exec,
    process::tty,
    process::oom,
    security::seccomp,
    security::apparmor,
    security::seccomp_notify,
    security::seccomp_new_syscalls,
    security::seccomp_refused,
    hooks::hooks,
    hooks::sysctls,
    hooks::oom_score_adj,
    hooks::rootfs_propagation,
    propagation::bind_propagation,
    propagation::recursive_attributes,
    userns::user_namespaces,
);
