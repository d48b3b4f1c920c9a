//! `nextmini exp` and `nextmini hosts`: the head's experiments and hosts from the command line.
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

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

const VERBS: [&str; 8] = [
    "launch", "mv", "status", "hosts", "clear", "dump", "queueing", "exec",
];

#[derive(Args, Debug)]
pub struct ExpArgs {
    /// The head (host:port) [default: $NEXTMINI_HEAD, else 127.0.0.1:3900].
    #[arg(long)]
    pub head: Option<String>,
    /// Print JSON as the head returns it.
    #[arg(long)]
    pub json: bool,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub words: Vec<String>,
}

#[derive(Args, Debug)]
pub struct HostsArgs {
    #[arg(long)]
    pub head: Option<String>,
    #[arg(long)]
    pub json: bool,
    /// `add LIST` or `del LIST` (for the active experiment); nothing: list the hosts.
    pub words: Vec<String>,
}

struct Client {
    base: String,
}

impl Client {
    fn new(head: &Option<String>) -> Client {
        Client {
            base: crate::head::head_url(head),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Result<String> {
        let url = format!("{}{path}", self.base);
        let unreachable = || {
            format!(
                "the head at {} does not answer: start it with `nextmini serve`, or give --head",
                self.base
            )
        };
        let response = match (method, body) {
            ("GET", _) => ureq::get(&url)
                .config()
                .http_status_as_error(false)
                .build()
                .call(),
            (_, Some(b)) => ureq::post(&url)
                .header("content-type", "application/json")
                .config()
                .http_status_as_error(false)
                .build()
                .send(b.to_string().as_str()),
            (_, None) => ureq::post(&url)
                .config()
                .http_status_as_error(false)
                .build()
                .send_empty(),
        };
        let mut response = response.with_context(unreachable)?;
        let status = response.status();
        let text = response.body_mut().read_to_string()?;
        if !status.is_success() {
            bail!("{}", text.trim());
        }
        Ok(text)
    }

    fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let text = self.call(method, path, body)?;
        if text.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        Ok(serde_json::from_str(&text)?)
    }

    fn active(&self) -> Result<String> {
        let rows = self.json("GET", "/api/exps", None)?;
        rows.as_array()
            .and_then(|r| r.iter().find(|e| e["active"] == true))
            .and_then(|e| e["name"].as_str())
            .map(str::to_owned)
            .context("the head has no active experiment")
    }
}

/// Runs an `exp` command; the exit code is the command's for `exec`, else 0.
pub fn exp(args: ExpArgs) -> Result<i32> {
    let c = Client::new(&args.head);
    let w: Vec<&str> = args.words.iter().map(String::as_str).collect();
    match w.as_slice() {
        [] => {
            let rows = c.json("GET", "/api/exps", None)?;
            if args.json {
                println!("{rows}");
                return Ok(0);
            }
            println!("| experiment | nodes | hosts | active |");
            println!("|---|---:|---|---|");
            for r in rows.as_array().into_iter().flatten() {
                println!(
                    "| {} | {} | {} | {} |",
                    r["name"].as_str().unwrap_or(""),
                    r["nodes"],
                    r["hosts"].as_str().unwrap_or(""),
                    if r["active"] == true { "*" } else { "" }
                );
            }
            Ok(0)
        }
        ["clear", target] => {
            let names: Vec<String> = if *target == "all" {
                c.json("GET", "/api/exps", None)?
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r["name"].as_str().map(str::to_owned))
                    .collect()
            } else {
                vec![target.to_string()]
            };
            for name in names {
                let r = c.json("POST", &format!("/api/exps/{name}/clear"), None)?;
                report_clear(&name, &r, args.json);
            }
            Ok(0)
        }
        [verb, rest @ ..] if VERBS.contains(verb) => {
            let name = c.active()?;
            run_verb(&c, &name, verb, rest, args.json)
        }
        [name] => {
            c.call("POST", &format!("/api/exps/{name}"), None)?;
            println!("experiment {name} is active");
            Ok(0)
        }
        [name, verb, rest @ ..] if VERBS.contains(verb) => {
            run_verb(&c, name, verb, rest, args.json)
        }
        _ => bail!(
            "usage: nextmini exp [<name>] [launch [FILE] [--dry-run] [--load L] | mv NODES HOST | dump | queueing on|off | status | exec NODE -- CMD | hosts [add|del LIST]] | nextmini exp clear <name|all>"
        ),
    }
}

