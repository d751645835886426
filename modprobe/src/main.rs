fn main() -> std::process::ExitCode {
    modprobe::main_with_args(std::env::args_os())
}
