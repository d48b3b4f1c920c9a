//! `nextmini flow add|list`: generated flows on the running experiment.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use proto::{FlowLen, FlowSpec, FlowTransport};

use crate::running::Target;

#[derive(Subcommand)]
pub enum FlowCommand {
    /// Start a flow between two nodes: nextmini flow add 1 8 --bytes 10MB --rate 5MB/s
    Add(FlowAddArgs),
    /// Every generated flow: state, completion time, throughput, TCP figures.
    List(FlowListArgs),
}

/// A flow's pacing rate in bytes per second: `5MB/s`, `64KiB/s`, or a link rate (`40mbit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRate(pub u64);

impl std::str::FromStr for FlowRate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bytes = match s.strip_suffix("/s") {
            Some(size) => linkem::parse_bytes(size).map_err(|e| e.to_string())?,
            None => linkem::parse_rate(s).map_err(|e| e.to_string())? / 8,
        };
        if bytes == 0 {
            return Err(format!("{s:?} is below one byte per second"));
        }
        Ok(FlowRate(bytes))
    }
}

#[derive(Args, Debug)]
pub struct FlowAddArgs {
    pub src: u32,
    pub dst: u32,
    /// Send this many bytes: 10MB, 64KiB, 1500.
    #[arg(
        long,
        conflicts_with = "duration",
        required_unless_present = "duration"
    )]
    pub bytes: Option<linkem::Bytes>,
    /// Send for this long: 10s, 500ms.
    #[arg(long)]
    pub duration: Option<linkem::Span>,
    /// Pace the sender at this rate: 5MB/s (bytes) or 40mbit (bits).
    #[arg(long)]
    pub rate: Option<FlowRate>,
    /// Weight at wrr links (1..=15).
    #[arg(long)]
    pub weight: Option<u32>,
    /// Congestion control: cubic, bbr, reno (what the kernel has).
    #[arg(long)]
    pub cc: Option<String>,
    /// How it travels: tcp, or lossless_unicast (UDP at --rate, acknowledged and repaired,
    /// with the experiment's [lossless_runtime_config]).
    #[arg(long, default_value = "tcp", value_parser = ["tcp", "lossless_unicast"])]
    pub transport: String,
    /// Start this long from now.
    #[arg(long)]
    pub start: Option<linkem::Span>,
    #[command(flatten)]
    pub target: Target,
}

impl FlowAddArgs {
    fn entry(&self) -> Result<experiment::flows::FlowEntry> {
        let flow_len = match (self.bytes, self.duration) {
            (Some(b), _) => FlowLen::Bytes(b.0),
            (None, Some(d)) => FlowLen::Duration(d.duration().as_secs_f64()),
            (None, None) => bail!("say how long the flow is: --bytes 10MB or --duration 10s"),
        };
        let spec = FlowSpec {
            flow_len,
            flow_rate: self.rate.map(|r| r.0),
            flow_weight: self.weight,
            transport: if self.transport == "lossless_unicast" {
                FlowTransport::LosslessUnicast
            } else {
                FlowTransport::Tcp
            },
            cc: self.cc.clone(),
        };
        spec.check().map_err(anyhow::Error::msg)?;
        Ok(experiment::flows::FlowEntry {
            src_node_id: self.src,
            dst_node_id: self.dst,
            flow_spec: spec,
            start: self.start,
        })
    }
}

#[derive(Args, Debug)]
pub struct FlowListArgs {
    /// Only flows in this state: scheduled, running, finished, failed, …
    #[arg(long)]
    pub state: Option<String>,
    #[command(flatten)]
    pub target: Target,
}

pub fn run(cmd: FlowCommand) -> Result<()> {
    match cmd {
        FlowCommand::Add(args) => {
            let id = args.target.client()?.add_flow(&args.entry()?)?;
            println!("flow {id}: {} -> {}", args.src, args.dst);
        }
        FlowCommand::List(args) => {
            let rows = args.target.client()?.flows()?;
            let shown = rows
                .iter()
                .filter(|f| args.state.as_deref().is_none_or(|s| f.state.as_str() == s));
            print!("{}", controller::render::flows(shown));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_rates_read_as_bytes_or_bits() {
        assert_eq!("5MB/s".parse(), Ok(FlowRate(5_000_000)));
        assert_eq!("40mbit".parse(), Ok(FlowRate(5_000_000)));
        assert!("5 parsecs".parse::<FlowRate>().is_err());
        assert!("1bit".parse::<FlowRate>().is_err());
    }
}
