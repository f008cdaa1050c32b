//! The bench's figures: each one defined once (name, unit, how it is measured), its samples in
//! up to two columns, and the markdown table with the median and spread of every column and
//! the ratio of their medians, with the spread of the runs' own ratios.

use serde::Serialize;

/// Whether a bigger number is better, so that the ratio column reads the right way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Higher,
    Lower,
}

/// One measured quantity with its samples per column (the comparison's two sides).
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: &'static str,
    pub unit: &'static str,
    /// How the figure is measured, printed under the table.
    pub definition: &'static str,
    pub better: Better,
    /// Samples of each column, in the order of the table's columns; empty when not measured.
    pub columns: Vec<Vec<f64>>,
}

impl Figure {
    pub fn new(
        name: &'static str,
        unit: &'static str,
        better: Better,
        definition: &'static str,
        columns: usize,
    ) -> Figure {
        Figure {
            name,
            unit,
            definition,
            better,
            columns: vec![Vec::new(); columns],
        }
    }

    pub fn push(&mut self, column: usize, value: f64) {
        if value.is_finite() {
            self.columns[column].push(value);
        }
    }

    /// Whether any column holds a sample: a figure the run skipped is left out of its table.
    pub fn measured(&self) -> bool {
        self.columns.iter().any(|column| !column.is_empty())
    }

    /// Each run's own ratio (second column over first), when both columns hold one sample per
    /// run: the spread of the ratio, beside the ratio of the medians.
    pub fn run_ratios(&self) -> Vec<f64> {
        let [first, second] = self.columns.as_slice() else {
            return Vec::new();
        };
        if first.len() != second.len() {
            return Vec::new();
        }
        (first.iter().zip(second))
            .filter(|(first, _)| **first > 0.0)
            .map(|(first, second)| second / first)
            .collect()
    }

    pub fn ratio(&self) -> Option<f64> {
        let first = median(self.columns.first()?)?;
        let second = median(self.columns.get(1)?)?;
        (first > 0.0).then(|| second / first)
    }
}

/// The true median: the middle sample, or the mean of the two middle ones.
pub fn median(samples: &[f64]) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    })
}

/// The p-th percentile (0..=100) by nearest rank.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// `median [min–max]`, with as many decimals as the size of the number needs.
fn cell(samples: &[f64]) -> String {
    let Some(middle) = median(samples) else {
        return "–".into();
    };
    let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
    let max = samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if samples.len() == 1 {
        return number(middle);
    }
    format!("{} [{}–{}]", number(middle), number(min), number(max))
}

fn number(value: f64) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// A markdown table: one row per figure, a column per side with `median [min–max]`, then the
/// ratio of the medians (second over first), then the definitions as a numbered list.
pub fn markdown(headers: [&str; 2], figures: &[Figure]) -> String {
    let mut text = format!(
        "| figure | {} | {} | {} / {} |\n|---|---|---|---|\n",
        headers[0], headers[1], headers[1], headers[0]
    );
    for (index, figure) in figures.iter().enumerate() {
        let column = |at: usize| figure.columns.get(at).map_or("–".into(), |s| cell(s));
        let ratio = figure.ratio().map_or("–".into(), |ratio| {
            let better = match figure.better {
                Better::Higher => "higher is better",
                Better::Lower => "lower is better",
            };
            let runs = figure.run_ratios();
            if runs.len() < 2 {
                return format!("{ratio:.2} ({better})");
            }
            let min = runs.iter().copied().fold(f64::INFINITY, f64::min);
            let max = runs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{ratio:.2} [{min:.2}–{max:.2}] ({better})")
        });
        text.push_str(&format!(
            "| {}. {} ({}) | {} | {} | {} |\n",
            index + 1,
            figure.name,
            figure.unit,
            column(0),
            column(1),
            ratio
        ));
    }
    text.push('\n');
    for (index, figure) in figures.iter().enumerate() {
        text.push_str(&format!(
            "{}. {}: {}\n",
            index + 1,
            figure.name,
            figure.definition
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_or_the_mean_of_the_two_middle_samples() {
        assert_eq!(median(&[50.0, 90.0, 70.0]), Some(70.0));
        assert_eq!(median(&[50.0, 90.0]), Some(70.0));
        assert_eq!(median(&[3.0, 1.0, 4.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[5.0], 99.0), Some(5.0));
    }

    #[test]
    fn each_figure_has_its_own_medians_not_those_of_another_figures_run() {
        // Run 1 has the median decode rate but the worst first-token time: the table must
        // show each figure's own median.
        let mut decode = Figure::new("decode", "tok/s", Better::Higher, "d", 2);
        let mut first = Figure::new("first", "ms", Better::Lower, "f", 2);
        for (rate, ttft) in [(80.0, 300.0), (70.0, 100.0), (90.0, 120.0)] {
            decode.push(1, rate);
            first.push(1, ttft);
        }
        assert_eq!(median(&decode.columns[1]), Some(80.0));
        assert_eq!(median(&first.columns[1]), Some(120.0));
    }

    #[test]
    fn the_table_has_medians_spreads_ratios_and_definitions() {
        let mut decode = Figure::new(
            "single-stream decode",
            "tok/s",
            Better::Higher,
            "tokens after the first over their time",
            2,
        );
        for (a, b) in [(100.0, 90.0), (80.0, 95.0), (90.0, 91.0)] {
            decode.push(0, a);
            decode.push(1, b);
        }
        let mut rss = Figure::new("RSS", "MB", Better::Lower, "resident memory", 2);
        rss.push(1, 400.0);
        rss.push(0, f64::NAN);
        let table = markdown(["llama-server", "worker"], &[decode, rss]);
        assert!(
            table.contains("| 1. single-stream decode (tok/s) | 90.0 [80.0–100] | 91.0 [90.0–95.0] | 1.01 [0.90–1.19] (higher is better) |"),
            "{table}"
        );
        assert!(table.contains("| 2. RSS (MB) | – | 400 | – |"), "{table}");
        assert!(table.contains("1. single-stream decode: tokens after the first over their time"));
    }
}
