//! A strict reader of the Prometheus text exposition format (version 0.0.4), so that a test
//! can both check that `/metrics` is well formed and read values out of it.
//!
//! Checked: the syntax of every line (names, labels and their escapes, values, optional
//! timestamps); `# TYPE` at most once per family, before its samples, with a known type; no
//! series twice; the samples of one family together; counters not negative; histograms with
//! `le` on every bucket, cumulative bucket counts, a `+Inf` bucket equal to `_count`, and a
//! `_sum`.

use std::collections::{BTreeMap, HashMap, HashSet};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name, with any `_bucket`/`_sum`/`_count`/`_total` suffix it was written with.
    pub name: String,
    /// The labels, by name.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// A whole scrape.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Every sample, in the order given.
    pub samples: Vec<Sample>,
    /// The declared type of each family.
    pub types: HashMap<String, String>,
}

impl Metrics {
    /// Parses and checks a scrape; the error names the line and what is wrong with it.
    pub fn parse(text: &str) -> Result<Metrics, String> {
        let mut metrics = Metrics::default();
        let mut seen_series = HashSet::new();
        let mut finished_families: HashSet<String> = HashSet::new();
        let mut current_family: Option<String> = None;
        let mut helped = HashSet::new();
        for (number, line) in text.lines().enumerate() {
            let at = |why: String| format!("line {}: {why}: {line:?}", number + 1);
            if line.trim().is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let words: Vec<&str> = comment.trim_start().splitn(3, ' ').collect();
                match words.first().copied() {
                    Some("TYPE") => {
                        let (Some(name), Some(kind)) = (words.get(1), words.get(2)) else {
                            return Err(at("a TYPE line needs a name and a type".into()));
                        };
                        check_name(name).map_err(at)?;
                        let kind = kind.trim();
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind)
                        {
                            return Err(at(format!("unknown type {kind:?}")));
                        }
                        if metrics.types.contains_key(*name) {
                            return Err(at(format!("a second TYPE for {name}")));
                        }
                        if metrics
                            .samples
                            .iter()
                            .any(|s| family_of(&s.name, &metrics.types) == *name)
                        {
                            return Err(at(format!("TYPE for {name} after its samples")));
                        }
                        metrics.types.insert(name.to_string(), kind.to_string());
                    }
                    Some("HELP") => {
                        let Some(name) = words.get(1) else {
                            return Err(at("a HELP line needs a name".into()));
                        };
                        check_name(name).map_err(at)?;
                        if !helped.insert(name.to_string()) {
                            return Err(at(format!("a second HELP for {name}")));
                        }
                    }
                    _ => {} // any other comment
                }
                continue;
            }
            let sample = parse_sample(line).map_err(at)?;
            let family = family_of(&sample.name, &metrics.types);
            if current_family.as_deref() != Some(family.as_str()) {
                if finished_families.contains(&family) {
                    return Err(at(format!("the samples of {family} are not together")));
                }
                if let Some(previous) = current_family.replace(family.clone()) {
                    finished_families.insert(previous);
                }
            }
            let key = (sample.name.clone(), sample.labels.clone());
            if !seen_series.insert(key) {
                return Err(at("the same series twice".into()));
            }
            if metrics.types.get(&family).map(String::as_str) == Some("counter")
                && sample.value < 0.0
            {
                return Err(at("a negative counter".into()));
            }
            metrics.samples.push(sample);
        }
        metrics.check_histograms()?;
        Ok(metrics)
    }

    fn check_histograms(&self) -> Result<(), String> {
        for (family, kind) in &self.types {
            if kind != "histogram" {
                continue;
            }
            // Group buckets by their labels other than `le`.
            let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
            for sample in self
                .samples
                .iter()
                .filter(|s| s.name == format!("{family}_bucket"))
            {
                let mut labels = sample.labels.clone();
                let le = labels
                    .remove("le")
                    .ok_or_else(|| format!("{family}_bucket without le: {sample:?}"))?;
                let le = parse_value(&le).map_err(|e| format!("{family}: le {e}"))?;
                series.entry(labels).or_default().push((le, sample.value));
            }
            for (labels, mut buckets) in series {
                buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                    return Err(format!(
                        "{family}{labels:?}: bucket counts are not cumulative: {buckets:?}"
                    ));
                }
                let Some(&(top, inf_count)) = buckets.last().filter(|b| b.0 == f64::INFINITY)
                else {
                    return Err(format!("{family}{labels:?}: no +Inf bucket"));
                };
                debug_assert!(top.is_infinite());
                let count = self.value(&format!("{family}_count"), &labels_of(&labels));
                if count != Some(inf_count) {
                    return Err(format!(
                        "{family}{labels:?}: _count {count:?} is not the +Inf bucket {inf_count}"
                    ));
                }
                if self
                    .value(&format!("{family}_sum"), &labels_of(&labels))
                    .is_none()
                {
                    return Err(format!("{family}{labels:?}: no _sum"));
                }
            }
        }
        Ok(())
    }

    /// The value of the one series named `name` whose labels are exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    /// The sum over every series named `name` that has (at least) `labels`; 0 if none.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// Every series named `name`.
    pub fn series(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }
}

