//! The run's result as a human table or as JSON (written by hand: a handful of fields).

use std::fmt::Write;

use crate::args::{Config, KeyPattern, Protocol};
use crate::stats::Latency;
use crate::worker::PhaseResult;

/// One line of the report: throughput and latency of a class of requests.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// Requests completed.
    pub count: u64,
    /// Requests per second.
    pub ops: f64,
    /// Latency summary (µs).
    pub lat: Latency,
}

fn rate(count: u64, r: &PhaseResult) -> f64 {
    let s = r.elapsed.as_secs_f64();
    if s > 0.0 {
        count as f64 / s
    } else {
        0.0
    }
}

/// The get, set and total rows of a phase.
pub fn rows(r: &PhaseResult) -> [(&'static str, Row); 3] {
    let s = &r.stats;
    let row = |count, h| Row {
        count,
        ops: rate(count, r),
        lat: Latency::of(h),
    };
    [
        ("get", row(s.gets, &s.get_latency)),
        ("set", row(s.sets, &s.set_latency)),
        ("total", row(s.requests(), &s.all_latency())),
    ]
}

fn pattern(p: KeyPattern) -> String {
    match p {
        KeyPattern::Sequential => "sequential".into(),
        KeyPattern::Uniform => "uniform".into(),
        KeyPattern::Zipf(e) => format!("zipf:{e}"),
    }
}

fn value_size(cfg: &Config) -> String {
    if cfg.value_min == cfg.value_max {
        cfg.value_min.to_string()
    } else {
        format!("{}-{}", cfg.value_min, cfg.value_max)
    }
}

/// The human-readable report.
pub fn table(cfg: &Config, phases: &[(&str, &PhaseResult)]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "mcbench -> {} ({:?}): {} thread(s) x {} conn(s), pipeline {}, set:get {}:{}, {} keys {}, value {} B{}",
        cfg.addr,
        cfg.protocol,
        cfg.threads,
        cfg.conns,
        cfg.pipeline,
        cfg.sets,
        cfg.gets,
        cfg.keys,
        pattern(cfg.pattern),
        value_size(cfg),
        if cfg.verify { ", verify" } else { "" }
    );
    for (name, r) in phases {
        let s = &r.stats;
        let _ = writeln!(
            o,
            "{name}: {:.2} s measured, hits {} misses {} errors {}{}",
            r.elapsed.as_secs_f64(),
            s.hits,
            s.misses,
            s.errors,
            if cfg.verify {
                format!(
                    ", verified {} hits, {} wrong, {} lost",
                    s.hits, s.verify_errors, s.lost
                )
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            o,
            "{:<6} {:>12} {:>12} {:>9} {:>9} {:>9} {:>9} {:>10}",
            "op", "requests", "ops/s", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs"
        );
        for (op, row) in rows(r) {
            if row.count == 0 && op != "total" {
                continue;
            }
            let l = row.lat;
            let _ = writeln!(
                o,
                "{op:<6} {:>12} {:>12.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.1}",
                row.count, row.ops, l.p50, l.p90, l.p99, l.p999, l.max
            );
        }
        if let Some(e) = &s.first_verify_error {
            let _ = writeln!(o, "first verify failure: {e}");
        }
        for f in r.failures.iter().take(5) {
            let _ = writeln!(o, "connection failure: {f}");
        }
    }
    o
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "null".into()
    }
}

/// The report as one JSON object.
pub fn json(cfg: &Config, phases: &[(&str, &PhaseResult)]) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "{{\"server\":{},\"protocol\":\"{}\",\"threads\":{},\"conns_per_thread\":{},\"pipeline\":{},\
         \"sets\":{},\"gets\":{},\"keys\":{},\"key_pattern\":{},\"value_min\":{},\"value_max\":{},\"verify\":{}",
        json_str(&cfg.addr.to_string()),
        match cfg.protocol {
            Protocol::Binary => "binary",
            Protocol::Text => "text",
        },
        cfg.threads,
        cfg.conns,
        cfg.pipeline,
        cfg.sets,
        cfg.gets,
        cfg.keys,
        json_str(&pattern(cfg.pattern)),
        cfg.value_min,
        cfg.value_max,
        cfg.verify
    );
    for (name, r) in phases {
        let s = &r.stats;
        let _ = write!(
            o,
            ",{}:{{\"seconds\":{},\"hits\":{},\"misses\":{},\"lost\":{},\"errors\":{},\"verify_errors\":{},\"failures\":[{}]",
            json_str(name),
            json_num(r.elapsed.as_secs_f64()),
            s.hits,
            s.misses,
            s.lost,
            s.errors,
            s.verify_errors,
            r.failures.iter().map(|f| json_str(f)).collect::<Vec<_>>().join(",")
        );
        for (op, row) in rows(r) {
            let l = row.lat;
            let _ = write!(
                o,
                ",{}:{{\"requests\":{},\"ops_per_sec\":{},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"mean_us\":{}}}",
                json_str(op),
                row.count,
                json_num(row.ops),
                json_num(l.p50),
                json_num(l.p90),
                json_num(l.p99),
                json_num(l.p999),
                json_num(l.max),
                json_num(l.mean)
            );
        }
        o.push('}');
    }
    o.push('}');
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
        assert_eq!(json_num(f64::NAN), "null");
        assert_eq!(json_num(1.5), "1.500");
    }
}
