//! Units as people write them in configs and on the command line, tc's way: rates in
//! `bit`/`kbit`/`mbit`/`gbit` (powers of 1,000; `bps`/`kbps`/`mbps`/`gbps` are bytes per
//! second), durations in `s`/`ms`/`us`, loss in percent.

use std::time::Duration;

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

/// A rate in bits per second: `100mbit`, `1.5gbit`, `64kbit`, `12500kbps` (bytes), `1000000`.
pub fn parse_rate(s: &str) -> Result<u64, UnitError> {
    let err = || UnitError {
        value: s.to_owned(),
        what: "a rate",
        example: "\"100mbit\" (bits/s) or \"12mbps\" (bytes/s)",
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
    let bps = value * factor;
    if !bps.is_finite() || !(1.0..=1e15).contains(&bps) {
        return Err(err());
    }
    Ok(bps.round() as u64)
}

/// A duration: `5ms`, `1.5ms`, `250us`, `2s`, `0`.
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

pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let err = || UnitError {
        value: s.to_owned(),
        what: "a duration",
        example: "\"5ms\", \"250us\" or \"1s\"",
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
    if !seconds.is_finite() || !(0.0..=3600.0).contains(&seconds) {
        return Err(err());
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A probability: `1%`, `0.5%`, or a fraction `0.01`.
pub fn parse_percent(s: &str) -> Result<f64, UnitError> {
    let err = || UnitError {
        value: s.to_owned(),
        what: "a loss rate",
        example: "\"1%\" or \"0.01\"",
    };
    let t = s.trim();
    let p = match t.strip_suffix('%') {
        Some(n) => n.trim().parse::<f64>().map_err(|_| err())? / 100.0,
        None => t.parse::<f64>().map_err(|_| err())?,
    };
    if !(0.0..=1.0).contains(&p) {
        return Err(err());
    }
    Ok(p)
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
        for bad in ["5", "ms", "5 minutes", "-1ms"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("1%"), Ok(0.01));
        assert_eq!(parse_percent("0.5%"), Ok(0.005));
        assert_eq!(parse_percent("0.25"), Ok(0.25));
        for bad in ["150%", "-1%", "lots", "2"] {
            assert!(parse_percent(bad).is_err(), "{bad}");
        }
    }
}
