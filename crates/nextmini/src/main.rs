//! The `nextmini` command: parses the command line and calls the crates that do the work.

mod agent;
mod bench;
mod bench_loop;
mod exp;
mod flow;
mod group;
mod host;
mod metrics;
mod plumb;
mod route;
mod running;
mod schedule;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use controller::run::DEFAULT_STATE_DIR;

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
    /// Tear the running experiment down (or the nodes a run kept, when none runs).
    Down {
        #[arg(long, default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// End the run but keep its nodes (namespaces, veths, bridges, TUN devices): the next
        /// `up` here with the same prefix, base and node count takes them over, ready in a
        /// fraction of the time; `status` lists them, `cleanup --prefix` removes them.
        #[arg(long)]
        keep: bool,
    },
    /// Nodes, links and state of the running experiment.
    Status {
        #[arg(long, default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Run a command inside a node's namespace: nextmini exec 3 -- ping 10.0.0.7
    Exec {
        node_id: u32,
        #[arg(last = true, required = true)]
        command: Vec<String>,
        #[arg(long, default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Change the running experiment's links: nextmini link set 1-2 --delay 20ms --loss 1%
    #[command(subcommand)]
    Link(LinkCommand),
    /// Generated flows: nextmini flow add 1 8 --bytes 10MB, nextmini flow list
    #[command(subcommand)]
    Flow(flow::FlowCommand),
    /// Routes while running: nextmini route set 1 8 --path 1,3,7,8, route clear, route show
    #[command(subcommand)]
    Route(route::RouteCommand),
    /// Multicast groups while running: nextmini group create 1 --members 2-9, group list,
    /// group join|leave GROUP NODES, group trees GROUP --tree 1:1:1-2,2-5
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// A run's results from its store (also after `down`): flows, links over time, export.
    Metrics(metrics::MetricsArgs),
    /// The controller alone, for agents started separately.
    Controller(agent::ControllerArgs),
    /// An agent: plumbs and runs this host's nodes for a controller.
    Agent(agent::AgentArgs),
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
        /// Remove the prefix's namespaces even when a running experiment holds them.
        #[arg(long)]
        force: bool,
    },
    /// The head: pools the hosts whose agents register with it and runs experiments on them.
    Serve(exp::ServeArgs),
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
    Set(running::LinkSetArgs),
    /// Each direction's parameters and counters (packets sent, drops by cause, queue).
    Show(running::LinkShowArgs),
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
    let result: anyhow::Result<i32> = match cli.command {
        Some(Command::Up(args)) => up::run(args).map(done),
        Some(Command::Down { state_dir, keep }) => running::down(&state_dir, keep).map(done),
        Some(Command::Status { state_dir }) => running::status(&state_dir).map(done),
        Some(Command::Exec {
            node_id,
            command,
            state_dir,
        }) => running::exec(&state_dir, node_id, &command),
        Some(Command::Link(LinkCommand::Set(args))) => running::link_set(&args).map(done),
        Some(Command::Link(LinkCommand::Show(args))) => running::link_show(&args).map(done),
        Some(Command::Flow(cmd)) => flow::run(cmd).map(done),
        Some(Command::Route(cmd)) => route::run(cmd).map(done),
        Some(Command::Group(cmd)) => group::run(cmd).map(done),
        Some(Command::Metrics(args)) => metrics::run(args).map(done),
        Some(Command::Controller(args)) => agent::controller(args).map(done),
        Some(Command::Agent(args)) => agent::agent(args).map(done),
        Some(Command::Plumb(args)) => plumb::run(args).map(done),
        Some(Command::Cleanup {
            prefix,
            netns_dir,
            dry_run,
            force,
        }) => host::cleanup(&prefix, &netns_dir, dry_run, force).map(done),
        Some(Command::Bench(cmd)) => bench::run(cmd).map(done),
        Some(Command::Schedule(args)) => schedule::run(args).map(done),
        Some(Command::Serve(args)) => exp::serve(args).map(done),
        Some(Command::Exp(args)) => exp::exp(args),
        Some(Command::Hosts(args)) => exp::hosts(args).map(done),
        // The seeds' dataplane invocation: nextmini --config-path config.toml --n-nodes N
        None => match cli.config_path {
            Some(path) => agent::agent(agent::AgentArgs::seeds(path, cli.n_nodes)).map(done),
            None => Err(anyhow::anyhow!(
                "no command: try `nextmini up --topo ring,100 --exit-when-ready`, or `nextmini --help`"
            )),
        },
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// A command that ran to its end: exit code 0 (`exec` passes its command's code instead).
fn done(_: ()) -> i32 {
    0
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
