//! Durations as written in process files: `30s`, `25m`, `2h`, `1d`, `1h30m`, `250ms`, or a
//! bare number of seconds (Corezoid's unit). A duration may also be a template, rendered
//! when the task gets there.

use std::fmt;
use std::time::Duration;

use conveyor_template::Template;

/// A duration fixed in the file, or a template that renders to one.
#[derive(Debug, Clone, PartialEq)]
pub enum DurationSpec {
    Fixed(Duration),
    Template(Template),
}

/// Longest duration accepted: about 100 years, far beyond any sensible wait.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Parses `30s`, `25m`, `1h30m`, `250ms`, `90` (seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return checked(Duration::from_secs(seconds), text);
    }
    let bytes = text.as_bytes();
    let mut total = Duration::ZERO;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(bad(text));
        }
        let amount: u64 = text[start..i].parse().map_err(|_| bad(text))?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit_millis: u64 = match &text[unit_start..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad(text)),
        };
        let millis = amount
            .checked_mul(unit_millis)
            .ok_or_else(|| too_long(text))?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or_else(|| too_long(text))?;
    }
    checked(total, text)
}

fn checked(duration: Duration, text: &str) -> Result<Duration, String> {
    if duration > MAX_DURATION {
        Err(too_long(text))
    } else {
        Ok(duration)
    }
}

fn bad(text: &str) -> String {
    format!("`{text}` is not a duration (write e.g. `30s`, `25m`, `2h`, `1d`, `1h30m`, `250ms`)")
}

fn too_long(text: &str) -> String {
    format!("`{text}` is longer than the 100 years a duration may be")
}

/// Writes a duration the way a person would: `25m`, `1h30m`, `250ms`.
pub fn format_duration(duration: Duration) -> String {
    let mut millis = duration.as_millis();
    if millis == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if millis >= size {
            out.push_str(&format!("{}{unit}", millis / size));
            millis %= size;
        }
    }
    out
}

impl fmt::Display for DurationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationSpec::Fixed(d) => f.write_str(&format_duration(*d)),
            DurationSpec::Template(_) => f.write_str("(template)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("25m"), Ok(Duration::from_secs(1500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration(" 5m "), Ok(Duration::from_secs(300)));
    }

    #[test]
    fn bad_durations() {
        for text in [
            "",
            "m",
            "5x",
            "5 m",
            "-5s",
            "1.5h",
            "s5",
            "99999999999999999999d",
            "40000d",
        ] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
    }

    #[test]
    fn formatting_round_trips() {
        for text in ["25m", "1h30m", "250ms", "1d2h", "30s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }
}
