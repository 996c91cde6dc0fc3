//! Project tasks. `cargo xtask cluster ...` manages the test control plane
//! (tests/controlplane: embedded etcd + kube-apiserver + Calico's CRDs).

mod controlplane;
mod dist;
mod try_it;

use controlplane as cp;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage:
  cargo xtask try                                     install the plugin and run the walk-through
                                                      (local control plane when no cluster is at hand)
  cargo xtask cluster build                           build controlplane + kubectl into target/controlplane/bin
  cargo xtask cluster up    [--dir DIR] [--seed lab|native|empty] [--dataplane]
                                                      build if needed, start in the background, wait until ready;
                                                      --dataplane (root, seed lab): the lab's nodes and pods as
                                                      network namespaces, one real calico-felix per node
  cargo xtask cluster down  [--dir DIR]               stop it (SIGTERM, SIGKILL after 10 s)
  cargo xtask cluster reset [--dir DIR] --seed lab|native|empty
                                                      restore the running cluster to a seed
  cargo xtask cluster status [--dir DIR]
  cargo xtask probe [--dir DIR] --from SRC --to DST --port tcp/N|udp/N [--timeout 1s]
                                                      one NEW connection through a dataplane lab: SRC and DST are
                                                      node/NAME, pod/NAMESPACE/NAME or an IP; prints allowed or
                                                      denied, exits 0 or 1 (2 on error)

DIR defaults to target/controlplane/cluster.";

