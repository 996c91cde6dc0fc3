//! Command-line latency benchmark: --help, a usage error and a completion answer, measured as
//! whole process runs because that is what a user or a shell waits for.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::Command;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

fn binary() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_kubectl-calico_harden"))
}

fn cli_latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("cli");
    group
        .measurement_time(Duration::from_secs(5))
        .sample_size(50);
    group.bench_function("help", |b| {
        b.iter(|| Command::new(binary()).arg("--help").output().unwrap())
    });
    group.bench_function("usage_error", |b| {
        b.iter(|| {
            Command::new(binary())
                .args(["registry", "--ip", "10.0.0.300"])
                .output()
                .unwrap()
        })
    });
    // kubectl's plugin completion runs the hook through its own name; static candidates must
    // come back well under the 50 ms a shell user notices.
    let hooks = tempfile::tempdir().unwrap();
    let hook = hooks.path().join("kubectl_complete-calico_harden");
    std::os::unix::fs::symlink(binary(), &hook).unwrap();
    group.bench_function("complete_static", |b| {
        b.iter(|| {
            let out = Command::new(&hook)
                .args(["render", "nodes-"])
                .output()
                .unwrap();
            assert!(out.stdout.starts_with(b"nodes-to-kapi\t"));
        })
    });
    group.finish();
}

criterion_group!(benches, cli_latency);
criterion_main!(benches);
