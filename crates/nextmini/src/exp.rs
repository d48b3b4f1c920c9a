//! `nextmini serve`, `nextmini exp` and `nextmini hosts`: the head, its experiments and its
//! hosts from the command line.
//!
//! ```text
//! nextmini exp                              name | nodes | hosts | active
//! nextmini exp <name>                       create (if new) and switch to it
//! nextmini exp [<name>] launch [FILE] [--dry-run] [--load memcommit]
//! nextmini exp [<name>] mv NODES HOST       move nodes in the dry run
//! nextmini exp [<name>] dump                the stored dry run (or queued launch)
//! nextmini exp [<name>] queueing on|off     launches queue until `launch` without a file
//! nextmini exp [<name>] exec NODE [--timeout S] -- CMD…   run in a node, on its host
//! nextmini exp [<name>] status              hosts, placement, schedules, lost nodes
//! nextmini exp [<name>] hosts [add|del LIST]
//! nextmini exp clear <name|all>
//! nextmini hosts [add|del LIST]             registered hosts; add/del for the active experiment
//! ```

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use head::api::{ExecRequest, HostsChange, LaunchRequest, MoveRequest, PlanDoc};
use head::client::{DEFAULT_HEAD_PORT, HeadClient, head_addr};

use crate::host::{HostList, NodeIds};

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[arg(long, default_value = "0.0.0.0")]
    pub listen: Ipv4Addr,
    #[arg(long, default_value_t = DEFAULT_HEAD_PORT)]
    pub port: u16,
    /// This host's name: the default experiment's only host [default: the hostname].
    #[arg(long)]
    pub host: Option<String>,
    /// Where the head keeps its state, its token and the store of experiment runs.
    #[arg(long, default_value = head::client::DEFAULT_HEAD_STATE_DIR)]
    pub state_dir: PathBuf,
    /// TLS for hosts and clients (the head and its experiments' controllers): a certificate
    /// made once in `<state-dir>/tls/`; they trust it with NEXTMINI_CA=<state-dir>/tls/cert.pem
    /// and reach the head as https://HEAD:PORT.
    #[arg(long)]
    pub tls: bool,
}

pub fn serve(args: ServeArgs) -> Result<()> {
    crate::host::require_root("nextmini serve")?;
    let token = head_token_file(&args.state_dir)?;
    let tls = crate::host::tls_identity(args.tls, &args.state_dir, "hosts and clients", args.port)?;
    let cfg = head::server::HeadConfig {
        listen: args.listen,
        port: args.port,
        host: args.host.unwrap_or_else(crate::host::hostname),
        state_dir: args.state_dir,
        token,
        tls: tls.as_ref().map(tls::Identity::acceptor),
    };
    tokio::runtime::Runtime::new()?
        .block_on(head::server::serve(cfg, crate::host::shutdown_signal()))?;
    Ok(())
}

/// The head's token: the one in its state directory (a restarted head keeps it, so its
/// hosts reconnect), else a new one written there, readable by its owner only.
fn head_token_file(state_dir: &std::path::Path) -> Result<String> {
    let path = state_dir.join(head::client::TOKEN_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let token = text.trim().to_owned();
        if !token.is_empty() {
            return Ok(token);
        }
    }
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create the state directory {}", state_dir.display()))?;
    let token = crate::host::write_token(&path)?;
    eprintln!(
        "host agents and changes need the token in {} (NEXTMINI_TOKEN; the CLI on this host reads it itself when the state directory is the default)",
        path.display()
    );
    Ok(token)
}

#[derive(Args, Debug)]
#[command(subcommand_precedence_over_arg = true)]
pub struct ExpArgs {
    /// The head (host:port) [default: $NEXTMINI_HEAD, else 127.0.0.1:3900].
    #[arg(long, global = true)]
    pub head: Option<String>,
    /// Print JSON as the head returns it.
    #[arg(long, global = true)]
    pub json: bool,
    /// The experiment: alone, create it (if new) and make it active; before a verb, act on it
    /// instead of the active one.
    pub name: Option<String>,
    #[command(subcommand)]
    pub verb: Option<ExpVerb>,
}