fn workspace_root() -> PathBuf {
    // xtask/Cargo.toml lives one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}

struct Opts {
    dir: PathBuf,
    seed: Option<String>,
    force: bool,
    dataplane: bool,
}

fn parse_opts(layout: &cp::Layout, args: &[String]) -> Result<Opts, String> {
    let mut opts = Opts {
        dir: layout.target_dir().join("controlplane").join("cluster"),
        seed: None,
        force: false,
        dataplane: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag {
            "--dir" => {
                let d = PathBuf::from(value()?);
                opts.dir = if d.is_absolute() {
                    d
                } else {
                    std::env::current_dir().map_err(|e| e.to_string())?.join(d)
                };
            }
            "--seed" => {
                let s = value()?;
                if !cp::SEEDS.contains(&s.as_str()) {
                    return Err(format!("unknown seed {s:?} (want lab, native or empty)"));
                }
                opts.seed = Some(s);
            }
            "--force" => opts.force = true,
            "--dataplane" => opts.dataplane = true,
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    Ok(opts)
}

fn cluster(args: &[String]) -> Result<(), String> {
    let layout = cp::Layout::new(workspace_root());
    let Some(sub) = args.first() else {
        return Err(USAGE.to_string());
    };
    let opts = parse_opts(&layout, &args[1..])?;
    match sub.as_str() {
        "build" => cluster_build(&layout, &opts),
        "up" => cluster_up(&layout, &opts),
        "down" => {
            if cp::stop(&opts.dir)? {
                println!("stopped the control plane in {}", opts.dir.display());
            } else {
                println!("no control plane running in {}", opts.dir.display());
            }
            Ok(())
        }
        "reset" => cluster_reset(&opts),
        "status" => {
            match cp::running(&opts.dir) {
                Some(r) => {
                    println!(
                        "running in {} (pid {}, {}, started with seed {})",
                        opts.dir.display(),
                        r.pid,
                        r.server,
                        r.seed
                    );
                    print_use(&layout, &r);
                }
                None => println!("not running in {}", opts.dir.display()),
            }
            Ok(())
        }
        _ => Err(USAGE.to_string()),
    }
}

/// `cluster build`: the control plane and kubectl, unless they are up to date (or `--force`).
fn cluster_build(layout: &cp::Layout, opts: &Opts) -> Result<(), String> {
    let t = Instant::now();
    if cp::build(layout, opts.force)? {
        println!(
            "built {} and {} in {:.1}s",
            layout.controlplane_bin().display(),
            layout.kubectl_bin().display(),
            t.elapsed().as_secs_f64()
        );
    } else {
        println!(
            "{} and {} are up to date",
            layout.controlplane_bin().display(),
            layout.kubectl_bin().display()
        );
    }
    Ok(())
}

/// `cluster up`: start a lab in `--dir` (or say where it already runs) and how to use it.
fn cluster_up(layout: &cp::Layout, opts: &Opts) -> Result<(), String> {
    let seed = opts.seed.as_deref().unwrap_or("lab");
    if let Some(r) = cp::running(&opts.dir) {
        println!(
            "already running in {} (pid {}, {})",
            opts.dir.display(),
            r.pid,
            r.server
        );
        print_use(layout, &r);
        return Ok(());
    }
    let t = Instant::now();
    if cp::build(layout, false)? {
        println!(
            "built control plane and kubectl in {:.1}s",
            t.elapsed().as_secs_f64()
        );
    }
    let t = Instant::now();
    let mut child = cp::spawn_lab(layout, &opts.dir, seed, None, opts.dataplane)?;
    let ready = cp::wait_ready(&opts.dir, &mut child, Duration::from_secs(120))?;
    println!(
        "control plane ready in {:.1}s: {} (seed {}, pid {}, log {})",
        t.elapsed().as_secs_f64(),
        ready.server,
        ready.seed,
        ready.pid,
        cp::log_path(&opts.dir).display()
    );
    print_use(layout, &ready);
    if opts.dataplane {
        println!(
            "dataplane lab: one calico-felix per node (logs {}/felix-<node>.log)",
            opts.dir.display()
        );
        println!(
            "  cargo xtask probe --dir {} --from node/node1 --to node/control --port tcp/6443",
            opts.dir.display()
        );
    }
    Ok(())
}

/// `cluster reset --seed`: the running lab back to a seed, timed.
fn cluster_reset(opts: &Opts) -> Result<(), String> {
    let seed = opts
        .seed
        .as_deref()
        .ok_or("reset needs --seed lab|native|empty")?;
    let t = Instant::now();
    let inside = cp::reset(&opts.dir, seed)?;
    println!(
        "reset to {seed} in {} ms ({} ms inside the control plane)",
        t.elapsed().as_millis(),
        inside.as_millis()
    );
    Ok(())
}

/// `cargo xtask probe`: `controlplane probe` against a dataplane lab, its
/// exit status passed on (0 allowed, 1 denied, 2 error).
fn probe(args: &[String]) -> ExitCode {
    let layout = cp::Layout::new(workspace_root());
    let mut dir = layout.target_dir().join("controlplane").join("cluster");
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.split_once('=') {
            Some(("--dir", d)) => dir = PathBuf::from(d),
            None if a == "--dir" => match it.next() {
                Some(d) => dir = PathBuf::from(d),
                None => {
                    eprintln!("--dir needs a value");
                    return ExitCode::from(2);
                }
            },
            _ => rest.push(a.clone()),
        }
    }
    if !layout.controlplane_bin().is_file() {
        eprintln!("no control plane built: run `cargo xtask cluster up --dataplane` first");
        return ExitCode::from(2);
    }
    match cp::probe_command(&layout, &dir).args(&rest).status() {
        Ok(status) => ExitCode::from(status.code().map_or(2, |c| c.clamp(0, 255) as u8)),
        Err(e) => {
            eprintln!("running {}: {e}", layout.controlplane_bin().display());
            ExitCode::from(2)
        }
    }
}

fn print_use(layout: &cp::Layout, r: &cp::Ready) {
    println!("kubeconfig: {}", r.kubeconfig.display());
    println!("  export KUBECONFIG={}", r.kubeconfig.display());
    println!("  {} get nodes", layout.kubectl_bin().display());
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("cluster") => cluster(&args[1..]),
        Some("dist") => dist::run(&workspace_root(), &args[1..]),
        Some("try") => try_it::run(&workspace_root()),
        Some("probe") => return probe(&args[1..]),
        _ => Err(format!("{USAGE}\n\n{}", dist::USAGE)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
