//! The per-container shim (`containerd-shim-berth-v2`).
//!
//! Not built yet: the shim v2 task service, the built-in OCI runtime and the
//! external-runtime driver arrive with the tasks work. The daemon does not
//! serve the Tasks API until then (clients get `Unimplemented`).
