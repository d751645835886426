fn main() -> std::process::ExitCode {
    rmmod::main_with_args(std::env::args_os())
}
