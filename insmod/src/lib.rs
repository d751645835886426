//! insmod: command-line front end. All logic lives in modcore.
use std::ffi::OsString;
use std::process::ExitCode;

pub fn main_with_args<I: IntoIterator<Item = OsString>>(_args: I) -> ExitCode {
    eprintln!("insmod: not implemented yet");
    ExitCode::from(1)
}
