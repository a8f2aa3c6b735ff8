//! `withings-lake`: parse the command line, run the subcommand, map failure to an exit code.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(args.log_format, &args.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(cli::EXIT_FATAL);
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = cli::exit_code(&e);
            // `error: cause: cause`, a cause the line already quotes left out.
            let message = withings_lake::error::chain_message(e.as_ref());
            tracing::error!(error = %message, exit_code = code, "command failed");
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}
