//! What a run measured, as written to (and read back from) its JSON file.

use serde::{Deserialize, Serialize};

/// Everything one system measured in one `sync-bench run`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SystemResults {
    /// How the report names the system, e.g. `Tidemark (SQLite)`.
    pub label: String,
    /// `tidemark` or `kinto`.
    pub dialect: String,
    /// The parameters the run used, for the report.
    pub params: serde_json::Value,
    /// Push throughput, one entry per client count.
    pub push: Vec<PushResult>,
    /// Initial pull.
    pub pull: Option<PullResult>,
    /// Open-loop latency.
    pub latency: Option<LatencyResult>,
    /// Latency while a collection grows.
    pub growth: Option<GrowthResult>,
}

/// Push throughput with one number of concurrent clients.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PushResult {
    /// Concurrent clients, each pushing to its own collection.
    pub clients: usize,
    /// Records per push.
    pub batch: usize,
    /// Every repetition.
    pub runs: Vec<PushRun>,
    /// The median of the runs' records per second.
    pub median_records_per_s: f64,
}

/// One repetition of the push test.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PushRun {
    /// Records acknowledged.
    pub records: u64,
    /// From the first push sent to the last answer read.
    pub seconds: f64,
    /// `records / seconds`.
    pub records_per_s: f64,
    /// Whether the time cap stopped the clients before they pushed everything prepared.
    pub capped: bool,
}

/// Initial pull of a large collection into an empty client.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PullResult {
    /// Records in the collection.
    pub records: u64,
    /// The page size asked for.
    pub page: usize,
    /// Every repetition.
    pub runs: Vec<PullRun>,
    /// Median records per second.
    pub median_records_per_s: f64,
    /// Median time from the first request to the last byte of the last page.
    pub median_seconds: f64,
    /// How fast the collection was loaded through the API beforehand (batches of
    /// `load_batch`), for context; none if it was preloaded outside the API.
    pub load_records_per_s: Option<f64>,
}

/// One repetition of the pull test.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PullRun {
    /// Time to the last byte.
    pub seconds: f64,
    /// `records / seconds`.
    pub records_per_s: f64,
    /// Requests made.
    pub pages: usize,
}

/// Open-loop latency of a push/pull mix.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LatencyResult {
    /// Requests per second scheduled.
    pub rate: f64,
    /// Measured seconds per repetition (after the warm-up).
    pub seconds: f64,
    /// Every repetition.
    pub runs: Vec<LatencyRun>,
    /// Median of the runs' p50, in milliseconds.
    pub median_p50_ms: f64,
    /// Median of the runs' p99.
    pub median_p99_ms: f64,
    /// Median of the runs' p99.9.
    pub median_p999_ms: f64,
    /// Median of the runs' achieved request rates.
    pub median_achieved_rate: f64,
    /// Failed requests, summed over the runs.
    pub errors: u64,
    /// Of those, requests abandoned at the latency timeout, summed over the runs.
    pub timeouts: u64,
}

/// One repetition of the latency test.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LatencyRun {
    /// Requests measured (warm-up excluded).
    pub requests: u64,
    /// Of those, how many failed. Failures are not timed, except timeouts.
    pub errors: u64,
    /// Of the failures, requests abandoned at the latency timeout (timed at that latency).
    pub timeouts: u64,
    /// Requests answered successfully (warm-up included) over the time from the first one's
    /// due time to the last answer: the rate the server actually served.
    pub achieved_rate: f64,
    /// Percentiles of all requests, from the scheduled start to the last byte, in ms.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// The slowest.
    pub max_ms: f64,
    /// p99 of the pushes alone.
    pub push_p99_ms: f64,
    /// p99 of the pulls alone.
    pub pull_p99_ms: f64,
}

/// Latency while one collection grows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GrowthResult {
    /// One point per size reached.
    pub points: Vec<GrowthPoint>,
    /// The size aimed at.
    pub target: u64,
    /// The size reached.
    pub reached: u64,
    /// Whether the time budget stopped the growth before `target`.
    pub stopped_by_budget: bool,
    /// The budget, in seconds.
    pub budget_seconds: f64,
    /// How long the growth took.
    pub seconds: f64,
}

impl GrowthResult {
    /// How many points at each end [`GrowthResult::ends`] compares: three, or half the points
    /// if there are fewer than six.
    pub fn end_points(&self) -> usize {
        (self.points.len() / 2).clamp(1, 3)
    }

    /// The median of `metric` over the first [`GrowthResult::end_points`] points and over the
    /// last as many, or `None` without points. Single points are medians of a handful of
    /// samples and one of them can catch the machine busy; a trend shows in both groups.
    pub fn ends(&self, metric: fn(&GrowthPoint) -> f64) -> Option<(f64, f64)> {
        if self.points.is_empty() {
            return None;
        }
        let k = self.end_points();
        let values: Vec<f64> = self.points.iter().map(metric).collect();
        Some((median(&values[..k]), median(&values[values.len() - k..])))
    }
}

/// Latency at one size.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GrowthPoint {
    /// Records in the collection when the samples began.
    pub size: u64,
    /// Median latency of a push of one batch of new records, in ms.
    pub push_ms: f64,
    /// Median latency of pulling the changes that push made (one batch), in ms.
    pub pull_ms: f64,
    /// How fast the records since the previous point were loaded (0 if none were).
    pub load_records_per_s: f64,
}

/// The median (the mean of the middle two for an even count); NaN for none.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::{median, GrowthPoint, GrowthResult};

    #[test]
    fn growth_ends_compare_up_to_three_points_at_each_end() {
        let growth = |pushes: &[f64]| GrowthResult {
            points: pushes
                .iter()
                .enumerate()
                .map(|(i, &push_ms)| GrowthPoint {
                    size: i as u64,
                    push_ms,
                    pull_ms: 0.0,
                    load_records_per_s: 0.0,
                })
                .collect(),
            target: 0,
            reached: 0,
            stopped_by_budget: false,
            budget_seconds: 0.0,
            seconds: 0.0,
        };
        let push = |p: &GrowthPoint| p.push_ms;
        assert_eq!(growth(&[]).ends(push), None);
        assert_eq!(growth(&[2.0]).ends(push), Some((2.0, 2.0)));
        assert_eq!(growth(&[2.0, 4.0]).ends(push), Some((2.0, 4.0)));
        assert_eq!(
            growth(&[1.0, 2.0, 9.0, 3.0, 5.0]).ends(push),
            Some((1.5, 4.0))
        );
        // One slow point at either end does not move its group's median.
        let points = [1.0, 9.0, 2.0, 7.0, 7.0, 3.0, 4.0, 30.0, 5.0];
        assert_eq!(growth(&points).ends(push), Some((2.0, 5.0)));
    }

    #[test]
    fn median_takes_the_middle() {
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
