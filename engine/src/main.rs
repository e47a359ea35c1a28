//! `vigil`: the daemon and its tools. See `vigil --help`.
//!
//! Alerts go to stdout (JSON lines); the daemon's own log goes to stderr.
//! Each subcommand lives in its own module under `cli/`.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command, RulesCommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { rules, source, config } => cli::run::run(rules, &source, config),
        Command::Replay { file, rules, config, realtime } => cli::replay::replay(file, rules, config, realtime),
        Command::Events { source, limit, kinds, config } => cli::events::events(&source, limit, &kinds, config),
        Command::Record { out, source, limit, duration, config } => {
            cli::record::record(&out, &source, limit, duration, config)
        }
        Command::Containers { json, config } => cli::containers::list(json, config),
        Command::Rules { command: RulesCommand::Check { paths, config, json, interpreter } } => {
            cli::rules::check(&paths, config, json, interpreter)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vigil: error: {}", vigil_engine::error_chain(e.as_ref()));
            ExitCode::from(2)
        }
    }
}
