//! A link direction's parameters ([`LinkParams`]) and changes to them ([`LinkChange`]): one
//! type each, used by the experiment file, the command line, the HTTP API, the control protocol
//! and the emulator alike. Values are checked when they are read (see [`crate::units`] and
//! [`LinkChange`]'s deserialisation), so everything downstream holds valid parameters.

use serde::{Deserialize, Deserializer, Serialize};

use crate::units::{Fraction, Rate, Span, UnitError};

/// Random loss.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    #[default]
    None,
    /// Each packet is lost with this probability.
    Bernoulli(Fraction),
    /// Bursty loss: see [`GilbertElliott`].
    GilbertElliott(GilbertElliott),
}

/// Two-state Markov loss: in the good state packets are lost with `loss_good`, in the bad one
/// with `loss_bad`; before each packet the state flips with `p` (good → bad) or `r`
/// (bad → good).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GilbertElliott {
    pub p: Fraction,
    pub r: Fraction,
    #[serde(default)]
    pub loss_good: Fraction,
    pub loss_bad: Fraction,
}

/// The command line's form: `p,r,loss_good,loss_bad`, e.g. `0.01,0.1,0%,50%`.
impl std::str::FromStr for GilbertElliott {
    type Err = LinkError;
    fn from_str(s: &str) -> Result<Self, LinkError> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        let [p, r, good, bad] = parts.as_slice() else {
            return Err(LinkError::Value {
                key: "gilbert_elliott",
                value: s.to_owned(),
                reason: "give p,r,loss_good,loss_bad, e.g. 0.01,0.1,0%,50%".into(),
            });
        };
        Ok(GilbertElliott {
            p: p.parse()?,
            r: r.parse()?,
            loss_good: good.parse()?,
            loss_bad: bad.parse()?,
        })
    }
}

impl Loss {
    /// A Bernoulli loss, or none at zero.
    pub fn bernoulli(p: Fraction) -> Loss {
        if p.is_zero() {
            Loss::None
        } else {
            Loss::Bernoulli(p)
        }
    }

    /// The long-run fraction of packets lost.
    pub fn mean(&self) -> f64 {
        match *self {
            Loss::None => 0.0,
            Loss::Bernoulli(p) => p.get(),
            Loss::GilbertElliott(ge) => {
                let total = ge.p.get() + ge.r.get();
                if total == 0.0 {
                    return ge.loss_good.get();
                }
                let bad = ge.p.get() / total;
                bad * ge.loss_bad.get() + (1.0 - bad) * ge.loss_good.get()
            }
        }
    }
}

/// How much the queue in front of the transmitter holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueLimit {
    Packets(u32),
    Bytes(u32),
}

impl QueueLimit {
    /// The default queue: 1,000 packets (a common interface queue length).
    pub const DEFAULT: QueueLimit = QueueLimit::Packets(1000);
    /// A byte queue must hold at least one full-size packet.
    pub const MIN_BYTES: u32 = 1500;
}

impl Default for QueueLimit {
    fn default() -> Self {
        QueueLimit::DEFAULT
    }
}

/// What to do as the queue fills.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Aqm {
    /// Drop arrivals only when the queue is full.
    #[default]
    DropTail,
    /// Random early detection on the average queue length, as a fraction of the limit: no
    /// drops below `min`, all above `max`, probability rising to `max_p` in between.
    Red { min: f64, max: f64, max_p: f64 },
}

impl Aqm {
    /// RED with Floyd and Jacobson's suggested shape, on the queue's fill: what `aqm = "red"`
    /// means.
    pub const RED: Aqm = Aqm::Red {
        min: 0.2,
        max: 0.6,
        max_p: 0.1,
    };

    pub fn is_red(&self) -> bool {
        matches!(self, Aqm::Red { .. })
    }
}

/// `"droptail"`, `"red"` (the default shape), or `{ red = { min, max, max_p } }`.
impl<'de> Deserialize<'de> for Aqm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RedShape {
            min: f64,
            max: f64,
            max_p: f64,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Name(String),
            Red { red: RedShape },
        }
        match Repr::deserialize(d)? {
            Repr::Name(n) => match n.as_str() {
                "droptail" | "drop_tail" => Ok(Aqm::DropTail),
                "red" => Ok(Aqm::RED),
                other => Err(serde::de::Error::custom(format!(
                    "aqm {other:?} is not \"droptail\" or \"red\""
                ))),
            },
            Repr::Red {
                red: RedShape { min, max, max_p },
            } => {
                if !(0.0 <= min && min < max && max <= 1.0 && (0.0..=1.0).contains(&max_p)) {
                    return Err(serde::de::Error::custom(
                        "red needs 0 <= min < max <= 1 (fractions of the queue) and max_p within 0..1",
                    ));
                }
                Ok(Aqm::Red { min, max, max_p })
            }
        }
    }
}

