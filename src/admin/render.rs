//! How admin answers are shown: as JSON with `--json`, else as text a person reads — objects as
//! `key: value` lines, lists of objects as aligned tables. Times are RFC 3339 in UTC either way.

use std::{fmt::Write, time::SystemTime};

use roost_protocol::Timestamp;
use serde_json::Value;

/// `value` as text.
pub fn text(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, 0);
    out
}

fn write_value(out: &mut String, value: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match value {
        Value::Array(items) if items.is_empty() => {
            let _ = writeln!(out, "{pad}(none)");
        }
        Value::Array(items) if items.iter().all(Value::is_object) => table(out, items, &pad),
        Value::Array(items) => {
            for item in items {
                let _ = writeln!(out, "{pad}- {}", cell(item));
            }
        }
        Value::Object(fields) => {
            for (key, field) in fields {
                let label = key.replace('_', " ");
                match field {
                    Value::Object(_) | Value::Array(_) => {
                        let _ = writeln!(out, "{pad}{label}:");
                        write_value(out, field, indent + 2);
                    }
                    scalar => {
                        let _ = writeln!(out, "{pad}{label}: {}", cell(scalar));
                    }
                }
            }
        }
        scalar => {
            let _ = writeln!(out, "{pad}{}", cell(scalar));
        }
    }
}

/// Rows of objects under a header of every key they have, in the order first met.
fn table(out: &mut String, rows: &[Value], pad: &str) {
    let mut columns: Vec<&str> = Vec::new();
    for row in rows.iter().filter_map(Value::as_object) {
        for key in row.keys() {
            if !columns.contains(&key.as_str()) {
                columns.push(key);
            }
        }
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| columns.iter().map(|c| cell(&row[*c])).collect())
        .collect();
    let header: Vec<String> = columns.iter().map(|c| c.replace('_', " ")).collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            cells
                .iter()
                .map(|row| row[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    for line in std::iter::once(&header).chain(&cells) {
        let mut text = pad.to_owned();
        for (i, value) in line.iter().enumerate() {
            let _ = write!(text, "{value:<width$}  ", width = widths[i]);
        }
        let _ = writeln!(out, "{}", text.trim_end());
    }
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Object(_) | Value::Array(_) => value.to_string(),
        other => other.to_string(),
    }
}

/// A timestamp as RFC 3339, in UTC.
pub fn time(at: Timestamp) -> String {
    let secs = at.0;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

pub fn time_of(at: SystemTime) -> String {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    time(Timestamp(secs))
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A duration as an admin types it — a whole number and a unit: `90s`, `30m`, `12h`, `7d`,
/// `2w` — in seconds.
pub fn parse_duration(given: &str) -> Result<u64, String> {
    let given = given.trim();
    let split = given
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(given.len());
    let (number, unit) = given.split_at(split);
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "{given:?} is not a duration: a whole number and a unit, s, m, h, d or w (e.g. 7d)"
            ))
        }
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{given:?} does not start with a whole number (e.g. 7d)"))?;
    match number.checked_mul(unit_secs) {
        Some(0) => Err("a duration must be more than zero".into()),
        Some(secs) => Ok(secs),
        None => Err(format!("{given:?} is too long")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc_3339_in_utc() {
        assert_eq!(time(Timestamp(0)), "1970-01-01T00:00:00Z");
        assert_eq!(time(Timestamp(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(time(Timestamp(1_796_040_000)), "2026-11-30T12:00:00Z");
    }

    #[test]
    fn durations_take_a_number_and_a_unit() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert_eq!(parse_duration("2w"), Ok(1_209_600));
        for bad in ["", "7", "d", "7 days", "-1d", "0h", "99999999999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_list_of_objects_is_a_table_with_a_column_per_key() {
        let value = serde_json::json!([
            { "user": "alice@a.test", "clients": 2 },
            { "user": "bob@a.test", "clients": 10, "deleted": null },
        ]);
        assert_eq!(
            text(&value),
            "user          clients  deleted\nalice@a.test  2        -\nbob@a.test    10       -\n"
        );
    }
}
