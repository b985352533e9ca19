//! How validation collects problems (`Problems`, each with its path), and the value checks
//! every part of the configuration shares (durations, DNS names).

use std::time::Duration;

use super::Problem;

/// Parses a duration written with its unit (`"800ms"`, `"5s"`, `"1m"`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("not a duration ({e}); write it with a unit, e.g. \"500ms\" or \"5s\"")
    })
}

#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<Problem>);

impl Problems {
    pub(super) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem::new(path, message));
    }

    pub(super) fn duration(
        &mut self,
        path: &str,
        value: Option<&String>,
        default: Duration,
    ) -> Duration {
        let Some(text) = value else { return default };
        match parse_duration(text) {
            Ok(d) if d.is_zero() => {
                self.add(path, "must be greater than zero");
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.add(path, e);
                default
            }
        }
    }

    pub(super) fn ranged(
        &mut self,
        path: &str,
        value: Option<i64>,
        default: u32,
        min: i64,
        max: i64,
    ) -> u32 {
        match value {
            None => default,
            Some(v) if (min..=max).contains(&v) => v as u32,
            Some(v) => {
                self.add(path, format!("{v} is out of range; use {min}..={max}"));
                default
            }
        }
    }
}

/// Checks a DNS name as written in the configuration (trailing dot optional).
pub(super) fn check_dns_name(name: &str) -> Result<(), String> {
    let trimmed = name.trim().trim_end_matches('.');
    if trimmed.is_empty() {
        return Err("empty name".into());
    }
    if trimmed.len() > 253 {
        return Err(format!("{name:?} is longer than 253 characters"));
    }
    for label in trimmed.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "{name:?} is not a DNS name (empty label or label over 63 characters)"
            ));
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "{name:?} is not a DNS name (use letters, digits, '-', '_')"
            ));
        }
    }
    Ok(())
}
