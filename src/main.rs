//! The `clickup-bridge` binary: parse the command line, run, map errors to
//! exit codes (0 success, 1 failed check, 2 usage or runtime error).

use clap::Parser;
use clickup_bridge::cli::{Cli, run};

fn main() {
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("clickup-bridge: {}", clickup_bridge::cli::error_text(&err));
            2
        }
    };
    std::process::exit(code);
}
