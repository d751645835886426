fn main() -> std::process::ExitCode {
    depmod::main_with_args(std::env::args_os())
}
