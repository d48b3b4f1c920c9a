//! `nextmini metrics`: a run's results from its store, while it runs or after `down` (the
//! store is kept): its flows, its links over time, one flow over time, or every table as CSV.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use controller::run::DEFAULT_STATE_DIR;
use controller::store::Store;

use crate::running::LinkId;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MetricsArgs {
    #[command(subcommand)]
    pub command: Option<MetricsCommand>,
    /// One link over time, both directions: 1-2.
    #[arg(long, conflicts_with = "flow")]
    pub link: Option<LinkId>,
    /// One generated flow over time, on every link it crossed.
    #[arg(long)]
    pub flow: Option<u64>,
    /// Only the last part of the run: 10s, 500ms (before its latest sample).
    #[arg(long)]
    pub since: Option<linkem::Span>,
    /// Completion times by flow size instead of each flow.
    #[arg(long, conflicts_with_all = ["link", "flow"])]
    pub fct: bool,
    /// With --fct: the hosts' line rate, for the slowdown (fct over size ÷ rate).
    #[arg(long, requires = "fct")]
    pub line_rate: Option<linkem::Rate>,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Subcommand, Debug)]
pub enum MetricsCommand {
    /// Write the run's tables (flows, link_metrics, metrics, app_flows, routes) to DIR.
    Export {
        dir: PathBuf,
        /// csv (Parquet is not built in: convert the CSV, e.g. with DuckDB).
        #[arg(long, default_value = "csv")]
        format: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Which store, and which run in it.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// The store's URL (default: the SQLite file in --state-dir).
    #[arg(long)]
    pub db: Option<String>,
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// A run's id (default: the latest).
    #[arg(long)]
    pub run: Option<i64>,
}

impl StoreArgs {
    async fn open(&self) -> Result<(Store, i64)> {
        let url = match &self.db {
            Some(url) => url.clone(),
            None => {
                let file = self.state_dir.join("nextmini.db");
                if !file.exists() {
                    bail!(
                        "no store at {}: runs record there with `nextmini up` (or give --db / --state-dir)",
                        file.display()
                    );
                }
                controller::run::default_db_url(&self.state_dir)
            }
        };
        let store = Store::open(&url).await?;
        let runs = store.runs().await?;
        let run = match self.run {
            Some(id) if runs.iter().any(|r| r.id == id) => id,
            Some(id) => bail!(
                "no run {id} in {}: its runs are {}",
                store.url(),
                runs.iter()
                    .map(|r| r.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => runs
                .last()
                .map(|r| r.id)
                .with_context(|| format!("no runs in {} yet", store.url()))?,
        };
        Ok((store, run))
    }
}

pub fn run(args: MetricsArgs) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run_async(args))
}

async fn run_async(args: MetricsArgs) -> Result<()> {
    if let Some(MetricsCommand::Export { dir, format, store }) = &args.command {
        if format != "csv" {
            bail!(
                "--format {format}: only csv is built in; export csv and convert it (duckdb -c \"COPY (SELECT * FROM 'DIR/metrics.csv') TO 'metrics.parquet'\")"
            );
        }
        let (store, run) = store.open().await?;
        for (file, rows) in store.export_csv(run, dir).await? {
            println!("{}: {rows} rows", dir.join(file).display());
        }
        return Ok(());
    }
    let (store, run) = args.store.open().await?;
    let since = match (args.since, store.last_sample_ns(run).await?) {
        (Some(span), Some(last)) => last - span.duration().as_nanos() as i64,
        _ => 0,
    };
    let info = store.runs().await?.into_iter().find(|r| r.id == run);
    if let Some(r) = &info {
        println!(
            "run {} ({}, {} nodes, {})",
            r.id, r.topology, r.nodes, r.state
        );
    }
    match (args.link, args.flow) {
        (Some(LinkId(a, b)), _) => {
            let points = store.link_points(run, Some((a, b)), since).await?;
            if points.is_empty() {
                bail!(
                    "no samples of link {a}-{b} in run {run} (is it a link of the topology, and did it carry traffic?)"
                );
            }
            print!("{}", controller::render::link_points(run, &points));
        }
        (None, Some(flow)) => {
            let points = store.flow_points(run, flow, since).await?;
            if points.is_empty() {
                bail!(
                    "no samples of flow {flow} in run {run} (see the flows with `nextmini metrics`)"
                );
            }
            print!("{}", controller::render::flow_points(run, &points));
        }
        (None, None) if args.fct => {
            let flows = store.flow_results(run).await?;
            if flows.is_empty() {
                bail!("run {run} has no generated flows");
            }
            print!(
                "{}",
                controller::render::fct_by_size(&flows, args.line_rate.map(|r| r.bps()))
            );
            println!("{}", controller::render::flow_summary(&flows));
        }
        (None, None) => {
            let flows = store.flow_results(run).await?;
            if !flows.is_empty() {
                print!("{}", controller::render::flows(&flows));
                println!("{}\n", controller::render::flow_summary(&flows));
            }
            let points = store.link_points(run, None, since).await?;
            print!("{}", controller::render::link_totals(&points));
        }
    }
    Ok(())
}
