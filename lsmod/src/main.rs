fn main() -> std::process::ExitCode {
    lsmod::main_with_args(std::env::args_os())
}
