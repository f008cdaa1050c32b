//! `GET /v2/usage`: tokens used by client key, model and day, as orcd counts them since it
//! started (`cargo xtask jobs usage` prints it).

use serde::{Deserialize, Serialize};

/// Totals of one key, model and day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageTotals {
    /// Jobs that finished (one per request; one per choice when `n` asks for several).
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    /// UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// The key's name (`name=` in the client token file), else its token's fingerprint;
    /// `anonymous` without authentication.
    pub key: String,
    pub model: String,
    #[serde(flatten)]
    pub totals: UsageTotals,
}

/// The answer of `GET /v2/usage[?since=YYYY-MM-DD]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    /// The first day reported, when `since` was given.
    pub since: Option<String>,
    /// By day, then key, then model.
    pub rows: Vec<UsageRow>,
}

/// Whether `day` is a `YYYY-MM-DD` date (the form `since` takes).
pub fn is_day(day: &str) -> bool {
    let bytes = day.as_bytes();
    bytes.len() == 10
        && bytes.iter().enumerate().all(|(index, byte)| match index {
            4 | 7 => *byte == b'-',
            _ => byte.is_ascii_digit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_year_month_day() {
        assert!(is_day("2026-12-06"));
        assert!(!is_day("2026-12-6"));
        assert!(!is_day("06-12-2026"));
        assert!(!is_day("2026/12/06"));
    }

    #[test]
    fn a_row_is_flat_on_the_wire() {
        let row = UsageRow {
            day: "2026-12-06".into(),
            key: "alice".into(),
            model: "m".into(),
            totals: UsageTotals {
                requests: 1,
                prompt_tokens: 2,
                completion_tokens: 3,
            },
        };
        let json = serde_json::to_value(&row).unwrap();
        assert_eq!(json["prompt_tokens"], 2);
        assert_eq!(serde_json::from_value::<UsageRow>(json).unwrap(), row);
    }
}
