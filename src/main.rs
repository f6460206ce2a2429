//! The `ferrymail` binary; also `sendmail`, `mailq` and `rmail` by argv[0]. All work is in
//! `ferrymail::cli`; this only hands over the arguments and exits with the code.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(ferrymail::cli::main(std::env::args_os().collect()))
}
