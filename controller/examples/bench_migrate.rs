//! `scripts/bench migrate [FILES]`: converts job files with 5 legacy tags each, one file at a time
//! (read, convert, write), and prints total time, files/s and peak RSS after 1,000 files and at
//! the end, to show memory stays flat in the number of files. Goal: 10,000 files under 1 s.

use std::path::Path;
use std::time::{Duration, Instant};

use proxy_operator::migrate::ConvertOptions;
use proxy_operator::migrate::files::{Format, migrate_text};

fn job(i: usize) -> String {
    format!(
        r#"# generated job {i}
job "app-{i}" {{
  datacenters = ["dc1"]

  group "web" {{
    network {{
      port "http" {{}}
    }}

    service {{
      name = "app-{i}"
      port = "http"
      tags = [
        "https://app-{i}.example.org", # HinD site
        "https://canary-app-{i}.example.org/api*",
        "urlprefix-app-{i}.example.org:80/ redirect=308,https://app-{i}.example.org$path",
        "urlprefix-app-{i}-admin.example.org/ allow=ip:10.0.0.0/8 strip=/admin",
        "urlprefix-:{port} proto=tcp",
      ]
    }}
  }}
}}
"#,
        port = 20000 + (i % 10000)
    )
}

/// Peak resident set size of this process (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU time (user + system) of this process so far, in seconds: on a shared machine it shows
/// the work done when wall time includes waiting for a core.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

fn convert_one(path: &Path, options: &ConvertOptions) -> std::io::Result<bool> {
    let text = std::fs::read_to_string(path)?;
    let m = migrate_text(&text, Format::from_path(path), options, false)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    if m.is_change() {
        std::fs::write(path.with_extension("out"), &m.updated)?;
    }
    Ok(m.is_change())
}

fn main() -> std::io::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir()?;
    let t = Instant::now();
    for i in 0..n {
        std::fs::write(dir.path().join(format!("job-{i:05}.nomad.hcl")), job(i))?;
    }
    let generated = t.elapsed();
    let options = ConvertOptions::default();

    let mut rss_at_1k = f64::NAN;
    let mut cpu_at_1k = 0.0;
    let cpu_start = cpu_seconds();
    let mut time_at_1k = Duration::ZERO;
    let mut changed = 0usize;
    let start = Instant::now();
    for i in 0..n {
        if convert_one(&dir.path().join(format!("job-{i:05}.nomad.hcl")), &options)? {
            changed += 1;
        }
        if i + 1 == 1_000.min(n) {
            rss_at_1k = peak_rss_mib();
            time_at_1k = start.elapsed();
            cpu_at_1k = cpu_seconds() - cpu_start;
        }
    }
    let total = start.elapsed();
    let rss_end = peak_rss_mib();
    let cpu_total = cpu_seconds() - cpu_start;

    println!("migrate tags benchmark: {n} HCL job files x 5 legacy tags, converted one at a time");
    println!(
        "(files generated in {:.2} s, not counted)",
        generated.as_secs_f64()
    );
    println!();
    println!("| files | converted | wall (s) | CPU (s) | files/s | peak RSS (MiB) |");
    println!("|------:|----------:|---------:|--------:|--------:|---------------:|");
    let k = 1_000.min(n);
    println!(
        "| {k} | {k} | {:.3} | {cpu_at_1k:.2} | {:.0} | {rss_at_1k:.1} |",
        time_at_1k.as_secs_f64(),
        k as f64 / time_at_1k.as_secs_f64()
    );
    println!(
        "| {n} | {changed} | {:.3} | {cpu_total:.2} | {:.0} | {rss_end:.1} |",
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64()
    );
    println!();
    println!(
        "goal: {n} files under 1 s -> {} (wall), {} (CPU); memory growth 1k -> {n}: {:+.1} MiB",
        if total < Duration::from_secs(1) {
            "met"
        } else {
            "NOT met"
        },
        if cpu_total < 1.0 { "met" } else { "NOT met" },
        rss_end - rss_at_1k
    );
    Ok(())
}
