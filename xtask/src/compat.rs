//! `cargo xtask compat`: implementation pending.
pub fn run(_args: &[String]) -> Result<(), String> {
    Err("compat: not implemented yet".into())
}
