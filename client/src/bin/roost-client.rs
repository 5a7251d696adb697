//! The `roost-client` command line; all of its logic lives in `roost_client::cli`.

fn main() -> std::process::ExitCode {
    roost_client::cli::run(std::env::args_os())
}
