//! The `nextmini` command: a thin layer over the crates that do the work.

mod bench;
mod config;
mod exp;
mod head;
mod host;
mod ops;
mod plumb;
mod schedule;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "nextmini", version, about = "A network emulation testbed", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a command: run an agent from the seeds' dataplane config (the seeds' way).
    #[arg(long)]
    config_path: Option<PathBuf>,
    /// With --config-path: the number of nodes.
    #[arg(long)]
    n_nodes: Option<u32>,
}

#[derive(Subcommand)]
enum Command {
    /// Bring an experiment up: nodes, links, controller, store; a summary when it is ready.
    Up(up::UpArgs),
    /// Tear the running experiment down.
    Down {
        #[arg(long, default_value = up::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Nodes, links and state of the running experiment.
    Status {
        #[arg(long, default_value = up::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Run a command inside a node's namespace: nextmini exec 3 -- ping 10.0.0.7
    Exec {
        node_id: u32,
        #[arg(last = true, required = true)]
        command: Vec<String>,
        #[arg(long, default_value = up::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Change the running experiment's links: nextmini link set 1-2 --delay 20ms --loss 1%
    #[command(subcommand)]
    Link(LinkCommand),
    /// The controller alone, for agents started separately.
    Controller(ops::ControllerArgs),
    /// An agent: plumbs and runs this host's nodes for a controller.
    Agent(ops::AgentArgs),
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
    /// The head: pools the hosts whose agents register with it and runs experiments on them.
    Serve(head::ServeArgs),
    /// The head's experiments: list, create/switch, launch, status, clear (see --help).
    Exp(exp::ExpArgs),
    /// The hosts registered with the head; add or remove hosts of the active experiment.
    Hosts(exp::HostsArgs),
    /// Where an experiment's nodes would go on a set of hosts, and the agent command for each.
    Schedule(schedule::ScheduleArgs),
    /// Benchmarks that print a table.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[derive(Subcommand)]
enum LinkCommand {
    /// Set a link's rate, delay, jitter, loss, queue, or take it down or up.
    Set(ops::LinkSetArgs),
    /// Each direction's parameters and counters (packets sent, drops by cause, queue).
    Show(ops::LinkShowArgs),
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
        Some(Command::Up(args)) => up::run(args),
        Some(Command::Down { state_dir }) => ops::down(&state_dir),
        Some(Command::Status { state_dir }) => ops::status(&state_dir),
        Some(Command::Exec {
            node_id,
            command,
            state_dir,
        }) => match ops::exec(&state_dir, node_id, &command) {
            Ok(code) => return ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => Err(e),
        },
        Some(Command::Link(LinkCommand::Set(args))) => ops::link_set(&args),
        Some(Command::Link(LinkCommand::Show(args))) => ops::link_show(&args),
        Some(Command::Controller(args)) => ops::controller(args),
        Some(Command::Agent(args)) => ops::agent(args),
        Some(Command::Plumb(args)) => plumb::run(args),
        Some(Command::Cleanup {
            prefix,
            netns_dir,
            dry_run,
        }) => host::cleanup(&prefix, &netns_dir, dry_run),
        Some(Command::Bench(cmd)) => bench::run(cmd),
        Some(Command::Schedule(args)) => schedule::run(args),
        Some(Command::Serve(args)) => head::serve(args),
        Some(Command::Exp(args)) => match exp::exp(args) {
            Ok(code) => return ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => Err(e),
        },
        Some(Command::Hosts(args)) => exp::hosts(args),
        None => match cli.config_path {
            // The seeds' dataplane invocation: nextmini --config-path config.toml --n-nodes N
            Some(path) => ops::agent(ops::AgentArgs {
                controller: None,
                config_path: Some(path),
                n_nodes: cli.n_nodes,
                node_id_offset: None,
                nodes: None,
                head: None,
                link_port: None,
                host: None,
                fail_nodes: Vec::new(),
                peers: Vec::new(),
                local: None,
                vni: 4242,
                layout: ops::AgentLayout {
                    prefix: host::DEFAULT_PREFIX.to_owned(),
                    base: None,
                    threads: 1,
                    no_mount: false,
                    ipv6: false,
                },
            }),
            None => Err(anyhow::anyhow!(
                "no command: try `nextmini up --topo ring,100 --exit-when-ready`, or `nextmini --help`"
            )),
        },
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
