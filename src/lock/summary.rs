//! What `sparkgap lock` reports about the lock it wrote: the k3s binary, every image with its
//! manifest digest and size, the charts and the images they run, the totals. Beside the lock
//! as the other reports are beside what they report on; the CLI prints it as text or JSON.

use std::path::Path;

use serde::Serialize;

use crate::lock::Lock;
use crate::words::{count, group_digits};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LockSummary {
    lock: String,
    platform: String,
    k3s: K3sSummary,
    images: Vec<ImageSummary>,
    charts: Vec<ChartSummary>,
    /// Distinct blobs (k3s included) and their total size.
    blobs: usize,
    bytes: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartSummary {
    name: String,
    chart: String,
    version: String,
    source: String,
    digest: String,
    size: u64,
    dependencies: Vec<String>,
    /// The images its pod templates run (`helm template`), by reference.
    images: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct K3sSummary {
    version: String,
    digest: String,
    size: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageSummary {
    name: String,
    /// One of k3s's own images (from its release's image list).
    system: bool,
    /// The chart or Tanka environment that runs it (not listed in spec.images).
    #[serde(skip_serializing_if = "Option::is_none")]
    found_in: Option<String>,
    reference: String,
    image_name: String,
    resolved_digest: String,
    manifest_digest: String,
    layers: usize,
    size: u64,
}

impl LockSummary {
    pub fn new(path: &Path, lock: &Lock) -> LockSummary {
        let all = lock.all_blobs();
        LockSummary {
            lock: path.display().to_string(),
            platform: lock.platform.to_string(),
            k3s: K3sSummary {
                version: lock.k3s.version.clone(),
                digest: lock.k3s.digest.clone(),
                size: lock.k3s.size,
            },
            images: lock
                .images
                .iter()
                .map(|i| ImageSummary {
                    name: i.name.clone(),
                    system: i.system,
                    found_in: i.origin().map(|o| o.to_string()),
                    reference: i.reference.clone(),
                    image_name: i.image_name.clone(),
                    resolved_digest: i.resolved_digest.clone(),
                    manifest_digest: i.manifest.digest.clone(),
                    layers: i.layers.len(),
                    size: i.size(),
                })
                .collect(),
            charts: lock
                .charts
                .iter()
                .map(|c| ChartSummary {
                    name: c.name.clone(),
                    chart: c.chart.clone(),
                    version: c.version.clone(),
                    source: c.url.clone().or_else(|| c.path.clone()).unwrap_or_default(),
                    digest: c.digest.clone(),
                    size: c.size,
                    dependencies: c
                        .dependencies
                        .iter()
                        .map(|d| format!("{} {}", d.name, d.version))
                        .collect(),
                    images: c.images.clone(),
                })
                .collect(),
            blobs: all.len(),
            bytes: all.iter().map(|d| d.size).sum(),
        }
    }

    /// What `sparkgap lock` prints: the k3s binary, the images (k3s's own apart), the charts
    /// with the images they run, the totals.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut outln = |line: String| {
            out.push_str(&line);
            out.push('\n');
        };
        outln(format!("wrote {} for {}", self.lock, self.platform));
        outln(format!(
            "  k3s {}  {}  {} bytes",
            self.k3s.version,
            self.k3s.digest,
            group_digits(self.k3s.size)
        ));
        for system in [false, true] {
            let rows: Vec<_> = self.images.iter().filter(|i| i.system == system).collect();
            if system && !rows.is_empty() {
                outln("  k3s's own images:".to_string());
            }
            for i in rows {
                outln(format!(
                    "  {}  {}  {}  ({}, {} bytes)",
                    i.name,
                    i.image_name,
                    i.manifest_digest,
                    count(i.layers as u64, "layer"),
                    group_digits(i.size)
                ));
            }
        }
        for c in &self.charts {
            outln(format!(
                "  chart {}: {} {}  {}  ({} bytes){}",
                c.name,
                c.chart,
                c.version,
                c.digest,
                group_digits(c.size),
                if c.dependencies.is_empty() {
                    String::new()
                } else {
                    format!(", with {}", c.dependencies.join(", "))
                }
            ));
            for i in &c.images {
                outln(format!("    runs {i}"));
            }
        }
        outln(format!(
            "{}, {} bytes in total",
            count(self.blobs as u64, "blob"),
            group_digits(self.bytes)
        ));
        out
    }
}
