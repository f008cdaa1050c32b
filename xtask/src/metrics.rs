//! Reading samples out of a Prometheus text exposition (a worker's or orcd's `/metrics`).

/// The value of the sample `name` (exactly that name, no labels) in a Prometheus text
/// exposition such as a worker's `/metrics`.
pub fn metric_sample(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_values_are_read_by_exact_name() {
        let exposition = "# HELP llorch_worker_threads Threads\n\
                          llorch_worker_threads 2\n\
                          llorch_worker_thread_changes_total 5\n\
                          llorch_worker_slots{state=\"busy\"} 1\n";
        assert_eq!(
            metric_sample(exposition, "llorch_worker_threads"),
            Some(2.0)
        );
        assert_eq!(
            metric_sample(exposition, "llorch_worker_thread_changes_total"),
            Some(5.0)
        );
        assert_eq!(metric_sample(exposition, "llorch_worker_slots"), None);
        assert_eq!(metric_sample(exposition, "llorch_worker_thread"), None);
    }
}