#[derive(Subcommand, Debug)]
pub enum ExpVerb {
    /// Place the experiment file's nodes on the experiment's hosts and launch them (or only
    /// plan, with --dry-run); without a file, launch what is queued.
    Launch {
        file: Option<PathBuf>,
        #[arg(long)]
        dry_run: bool,
        /// What "least loaded" means.
        #[arg(long, value_parser = ["cpucommit", "memcommit", "netcommit"])]
        load: Option<String>,
    },
    /// Move nodes in the stored dry run (every constraint is checked again).
    Mv { nodes: NodeIds, host: String },
    /// The stored dry run: node | host.
    Dump,
    /// On: a launch with a file only queues it, until a launch without one.
    Queueing {
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Run a command in a node, on whichever host holds it; its exit code is passed back.
    Exec {
        node: u32,
        /// Seconds before the command is killed.
        #[arg(long)]
        timeout: Option<u64>,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Hosts, placement, schedules, the controller's counts, lost nodes and links.
    Status,
    /// The experiment's hosts; add or remove some (ranges: kn[1-3], all).
    Hosts {
        #[command(subcommand)]
        change: Option<HostsVerb>,
    },
    /// Remove an experiment from every host (this one, another by name, or all).
    Clear { target: Option<String> },
}

#[derive(Subcommand, Debug, Clone)]
pub enum HostsVerb {
    /// Add registered hosts (all or nothing).
    Add { list: HostList },
    /// Remove hosts (names it does not hold are ignored).
    Del { list: HostList },
}

impl HostsVerb {
    fn change(&self) -> HostsChange {
        match self {
            HostsVerb::Add { list } => HostsChange {
                add: Some(list.0.clone()),
                del: None,
            },
            HostsVerb::Del { list } => HostsChange {
                add: None,
                del: Some(list.0.clone()),
            },
        }
    }
}

#[derive(Args, Debug)]
pub struct HostsArgs {
    #[arg(long)]
    pub head: Option<String>,
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub change: Option<HostsVerb>,
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}

/// Runs an `exp` command; the exit code is the command's for `exec`, else 0.
pub fn exp(args: ExpArgs) -> Result<i32> {
    let c = HeadClient::new(&head_addr(args.head.as_deref()));
    let json = args.json;
    let Some(verb) = args.verb else {
        if let Some(name) = args.name {
            c.switch(&name)?;
            println!("experiment {name} is active");
            return Ok(0);
        }
        let rows = c.experiments()?;
        if json {
            print_json(&rows)?;
        } else {
            print!("{}", head::render::experiments(&rows));
        }
        return Ok(0);
    };
    // `exp clear NAME|all` names its target after the verb.
    if let ExpVerb::Clear { target: Some(t) } = &verb {
        let names: Vec<String> = if t == "all" {
            c.experiments()?.into_iter().map(|e| e.name).collect()
        } else {
            vec![t.clone()]
        };
        for name in names {
            report_clear(&name, &c.clear(&name)?, json)?;
        }
        return Ok(0);
    }
    let name = match args.name {
        Some(n) => n,
        None => c.active()?,
    };
    run_verb(&c, &name, verb, json)
}

fn run_verb(c: &HeadClient, name: &str, verb: ExpVerb, json: bool) -> Result<i32> {
    match verb {
        ExpVerb::Exec {
            node,
            timeout,
            command,
        } => {
            let r = c.exec(
                name,
                &ExecRequest {
                    node,
                    argv: command,
                    timeout_s: timeout,
                },
            )?;
            print!("{}", r.stdout);
            eprint!("{}", r.stderr);
            return Ok(r.code);
        }
        ExpVerb::Launch {
            file,
            dry_run,
            load,
        } => {
            let text = file
                .as_ref()
                .map(|f| {
                    std::fs::read_to_string(f)
                        .with_context(|| format!("cannot read {}", f.display()))
                })
                .transpose()?;
            let r = c.launch(
                name,
                &LaunchRequest {
                    file: text,
                    dry_run,
                    load,
                },
            )?;
            print_plan(name, &r, json, dry_run || r.queued)?;
        }
        ExpVerb::Queueing { state } => c.queueing(name, state == "on")?,
        ExpVerb::Dump => {
            let doc = c.experiment(name)?;
            let Some(plan) = doc.dry_run else {
                bail!(
                    "no dry run of {name}: run `nextmini exp {name} launch FILE --dry-run` first"
                );
            };
            if json {
                return print_json(&plan).map(|()| 0);
            }
            print!("{}", head::render::dry_run(&plan));
        }
        ExpVerb::Mv { nodes, host } => {
            let r = c.move_nodes(
                name,
                &MoveRequest {
                    nodes: nodes.written,
                    host,
                },
            )?;
            print_plan(name, &r, json, true)?;
        }
        ExpVerb::Status => {
            let r = c.experiment(name)?;
            if json {
                return print_json(&r).map(|()| 0);
            }
            // An experiment's controller is reached as its head is (over TLS or not).
            let host = match c.http().base().strip_prefix("https://") {
                Some(_) => format!("https://{}", c.http().host()),
                None => c.http().host().to_owned(),
            };
            print!("{}", head::render::status(&r, &host));
        }
        ExpVerb::Hosts { change: None } => {
            let doc = c.experiment(name)?;
            println!("{}", serde_json::to_string(&doc.hosts)?);
        }
        ExpVerb::Hosts {
            change: Some(change),
        } => c.change_hosts(name, &change.change())?,
        ExpVerb::Clear { .. } => report_clear(name, &c.clear(name)?, json)?,
    }
    Ok(0)
}

fn report_clear(name: &str, r: &head::api::ClearReport, json: bool) -> Result<()> {
    if json {
        return print_json(r);
    }
    print!("{}", head::render::clear(name, r));
    Ok(())
}

fn print_plan(name: &str, r: &PlanDoc, json: bool, dry_run: bool) -> Result<()> {
    if json {
        return print_json(r);
    }
    print!("{}", head::render::plan(name, r, dry_run));
    Ok(())
}

pub fn hosts(args: HostsArgs) -> Result<()> {
    let c = HeadClient::new(&head_addr(args.head.as_deref()));
    if let Some(change) = &args.change {
        let name = c.active()?;
        c.change_hosts(&name, &change.change())?;
        return Ok(());
    }
    let rows = c.hosts()?;
    if args.json {
        return print_json(&rows);
    }
    print!("{}", head::render::hosts(&rows));
    Ok(())
}
