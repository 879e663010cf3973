//! berthctl: the berth operator CLI.

fn main() {
    let code = berth_ctl::main();
    std::process::exit(code);
}
