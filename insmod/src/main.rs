fn main() -> std::process::ExitCode {
    insmod::main_with_args(std::env::args_os())
}
