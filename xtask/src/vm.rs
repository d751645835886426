//! `cargo xtask vm-test` and `cargo xtask demo`: implementation pending.
pub fn run_tests(_args: &[String]) -> Result<(), String> {
    Err("vm-test: not implemented yet".into())
}
pub fn run_demo(_args: &[String]) -> Result<(), String> {
    Err("demo: not implemented yet".into())
}