/// How the transmitter picks the next packet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    /// First in, first out (the seeds' `scheduler_type = "fifo"`).
    #[default]
    Fifo,
    /// Weighted round robin by flow (the seeds' `"wrr"`): a queue per flow (5-tuple), served
    /// in proportion to the flow's weight.
    Wrr,
}

/// A link direction's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinkParams {
    /// None is unshaped: packets leave as fast as they come.
    pub rate: Option<Rate>,
    /// A token bucket of this many bytes in front of the rate (the seeds' `bucket_size`):
    /// after a pause, that much leaves at once. None: packets are spaced at the rate.
    #[serde(default)]
    pub burst: Option<u32>,
    pub delay: Span,
    /// Each packet's delay varies by up to this much either way.
    pub jitter: Span,
    /// Allow a jittered packet to overtake the one before it.
    #[serde(default)]
    pub reorder: bool,
    pub loss: Loss,
    pub queue: QueueLimit,
    pub aqm: Aqm,
    #[serde(default)]
    pub scheduler: Scheduler,
    pub up: bool,
}

impl Default for LinkParams {
    /// Unshaped, no delay, no loss, the default queue, up.
    fn default() -> Self {
        LinkParams {
            rate: None,
            burst: None,
            delay: Span::ZERO,
            jitter: Span::ZERO,
            reorder: false,
            loss: Loss::None,
            queue: QueueLimit::DEFAULT,
            aqm: Aqm::DropTail,
            scheduler: Scheduler::Fifo,
            up: true,
        }
    }
}

impl LinkParams {
    /// Whether the link does more than delay: then packets cross it one by one, as on a wire.
    pub fn shapes(&self) -> bool {
        self.rate.is_some()
            || !self.jitter.is_zero()
            || self.loss != Loss::None
            || self.scheduler == Scheduler::Wrr
    }

    /// What of these parameters a link the kernel carries (a veth pair shaped by a token
    /// bucket filter: max mode) can't do: none when it can do them all. The kernel here has
    /// no netem, so it gives a rate, a burst, a queue and up or down, nothing else.
    pub fn beyond_the_kernel(&self) -> Option<String> {
        let mut what = Vec::new();
        if !self.delay.is_zero() {
            what.push(format!("delay {}", self.delay));
        }
        if !self.jitter.is_zero() {
            what.push(format!("jitter {}", self.jitter));
        }
        if self.loss != Loss::None {
            what.push("loss".to_owned());
        }
        if self.aqm.is_red() {
            what.push("RED".to_owned());
        }
        if self.scheduler == Scheduler::Wrr {
            what.push("weighted round robin".to_owned());
        }
        (!what.is_empty()).then(|| what.join(", "))
    }

    /// One line for people: `rate 100mbit, delay 5ms, jitter 0, loss 1%, queue 1000 packets, up`.
    pub fn describe(&self) -> String {
        let loss = match self.loss {
            Loss::None => "loss 0%".to_owned(),
            Loss::Bernoulli(p) => format!("loss {p}"),
            Loss::GilbertElliott(ge) => format!(
                "Gilbert-Elliott p {} r {} loss {}/{}",
                ge.p.get(),
                ge.r.get(),
                ge.loss_good,
                ge.loss_bad
            ),
        };
        let queue = match self.queue {
            QueueLimit::Packets(p) => format!("{p} packets"),
            QueueLimit::Bytes(b) => format!("{b} bytes"),
        };
        format!(
            "rate {}{}, delay {}, jitter {}, {loss}, queue {queue}{}{}, {}",
            self.rate
                .map_or_else(|| "unshaped".to_owned(), |r| r.to_string()),
            self.burst
                .map_or_else(String::new, |b| format!(" (burst {b} bytes)")),
            self.delay,
            self.jitter,
            if self.aqm.is_red() { " (RED)" } else { "" },
            if self.scheduler == Scheduler::Wrr {
                ", weighted round robin"
            } else {
                ""
            },
            if self.up { "up" } else { "down" }
        )
    }
}

