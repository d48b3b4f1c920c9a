//! The `nextmini` command: a thin layer over the crates that do the work.

mod bench;
mod host;
mod plumb;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "nextmini", version, about = "A network emulation testbed", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create N node namespaces wired to bridges on this host and hold them until Ctrl-C.
    Plumb(plumb::PlumbArgs),
    /// Remove everything a run with this prefix left on this host (namespaces, veths, bridges).
    Cleanup {
        /// The run's prefix.
        #[arg(long, default_value = host::DEFAULT_PREFIX)]
        prefix: String,
        /// Where node namespaces are mounted.
        #[arg(long, default_value = hostnet::netns::DEFAULT_NETNS_DIR)]
        netns_dir: PathBuf,
        /// List what would be removed, and remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Benchmarks that print a table.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Plumb(args) => plumb::run(args),
        Command::Cleanup {
            prefix,
            netns_dir,
            dry_run,
        } => host::cleanup(&prefix, &netns_dir, dry_run),
        Command::Bench(cmd) => bench::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping a cause its parent already quotes.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}
