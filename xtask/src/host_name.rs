//! This machine's host name, as worker ids use it.

/// This machine's host name up to the first dot, reduced to characters valid in a worker id.
pub fn hostname_label() -> String {
    let name = gethostname::gethostname().to_string_lossy().into_owned();
    let label: String = name
        .split('.')
        .next()
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let label = label.trim_matches('-');
    if label.is_empty() {
        "localhost".to_owned()
    } else {
        label.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_label_is_a_valid_daemon_name_part() {
        let label = hostname_label();
        crate::daemon::validate_name(&format!("worker-{label}-9001")).unwrap();
        assert!(!label.contains('.'));
    }
}