/// A change to a link's parameters: fields left out keep their value. It is also how
/// parameters are written: `[links]` and `[[link]]` in an experiment file, `--link
/// rate=10mbit,delay=5ms` on the command line, the body of `POST /api/links/{a}/{b}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawChange")]
pub struct LinkChange {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// A token bucket of this many bytes (0: none, packets spaced at the rate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Remove the rate limit.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unshaped: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<Span>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Span>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reorder: Option<bool>,
    /// Bernoulli loss (and no Gilbert–Elliott).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<Fraction>,
    /// Bursty loss instead of Bernoulli.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gilbert_elliott: Option<GilbertElliott>,
    /// Queue limit in packets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<u32>,
    /// Queue limit in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_bytes: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aqm: Option<Aqm>,
    /// `"fifo"` or `"wrr"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<Scheduler>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub up: Option<bool>,
}

/// What [`LinkChange`] is read from before it is checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChange {
    rate: Option<Rate>,
    burst: Option<u32>,
    #[serde(default)]
    unshaped: bool,
    delay: Option<Span>,
    jitter: Option<Span>,
    reorder: Option<bool>,
    loss: Option<Fraction>,
    gilbert_elliott: Option<GilbertElliott>,
    queue: Option<u32>,
    queue_bytes: Option<u32>,
    aqm: Option<Aqm>,
    scheduler: Option<Scheduler>,
    up: Option<bool>,
}

/// A change that can't be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("queue must be at least 1 packet")]
    EmptyQueue,
    #[error("queue_bytes must hold at least one 1,500-byte packet")]
    TinyQueue,
    #[error("give queue (packets) or queue_bytes, not both")]
    TwoQueues,
    #[error("give loss (Bernoulli) or gilbert_elliott (bursty), not both")]
    TwoLosses,
    #[error("give rate or unshaped, not both")]
    RateAndUnshaped,
    #[error(
        "`{0}` is not a link setting: use rate, delay, jitter, loss, queue, queue_bytes, aqm or up"
    )]
    UnknownKey(String),
    #[error("`{0}` is not key=value (e.g. delay=5ms)")]
    NotKeyValue(String),
    #[error("{0}")]
    Unit(#[from] UnitError),
    #[error("{key} = {value:?}: {reason}")]
    Value {
        key: &'static str,
        value: String,
        reason: String,
    },
}

impl TryFrom<RawChange> for LinkChange {
    type Error = LinkError;
    fn try_from(r: RawChange) -> Result<Self, LinkError> {
        let change = LinkChange {
            rate: r.rate,
            burst: r.burst,
            unshaped: r.unshaped,
            delay: r.delay,
            jitter: r.jitter,
            reorder: r.reorder,
            loss: r.loss,
            gilbert_elliott: r.gilbert_elliott,
            queue: r.queue,
            queue_bytes: r.queue_bytes,
            aqm: r.aqm,
            scheduler: r.scheduler,
            up: r.up,
        };
        change.check()?;
        Ok(change)
    }
}

/// The command line's short form (see [`LinkChange::from_short`]).
impl std::str::FromStr for LinkChange {
    type Err = LinkError;
    fn from_str(s: &str) -> Result<Self, LinkError> {
        LinkChange::from_short(s)
    }
}

impl LinkChange {
    /// Checks a change made in code (deserialisation checks it already).
    pub fn check(&self) -> Result<(), LinkError> {
        if self.queue == Some(0) {
            return Err(LinkError::EmptyQueue);
        }
        if self.queue_bytes.is_some_and(|b| b < QueueLimit::MIN_BYTES) {
            return Err(LinkError::TinyQueue);
        }
        if self.queue.is_some() && self.queue_bytes.is_some() {
            return Err(LinkError::TwoQueues);
        }
        if self.loss.is_some() && self.gilbert_elliott.is_some() {
            return Err(LinkError::TwoLosses);
        }
        if self.rate.is_some() && self.unshaped {
            return Err(LinkError::RateAndUnshaped);
        }
        Ok(())
    }

