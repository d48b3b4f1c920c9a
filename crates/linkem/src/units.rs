//! Units as people write them in configs and on the command line, tc's way: rates in
//! `bit`/`kbit`/`mbit`/`gbit` (powers of 1,000; `bps`/`kbps`/`mbps`/`gbps` are bytes per
//! second), durations in `s`/`ms`/`us`, loss in percent.
//!
//! Each unit is a type ([`Rate`], [`Span`], [`Fraction`]) that is parsed and checked once, when
//! it is read. In human-readable formats (TOML, JSON) it is written the way people write it
//! (`"100mbit"`, `"5ms"`, `"1%"`) and read from that or from a plain number (bits/s, seconds,
//! a fraction); in binary formats (the MessagePack control protocol) it travels as an exact
//! number (bits/s, nanoseconds, a fraction).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not {what}: write it like {example}")]
pub struct UnitError {
    pub value: String,
    pub what: &'static str,
    pub example: &'static str,
}

fn split(s: &str) -> (&str, &str) {
    let s = s.trim();
    let at = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    (&s[..at], s[at..].trim())
}

const RATE_EXAMPLE: &str = "\"100mbit\" (bits/s) or \"12mbps\" (bytes/s)";
const SPAN_EXAMPLE: &str = "\"5ms\", \"250us\" or \"1s\"";
const FRACTION_EXAMPLE: &str = "\"1%\" or \"0.01\"";

/// A rate in bits per second: `100mbit`, `1.5gbit`, `64kbit`, `12500kbps` (bytes), `1000000`.
pub fn parse_rate(s: &str) -> Result<u64, UnitError> {
    let err = || UnitError {
        value: s.to_owned(),
        what: "a rate",
        example: RATE_EXAMPLE,
    };
    let (number, unit) = split(s);
    let value: f64 = number.parse().map_err(|_| err())?;
    let factor = match unit.to_ascii_lowercase().as_str() {
        "" | "bit" => 1.0,
        "bps" => 8.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "tbit" => 1e12,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        _ => return Err(err()),
    };
    rate_from_f64(value * factor).ok_or_else(err)
}

fn rate_from_f64(bps: f64) -> Option<u64> {
    (bps.is_finite() && (1.0..=1e15).contains(&bps)).then(|| bps.round() as u64)
}

/// A rate in bits/s the way tc writes it: `100mbit`, `1.5gbit`, `64kbit`, `300bit`.
pub fn format_rate(bps: u64) -> String {
    for (unit, scale) in [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)] {
        if bps as f64 >= scale {
            let v = bps as f64 / scale;
            let text = format!("{v:.3}");
            let text = text.trim_end_matches('0').trim_end_matches('.');
            return format!("{text}{unit}");
        }
    }
    format!("{bps}bit")
}

/// A duration: `5ms`, `1.5ms`, `250us`, `2s`, `0`.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let err = || UnitError {
        value: s.to_owned(),
        what: "a duration",
        example: SPAN_EXAMPLE,
    };
    let (number, unit) = split(s);
    let value: f64 = number.parse().map_err(|_| err())?;
    let seconds = match unit {
        "s" | "sec" => value,
        "ms" | "msec" => value / 1e3,
        "us" | "usec" | "µs" => value / 1e6,
        "ns" => value / 1e9,
        "" if value == 0.0 => 0.0,
        _ => return Err(err()),
    };
    span_from_secs(seconds).ok_or_else(err)
}

/// Durations of a link are at most an hour: anything longer is a typo.
fn span_from_secs(seconds: f64) -> Option<Duration> {
    (seconds.is_finite() && (0.0..=3600.0).contains(&seconds))
        .then(|| Duration::from_secs_f64(seconds))
}

/// A duration the way tc writes it: `5ms`, `1.5ms`, `250us`, `2s`, `0`.
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0".to_owned();
    }
    for (unit, scale) in [("s", 1e9), ("ms", 1e6), ("us", 1e3)] {
        if ns as f64 >= scale {
            let text = format!("{:.3}", ns as f64 / scale);
            let text = text.trim_end_matches('0').trim_end_matches('.');
            return format!("{text}{unit}");
        }
    }
    format!("{ns}ns")
}

/// A probability: `1%`, `0.5%`, or a fraction `0.01`.
pub fn parse_percent(s: &str) -> Result<f64, UnitError> {
    let err = || UnitError {
        value: s.to_owned(),
        what: "a loss rate",
        example: FRACTION_EXAMPLE,
    };
    let t = s.trim();
    let p = match t.strip_suffix('%') {
        Some(n) => n.trim().parse::<f64>().map_err(|_| err())? / 100.0,
        None => t.parse::<f64>().map_err(|_| err())?,
    };
    fraction(p).ok_or_else(err)
}

fn fraction(p: f64) -> Option<f64> {
    (0.0..=1.0).contains(&p).then_some(p)
}