fn report_clear(name: &str, r: &serde_json::Value, json: bool) {
    if json {
        println!("{r}");
        return;
    }
    let list = |k: &str| {
        r[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    println!("cleared {name} on [{}]", list("cleared"));
    if !list("down").is_empty() {
        println!(
            "hosts down: [{}]; cleared there when they come back (or `nextmini cleanup --prefix {name}` on them)",
            list("down")
        );
    }
    if r["complete"] == false {
        println!("some hosts did not confirm within 30 s");
    }
}

fn run_verb(c: &Client, name: &str, verb: &str, rest: &[&str], json: bool) -> Result<i32> {
    match (verb, rest) {
        ("exec", [node, rest @ ..]) => {
            let node: u32 = node
                .parse()
                .with_context(|| format!("exec: {node:?} is not a node id"))?;
            let (timeout, argv) = match rest {
                ["--timeout", t, argv @ ..] => {
                    (Some(t.parse::<u64>().context("--timeout: seconds")?), argv)
                }
                argv => (None, argv),
            };
            let argv: Vec<&str> = match argv {
                ["--", a @ ..] => a.to_vec(),
                a => a.to_vec(),
            };
            if argv.is_empty() {
                bail!("exec: give a command: nextmini exp exec {node} -- ping -c 3 10.0.0.2");
            }
            let r = c.json(
                "POST",
                &format!("/api/exps/{name}/exec"),
                Some(serde_json::json!({"node": node, "argv": argv, "timeout_s": timeout})),
            )?;
            print!("{}", r["stdout"].as_str().unwrap_or(""));
            eprint!("{}", r["stderr"].as_str().unwrap_or(""));
            Ok(r["code"].as_i64().unwrap_or(1) as i32)
        }
        ("launch", args) => {
            let (file, opts) = match args {
                [f, rest @ ..] if !f.starts_with("--") => (Some(*f), rest),
                rest => (None, rest),
            };
            let text = file
                .map(|f| {
                    std::fs::read_to_string(PathBuf::from(f))
                        .with_context(|| format!("cannot read {f}"))
                })
                .transpose()?;
            let mut dry_run = false;
            let mut load = None;
            let mut it = opts.iter();
            while let Some(o) = it.next() {
                match *o {
                    "--dry-run" => dry_run = true,
                    "--load" => load = it.next().map(|s| s.to_string()),
                    other => bail!("launch: unknown option {other:?} (use --dry-run, --load L)"),
                }
            }
            let r = c.json(
                "POST",
                &format!("/api/exps/{name}/launch"),
                Some(serde_json::json!({"file": text, "dry_run": dry_run, "load": load})),
            )?;
            print_plan(name, &r, json, dry_run || r["queued"] == true);
            Ok(0)
        }
        ("queueing", [v @ ("on" | "off")]) => {
            c.call(
                "POST",
                &format!("/api/exps/{name}/queueing"),
                Some(serde_json::json!({ "on": *v == "on" })),
            )?;
            Ok(0)
        }
        ("dump", []) => {
            let r = c.json("GET", &format!("/api/exps/{name}"), None)?;
            let Some(plan) = r["dry_run"].as_object() else {
                bail!(
                    "no dry run of {name}: run `nextmini exp {name} launch FILE --dry-run` first"
                );
            };
            if json {
                println!("{}", r["dry_run"]);
                return Ok(0);
            }
            println!("| node | host |");
            println!("|---:|---|");
            for (node, host) in plan {
                println!("| {node} | {} |", host.as_str().unwrap_or(""));
            }
            Ok(0)
        }
        ("mv", [nodes, host]) => {
            let r = c.json(
                "POST",
                &format!("/api/exps/{name}/mv"),
                Some(serde_json::json!({"nodes": nodes, "host": host})),
            )?;
            print_plan(name, &r, json, true);
            Ok(0)
        }
        ("status", []) => {
            let r = c.json("GET", &format!("/api/exps/{name}"), None)?;
            if json {
                println!("{r}");
                return Ok(0);
            }
            println!("experiment {name}: hosts {}", r["hosts"]);
            if let Some(shares) = r["launch"]["shares"].as_object() {
                println!("| host | nodes |");
                println!("|---|---|");
                for (h, ids) in shares {
                    println!("| {h} | {} |", ids.as_str().unwrap_or(""));
                }
            }
            println!("| start | end | state | launched | failures | total | hosts |");
            println!("|---|---|---|---:|---:|---:|---:|");
            for s in r["schedules"].as_array().into_iter().flatten() {
                println!(
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    utc(s["start"].as_u64()),
                    utc(s["end"].as_u64()),
                    s["state"].as_str().unwrap_or(""),
                    s["launched"],
                    s["failures"],
                    s["total"],
                    s["hosts"]
                );
            }
            if let Some(port) = r["launch"]["port"].as_u64() {
                let host = c
                    .base
                    .trim_start_matches("http://")
                    .rsplit_once(':')
                    .map_or("127.0.0.1", |(h, _)| h)
                    .to_owned();
                println!(
                    "controller at {host}:{port} (nextmini link show --api {host}:{port}, link set … --api {host}:{port})"
                );
            }
            if let Some(st) = r.get("status").filter(|v| !v.is_null()) {
                println!(
                    "controller: {} nodes, {} ready, {} failed, {} links up",
                    st["nodes"], st["ready"], st["failed"], st["links_up"]
                );
            }
            if let Some(lost) = r["failed_nodes"].as_array().filter(|a| !a.is_empty()) {
                let ids: Vec<u32> = lost
                    .iter()
                    .filter_map(|v| v.as_u64())
                    .map(|v| v as u32)
                    .collect();
                println!("lost nodes: {}", topology::ids::format_ids(&ids));
            }
            if let Some(lost) = r["lost_links"].as_array().filter(|a| !a.is_empty()) {
                let links: Vec<&str> = lost.iter().filter_map(|v| v.as_str()).collect();
                println!("links down: {}", links.join(" "));
            }
            Ok(0)
        }
        ("hosts", []) => {
            let r = c.json("GET", &format!("/api/exps/{name}"), None)?;
            println!("{}", r["hosts"]);
            Ok(0)
        }
        ("hosts", [op @ ("add" | "del"), list]) => {
            c.call(
                "POST",
                &format!("/api/exps/{name}/hosts"),
                Some(serde_json::json!({ *op: list })),
            )?;
            Ok(0)
        }
        ("clear", []) => {
            let r = c.json("POST", &format!("/api/exps/{name}/clear"), None)?;
            report_clear(name, &r, json);
            Ok(0)
        }
        _ => bail!("{verb}: wrong arguments; see `nextmini exp --help`"),
    }
}

/// Unix seconds as `2026-11-26 18:46:38Z` (civil date from days, Howard Hinnant's method).
fn utc(secs: Option<u64>) -> String {
    let Some(secs) = secs else {
        return "-".to_owned();
    };
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn print_plan(name: &str, r: &serde_json::Value, json: bool, dry_run: bool) {
    if json {
        println!("{r}");
        return;
    }
    println!(
        "{name}: {}{} links cross hosts",
        if r["queued"] == true {
            "queued (launch it with `nextmini exp launch`); "
        } else if dry_run {
            "dry run; "
        } else {
            "launched; "
        },
        r["links_across_hosts"]
    );
    println!("| host | nodes |");
    println!("|---|---|");
    for (h, ids) in r["hosts"].as_object().into_iter().flatten() {
        let ids: Vec<u32> = ids
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_u64())
            .map(|v| v as u32)
            .collect();
        println!("| {h} | {} |", topology::ids::format_ids(&ids));
    }
}

pub fn hosts(args: HostsArgs) -> Result<()> {
    let c = Client::new(&args.head);
    let w: Vec<&str> = args.words.iter().map(String::as_str).collect();
    match w.as_slice() {
        [] => {
            let rows = c.json("GET", "/api/hosts", None)?;
            if args.json {
                println!("{rows}");
                return Ok(());
            }
            println!("| host | address | CPUs | memory | available | load | state | nodes |");
            println!("|---|---|---:|---:|---:|---:|---|---:|");
            for r in rows.as_array().into_iter().flatten() {
                println!(
                    "| {} | {} | {} | {} MiB | {} MiB | {:.2} | {} | {} |",
                    r["name"].as_str().unwrap_or(""),
                    r["addr"].as_str().unwrap_or(""),
                    r["cpus"],
                    r["mem_mib"],
                    r["mem_available_mib"],
                    r["load1"].as_f64().unwrap_or(0.0),
                    if r["up"] == true { "up" } else { "down" },
                    r["nodes"]
                );
            }
            Ok(())
        }
        [op @ ("add" | "del"), list] => {
            let name = c.active()?;
            run_verb(&c, &name, "hosts", &[op, list], args.json).map(|_| ())
        }
        _ => bail!("usage: nextmini hosts [add|del LIST]"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unix_seconds_read_as_utc() {
        assert_eq!(super::utc(Some(0)), "1970-01-01 00:00:00Z");
        assert_eq!(super::utc(Some(1_795_718_798)), "2026-11-26 18:46:38Z");
        assert_eq!(super::utc(Some(951_782_400)), "2000-02-29 00:00:00Z");
        assert_eq!(super::utc(None), "-");
    }
}