    /// The command line's short form: `rate=10mbit,delay=5ms,loss=1%,queue=100,jitter=1ms`
    /// (also `queue_bytes`, `aqm=red`, `up=false`).
    pub fn from_short(s: &str) -> Result<LinkChange, LinkError> {
        let mut c = LinkChange::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| LinkError::NotKeyValue(part.to_owned()))?;
            let (key, value) = (key.trim(), value.trim());
            let number = |key: &'static str| {
                value.parse::<u32>().map_err(|e| LinkError::Value {
                    key,
                    value: value.to_owned(),
                    reason: e.to_string(),
                })
            };
            match key {
                "rate" => c.rate = Some(value.parse()?),
                "delay" => c.delay = Some(value.parse()?),
                "jitter" => c.jitter = Some(value.parse()?),
                "loss" => c.loss = Some(value.parse()?),
                "queue" => c.queue = Some(number("queue")?),
                "queue_bytes" => c.queue_bytes = Some(number("queue_bytes")?),
                "burst" => c.burst = Some(number("burst")?),
                "scheduler" => {
                    c.scheduler = Some(match value {
                        "fifo" => Scheduler::Fifo,
                        "wrr" => Scheduler::Wrr,
                        _ => {
                            return Err(LinkError::Value {
                                key: "scheduler",
                                value: value.to_owned(),
                                reason: "use fifo or wrr".into(),
                            });
                        }
                    })
                }
                "aqm" => {
                    c.aqm = Some(match value {
                        "red" => Aqm::RED,
                        "droptail" => Aqm::DropTail,
                        _ => {
                            return Err(LinkError::Value {
                                key: "aqm",
                                value: value.to_owned(),
                                reason: "use droptail or red".into(),
                            });
                        }
                    })
                }
                "up" => {
                    c.up = Some(value.parse().map_err(|_| LinkError::Value {
                        key: "up",
                        value: value.to_owned(),
                        reason: "use true or false".into(),
                    })?)
                }
                other => return Err(LinkError::UnknownKey(other.to_owned())),
            }
        }
        c.check()?;
        Ok(c)
    }

    /// This change, then `later`'s fields where it has them.
    pub fn then(self, later: LinkChange) -> LinkChange {
        LinkChange {
            rate: if later.unshaped {
                None
            } else {
                later.rate.or(self.rate)
            },
            burst: later.burst.or(self.burst),
            unshaped: later.unshaped || (self.unshaped && later.rate.is_none()),
            delay: later.delay.or(self.delay),
            jitter: later.jitter.or(self.jitter),
            reorder: later.reorder.or(self.reorder),
            loss: if later.gilbert_elliott.is_some() {
                None
            } else {
                later.loss.or(self.loss)
            },
            gilbert_elliott: if later.loss.is_some() {
                None
            } else {
                later.gilbert_elliott.or(self.gilbert_elliott)
            },
            queue: if later.queue_bytes.is_some() {
                None
            } else {
                later.queue.or(self.queue)
            },
            queue_bytes: if later.queue.is_some() {
                None
            } else {
                later.queue_bytes.or(self.queue_bytes)
            },
            aqm: later.aqm.or(self.aqm),
            scheduler: later.scheduler.or(self.scheduler),
            up: later.up.or(self.up),
        }
    }

    /// The parameters with this change made.
    pub fn apply(&self, mut p: LinkParams) -> LinkParams {
        if self.unshaped {
            p.rate = None;
        }
        if let Some(r) = self.rate {
            p.rate = Some(r);
        }
        if let Some(b) = self.burst {
            p.burst = (b > 0).then_some(b);
        }
        if let Some(d) = self.delay {
            p.delay = d;
        }
        if let Some(j) = self.jitter {
            p.jitter = j;
        }
        if let Some(r) = self.reorder {
            p.reorder = r;
        }
        if let Some(l) = self.loss {
            p.loss = Loss::bernoulli(l);
        }
        if let Some(ge) = self.gilbert_elliott {
            p.loss = Loss::GilbertElliott(ge);
        }
        if let Some(q) = self.queue {
            p.queue = QueueLimit::Packets(q);
        }
        if let Some(b) = self.queue_bytes {
            p.queue = QueueLimit::Bytes(b);
        }
        if let Some(a) = self.aqm {
            p.aqm = a;
        }
        if let Some(s) = self.scheduler {
            p.scheduler = s;
        }
        if let Some(u) = self.up {
            p.up = u;
        }
        p
    }

    /// Whether the change touches nothing.
    pub fn is_empty(&self) -> bool {
        *self == LinkChange::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_reads_from_a_table_and_from_the_short_form_alike() {
        let table: LinkChange = toml::from_str(
            "rate = \"10mbit\"\ndelay = \"5ms\"\nloss = \"1%\"\nqueue = 100\naqm = \"red\"\n",
        )
        .unwrap();
        let short =
            LinkChange::from_short("rate=10mbit,delay=5ms,loss=1%,queue=100,aqm=red").unwrap();
        assert_eq!(table, short);
        let p = short.apply(LinkParams::default());
        assert_eq!(p.rate.map(Rate::bps), Some(10_000_000));
        assert_eq!(p.delay, Span::from_millis(5));
        assert_eq!(p.queue, QueueLimit::Packets(100));
        assert_eq!(p.aqm, Aqm::RED);
        assert!((p.loss.mean() - 0.01).abs() < 1e-12);
    }

    #[test]
    fn the_kernel_takes_a_rate_a_burst_and_a_queue_and_names_the_rest() {
        let kernel = LinkChange::from_short("rate=1gbit,burst=30000,queue_bytes=90000,up=false")
            .unwrap()
            .apply(LinkParams::default());
        assert_eq!(kernel.beyond_the_kernel(), None);
        let emulated = LinkChange::from_short("delay=5ms,jitter=1ms,loss=1%,aqm=red,scheduler=wrr")
            .unwrap()
            .apply(kernel);
        assert_eq!(
            emulated.beyond_the_kernel().as_deref(),
            Some("delay 5ms, jitter 1ms, loss, RED, weighted round robin")
        );
    }

    #[test]
    fn bad_changes_are_refused_when_read() {
        for (text, expect) in [
            ("queue = 0", "at least 1 packet"),
            ("queue_bytes = 100", "1,500-byte"),
            ("queue = 10\nqueue_bytes = 3000", "not both"),
            ("rate = \"fast\"", "is not a rate"),
            ("aqm = \"codel\"", "droptail"),
            (
                "aqm = { red = { min = 0.9, max = 0.2, max_p = 0.1 } }",
                "min < max",
            ),
            ("colour = \"red\"", "unknown field"),
            (
                "loss = \"1%\"\ngilbert_elliott = { p = 0.1, r = 0.1, loss_bad = \"50%\" }",
                "not both",
            ),
        ] {
            let e = toml::from_str::<LinkChange>(text).unwrap_err().to_string();
            assert!(e.contains(expect), "{text}: {e}");
        }
        for (short, expect) in [
            ("delay", "key=value"),
            ("speed=1", "not a link setting"),
            ("queue=many", "queue"),
        ] {
            let e = LinkChange::from_short(short).unwrap_err().to_string();
            assert!(e.contains(expect), "{short}: {e}");
        }
    }

    #[test]
    fn api_bodies_out_of_range_or_with_unknown_keys_are_refused() {
        for body in [
            r#"{"loss": 1.5}"#,
            r#"{"loss": -1}"#,
            r#"{"loss": "150%"}"#,
            r#"{"delay": 18446744073709551615}"#,
            r#"{"delay_ns": 18446744073709551615}"#,
            r#"{"delay": "-5ms"}"#,
            r#"{"delay": "1000h"}"#,
            r#"{"jitter": "1000h"}"#,
            r#"{"rate": 0}"#,
            r#"{"rate": "0mbit"}"#,
            r#"{"gilbert_elliott": {"p": 5, "r": 0.1}}"#,
            r#"{"down": true}"#,
            r#"{"queue": 0}"#,
        ] {
            assert!(
                serde_json::from_str::<LinkChange>(body).is_err(),
                "{body} was accepted"
            );
        }
        let ok: LinkChange = serde_json::from_str(r#"{"delay": "20ms", "up": false}"#).unwrap();
        assert_eq!(ok.delay, Span::from_millis(20).into());
    }

    #[test]
    fn later_changes_win_and_replace_their_alternatives() {
        let base = LinkChange::from_short("rate=10mbit,loss=1%,queue=50").unwrap();
        let later = LinkChange {
            unshaped: true,
            gilbert_elliott: Some(GilbertElliott {
                p: Fraction::new(0.1).unwrap(),
                r: Fraction::new(0.2).unwrap(),
                loss_good: Fraction::ZERO,
                loss_bad: Fraction::ONE,
            }),
            queue_bytes: Some(3000),
            ..Default::default()
        };
        let both = base.then(later);
        let p = both.apply(LinkParams::default());
        assert_eq!(p.rate, None);
        assert!(matches!(p.loss, Loss::GilbertElliott(_)));
        assert_eq!(p.queue, QueueLimit::Bytes(3000));
        // Applying one after the other gives the same.
        assert_eq!(later.apply(base.apply(LinkParams::default())), p);
    }

    #[test]
    fn params_travel_as_json_and_messagepack() {
        let p = LinkChange::from_short("rate=1gbit,delay=50ms,jitter=1ms,loss=0.5%,aqm=red")
            .unwrap()
            .apply(LinkParams::default());
        let json = serde_json::to_string(&p).unwrap();
        assert!(
            json.contains("\"rate\":\"1gbit\"") && json.contains("\"delay\":\"50ms\""),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<LinkParams>(&json).unwrap(), p);
        let bytes = rmp_serde::to_vec_named(&p).unwrap();
        assert_eq!(rmp_serde::from_slice::<LinkParams>(&bytes).unwrap(), p);
        let c = LinkChange::from_short("delay=20ms,up=false").unwrap();
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"delay":"20ms","up":false}"#
        );
    }
}