/// A probability as a percentage, without trailing zeros: `5%`, `0.25%`, `0%`.
pub fn format_percent(p: f64) -> String {
    let text = format!("{:.6}", p * 100.0);
    format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
}

/// A number of bytes: `1500`, `64KB`, `10MB`, `1.5GB` (powers of 1,000), `64KiB`, `1MiB`
/// (powers of 1,024).
pub fn parse_bytes(s: &str) -> Result<u64, UnitError> {
    let err = || UnitError {
        value: s.to_owned(),
        what: "a size",
        example: "\"1500\", \"64KB\", \"10MB\" or \"1MiB\"",
    };
    let (number, unit) = split(s);
    let value: f64 = number.parse().map_err(|_| err())?;
    let factor = match unit {
        "" | "B" | "b" => 1.0,
        "KB" | "kB" | "kb" => 1e3,
        "MB" | "mb" => 1e6,
        "GB" | "gb" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(err()),
    };
    let bytes = value * factor;
    if !bytes.is_finite() || !(0.0..=1e15).contains(&bytes) {
        return Err(err());
    }
    Ok(bytes.round() as u64)
}

/// A number of bytes, read as written (`"10MB"`) or as a plain number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub u64);

impl std::str::FromStr for Bytes {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        parse_bytes(s).map(Bytes)
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, scale) in [("GB", 1e9), ("MB", 1e6), ("KB", 1e3)] {
            if self.0 as f64 >= scale {
                let text = format!("{:.3}", self.0 as f64 / scale);
                let text = text.trim_end_matches('0').trim_end_matches('.');
                return write!(f, "{text}{unit}");
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor {
            what: "a size",
            example: "\"10MB\" or 1500",
            parse: |s| parse_bytes(s).map(Bytes),
            number: |v, _| (0.0..=1e15).contains(&v).then(|| Bytes(v.round() as u64)),
            binary: false,
        })
    }
}

/// A link rate in bits per second (never zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate(u64);

impl Rate {
    /// None for zero, which is no rate.
    pub fn from_bps(bps: u64) -> Option<Rate> {
        (bps > 0).then_some(Rate(bps))
    }

    pub fn bps(self) -> u64 {
        self.0
    }

    /// Bytes per second, rounded down (the seeds' unit for `[[link_rates]]` and flows).
    pub fn bytes_per_sec(self) -> u64 {
        self.0 / 8
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_rate(self.0))
    }
}

impl std::str::FromStr for Rate {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        parse_rate(s).map(Rate)
    }
}

/// A duration of a link (delay, jitter): at most an hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(Duration);

impl Span {
    pub const ZERO: Span = Span(Duration::ZERO);

    /// None when longer than an hour.
    pub fn new(d: Duration) -> Option<Span> {
        (d <= Duration::from_secs(3600)).then_some(Span(d))
    }

    pub fn from_millis(ms: u64) -> Span {
        Span(Duration::from_millis(ms.min(3_600_000)))
    }

    pub fn duration(self) -> Duration {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl std::str::FromStr for Span {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        parse_duration(s).map(Span)
    }
}

/// A probability, from 0 to 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, PartialOrd)]
pub struct Fraction(f64);

impl Fraction {
    pub const ZERO: Fraction = Fraction(0.0);
    pub const ONE: Fraction = Fraction(1.0);

    /// None outside 0..=1.
    pub fn new(p: f64) -> Option<Fraction> {
        fraction(p).map(Fraction)
    }

    pub fn get(self) -> f64 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0.0
    }
}

impl fmt::Display for Fraction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_percent(self.0))
    }
}

impl std::str::FromStr for Fraction {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        parse_percent(s).map(Fraction)
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&format_rate(self.0))
        } else {
            s.serialize_u64(self.0)
        }
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&format_duration(self.0))
        } else {
            s.serialize_u64(self.0.as_nanos().min(u128::from(u64::MAX)) as u64)
        }
    }
}

impl Serialize for Fraction {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&format_percent(self.0))
        } else {
            s.serialize_f64(self.0)
        }
    }
}

/// Reads a unit from a string (its written form) or a number; `number` says what a plain
/// number means, `binary` whether the format is a binary one (exact numbers).
struct UnitVisitor<T> {
    what: &'static str,
    example: &'static str,
    parse: fn(&str) -> Result<T, UnitError>,
    number: fn(f64, bool) -> Option<T>,
    binary: bool,
}

impl<T> UnitVisitor<T> {
    fn bad_number<E: de::Error>(&self, v: impl fmt::Display) -> E {
        E::custom(UnitError {
            value: v.to_string(),
            what: self.what,
            example: self.example,
        })
    }
}