fn labels_of(labels: &BTreeMap<String, String>) -> Vec<(&str, &str)> {
    labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// The family a sample belongs to: its name, less a histogram or summary suffix when the
/// family without it was declared so.
fn family_of(name: &str, types: &HashMap<String, String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if matches!(
                types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            ) {
                return base.to_string();
            }
        }
    }
    name.to_string()
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("bad metric name {name:?}"))
    }
}

fn check_label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(format!("bad label name {name:?}"))
    }
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text
            .parse::<f64>()
            .map_err(|_| format!("bad value {text:?}")),
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("a sample needs a value")?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let end;
        loop {
            // Skip a separating comma (a trailing one is allowed), then `}` or a label.
            while let Some((_, ' ')) = chars.peek() {
                chars.next();
            }
            match chars.peek() {
                Some((i, '}')) => {
                    end = *i;
                    break;
                }
                Some(_) => {}
                None => return Err("unterminated labels".into()),
            }
            let start = chars.peek().unwrap().0;
            let mut eq = None;
            for (i, c) in chars.by_ref() {
                if c == '=' {
                    eq = Some(i);
                    break;
                }
            }
            let eq = eq.ok_or("a label without =")?;
            let label = after[start..eq].trim();
            check_label_name(label)?;
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label {label}: the value must be quoted"));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("label {label}: bad escape {other:?}")),
                    },
                    Some((_, '\n')) => return Err(format!("label {label}: a raw newline")),
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("label {label}: unterminated value")),
                }
            }
            if labels.insert(label.to_string(), value).is_some() {
                return Err(format!("label {label} twice"));
            }
            match chars.peek() {
                Some((_, ',')) => {
                    chars.next();
                }
                Some((_, '}')) => {}
                _ => return Err(format!("after label {label}: expected , or }}")),
            }
        }
        rest = &after[end + 1..];
    }
    let mut fields = rest.split_whitespace();
    let value = parse_value(fields.next().ok_or("a sample needs a value")?)?;
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("bad timestamp {timestamp:?}"))?;
    }
    if fields.next().is_some() {
        return Err("text after the timestamp".into());
    }
    if !rest.starts_with(' ') {
        return Err("the value must follow a space".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_counters_gauges_and_histograms() {
        let text = "# HELP a_total things\n# TYPE a_total counter\na_total{op=\"push\",status=\"200\"} 3\n\
                    # TYPE g gauge\ng 1.5\n# TYPE h histogram\nh_bucket{op=\"x\",le=\"0.1\"} 1\n\
                    h_bucket{op=\"x\",le=\"+Inf\"} 2\nh_sum{op=\"x\"} 0.3\nh_count{op=\"x\"} 2\n\
                    e{v=\"a\\\"b\\\\c\\n\"} 0 1700000000000\n";
        let m = Metrics::parse(text).unwrap();
        assert_eq!(
            m.value("a_total", &[("op", "push"), ("status", "200")]),
            Some(3.0)
        );
        assert_eq!(m.value("g", &[]), Some(1.5));
        assert_eq!(m.sum("h_bucket", &[("le", "+Inf")]), 2.0);
        assert_eq!(m.series("e")[0].labels["v"], "a\"b\\c\n");
    }

    #[test]
    fn rejects_what_prometheus_would() {
        for bad in [
            "1bad 1\n",
            "a{b=c} 1\n",
            "a 1 2 3\n",
            "a{b=\"c\"}1\n",
            "a{b=\"c\",b=\"d\"} 1\n",
            "a 1\na 2\n",
            "a 1\nb 1\na{x=\"y\"} 1\n",
            "a 1\n# TYPE a counter\n",
            "# TYPE a counter\n# TYPE a counter\n",
            "# TYPE a counter\na -1\n",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",
            "# TYPE a frobnicator\n",
        ] {
            assert!(Metrics::parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
