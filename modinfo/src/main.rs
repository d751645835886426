fn main() -> std::process::ExitCode {
    modinfo::main_with_args(std::env::args_os())
}
