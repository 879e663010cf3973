//! containerd-shim-berth-v2: the per-container shim.

fn main() {
    std::process::exit(berth_shim::bootstrap::main());
}