impl<T> Visitor<'_> for UnitVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} such as {}", self.what, self.example)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(E::custom)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        (self.number)(v, self.binary).ok_or_else(|| self.bad_number(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        (self.number)(v as f64, self.binary).ok_or_else(|| self.bad_number(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        (self.number)(v as f64, self.binary).ok_or_else(|| self.bad_number(v))
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let binary = !d.is_human_readable();
        d.deserialize_any(UnitVisitor {
            what: "a rate",
            example: RATE_EXAMPLE,
            parse: |s| parse_rate(s).map(Rate),
            // A plain number is bits per second.
            number: |v, _| rate_from_f64(v).map(Rate),
            binary,
        })
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let binary = !d.is_human_readable();
        d.deserialize_any(UnitVisitor {
            what: "a duration",
            example: SPAN_EXAMPLE,
            parse: |s| parse_duration(s).map(Span),
            // Nanoseconds on the wire; seconds where people write it.
            number: |v, binary| {
                if binary {
                    (0.0..=3.6e12)
                        .contains(&v)
                        .then(|| Span(Duration::from_nanos(v as u64)))
                } else {
                    span_from_secs(v).map(Span)
                }
            },
            binary,
        })
    }
}

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let binary = !d.is_human_readable();
        d.deserialize_any(UnitVisitor {
            what: "a loss rate",
            example: FRACTION_EXAMPLE,
            parse: |s| parse_percent(s).map(Fraction),
            number: |v, _| fraction(v).map(Fraction),
            binary,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_written_back_as_they_would_be_parsed() {
        for r in ["100mbit", "1.5gbit", "64kbit", "300bit", "2.048mbit"] {
            assert_eq!(format_rate(parse_rate(r).unwrap()), r);
        }
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("100mbit"), Ok(100_000_000));
        assert_eq!(parse_rate("1.5gbit"), Ok(1_500_000_000));
        assert_eq!(parse_rate("64kbit"), Ok(64_000));
        assert_eq!(parse_rate("1kbit"), Ok(1_000));
        assert_eq!(parse_rate("12mbps"), Ok(96_000_000));
        assert_eq!(parse_rate("1000000"), Ok(1_000_000));
        assert_eq!(parse_rate("10 Mbit"), Ok(10_000_000));
        for bad in ["fast", "10 parsecs", "-5mbit", "0mbit", ""] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert!(
            parse_rate("fast")
                .unwrap_err()
                .to_string()
                .contains("100mbit")
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5ms"), Ok(Duration::from_millis(5)));
        assert_eq!(parse_duration("1.5ms"), Ok(Duration::from_micros(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["5", "ms", "5 minutes", "-1ms", "2h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for d in ["5ms", "1.5ms", "250us", "2s", "0", "20ms"] {
            assert_eq!(format_duration(parse_duration(d).unwrap()), d);
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("1500"), Ok(1500));
        assert_eq!(parse_bytes("64KB"), Ok(64_000));
        assert_eq!(parse_bytes("10MB"), Ok(10_000_000));
        assert_eq!(parse_bytes("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_bytes("1MiB"), Ok(1_048_576));
        for bad in ["ten", "5 parsecs", "-1MB"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        assert_eq!(Bytes(10_000_000).to_string(), "10MB");
        assert_eq!(Bytes(1500).to_string(), "1.5KB");
    }

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("1%"), Ok(0.01));
        assert_eq!(parse_percent("0.5%"), Ok(0.005));
        assert_eq!(parse_percent("0.25"), Ok(0.25));
        for bad in ["150%", "-1%", "lots", "2"] {
            assert!(parse_percent(bad).is_err(), "{bad}");
        }
        for p in ["5%", "0.25%", "0%", "100%"] {
            assert_eq!(format_percent(parse_percent(p).unwrap()), p);
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Units {
        rate: Rate,
        delay: Span,
        loss: Fraction,
    }

    #[test]
    fn units_read_as_written_or_as_numbers_and_travel_exactly() {
        let written: Units =
            serde_json::from_str(r#"{"rate": "100mbit", "delay": "5ms", "loss": "1%"}"#).unwrap();
        let numbers: Units =
            serde_json::from_str(r#"{"rate": 100000000, "delay": 0.005, "loss": 0.01}"#).unwrap();
        assert_eq!(written, numbers);
        assert_eq!(
            serde_json::to_string(&written).unwrap(),
            r#"{"rate":"100mbit","delay":"5ms","loss":"1%"}"#
        );
        // The control protocol carries exact numbers (a 1 ns delay survives).
        let exact = Units {
            rate: Rate(123_456_789),
            delay: Span(Duration::from_nanos(1_000_001)),
            loss: Fraction(0.123456789),
        };
        let bytes = rmp_serde::to_vec_named(&exact).unwrap();
        assert_eq!(rmp_serde::from_slice::<Units>(&bytes).unwrap(), exact);
        let bad = serde_json::from_str::<Units>(r#"{"rate": "fast", "delay": "5ms", "loss": 0}"#)
            .unwrap_err()
            .to_string();
        assert!(bad.contains("\"fast\" is not a rate"), "{bad}");
        assert!(
            serde_json::from_str::<Units>(r#"{"rate": 1, "delay": "5ms", "loss": 2}"#).is_err()
        );
    }
}
