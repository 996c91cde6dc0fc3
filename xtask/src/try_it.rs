//! `cargo xtask try`: install the plugin and run the hardening walk-through. With a reachable
//! cluster in the kubeconfig it only reads and previews (plan, server-side dry run); without one it
//! starts the local control plane with the lab seed and runs every step there for real.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::controlplane as cp;

fn installed_binary() -> PathBuf {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from(".cargo"));
    cargo_home.join("bin").join("kubectl-calico_harden")
}

fn step(binary: &Path, kubeconfig: Option<&Path>, args: &[&str]) -> Result<bool, String> {
    let mut command = Command::new(binary);
    if let Some(k) = kubeconfig {
        command.arg("--kubeconfig").arg(k);
    }
    command.args(args);
    println!("\n$ kubectl calico-harden {}", args.join(" "));
    let status = command
        .status()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    Ok(status.success())
}

fn has_user_cluster(binary: &Path) -> bool {
    let configured = std::env::var_os("KUBECONFIG").is_some()
        || std::env::var_os("HOME").is_some_and(|h| Path::new(&h).join(".kube/config").exists());
    configured
        && Command::new(binary)
            .args(["plan", "--request-timeout", "5s"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

pub fn run(root: &Path) -> Result<(), String> {
    println!("$ cargo install --path . --locked");
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["install", "--path"])
        .arg(root)
        .args(["--locked", "--quiet"])
        .status()
        .map_err(|e| format!("cannot run cargo install: {e}"))?;
    if !status.success() {
        return Err("cargo install failed".into());
    }
    let binary = installed_binary();
    println!(
        "installed {} (kubectl finds it as `kubectl calico-harden`)",
        binary.display()
    );

    if has_user_cluster(&binary) {
        println!("\nyour kubeconfig reaches a cluster: previewing only, nothing is changed");
        step(&binary, None, &["plan"])?;
        step(&binary, None, &["up", "--dry-run=server"])?;
        step(&binary, None, &["check", "--after", "lockdown"])?;
        println!(
            "\nwhen the plan looks right: kubectl calico-harden up, enable-hep --wait, lockdown"
        );
        return Ok(());
    }

    println!(
        "\nno reachable cluster in your kubeconfig: starting the local control plane (lab seed)"
    );
    let layout = cp::Layout::new(root);
    let dir = layout.target_dir().join("controlplane").join("try");
    let ready = match cp::running(&dir) {
        Some(ready) => ready,
        None => {
            cp::build(&layout, false)?;
            let mut child = cp::spawn(&layout, &dir, "lab", None)?;
            cp::wait_ready(&dir, &mut child, Duration::from_secs(180))?
        }
    };
    let kubeconfig = ready.kubeconfig.clone();
    let k = Some(kubeconfig.as_path());
    let mut ok = step(&binary, k, &["plan"])?;
    ok &= step(&binary, k, &["up", "--yes"])?;
    ok &= step(&binary, k, &["enable-hep", "--wait", "--yes"])?;
    // The lab publishes its API server at 10.0.0.1:6443, one of Felix's default failsafe
    // ports, so lockdown's preflight passes without touching FelixConfiguration.
    ok &= step(&binary, k, &["check", "--after", "lockdown"])?;
    ok &= step(&binary, k, &["lockdown", "--yes"])?;
    ok &= step(&binary, k, &["history"])?;
    println!(
        "\nthe local cluster keeps running: export KUBECONFIG={}\nundo everything: kubectl calico-harden rollback --all; stop it: cargo xtask cluster down --dir {}",
        kubeconfig.display(),
        dir.display()
    );
    if ok {
        Ok(())
    } else {
        Err("a step failed (see above)".into())
    }
}
