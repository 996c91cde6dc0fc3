//! Building, starting, resetting and stopping the test control plane
//! (`tests/controlplane`, a Go program: embedded etcd + kube-apiserver) and
//! Calico v3.31.0's own programs it runs (`tests/calico`, a Go module of its
//! own: calico-apiserver, calico-kube-controllers, the selector oracle).
//!
//! std only: this file is used by the xtask binary and, through
//! `#[path = "../../xtask/src/controlplane.rs"]`, by the e2e test harness
//! (`tests/e2e/harness.rs`), so that where the Go toolchain, the source, the
//! binaries and Calico's CRDs are is decided in one place.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The Calico Go module (v3.31.0) whose programs and CRD manifests the
/// control plane runs; its version is pinned in tests/calico/go.mod.
pub const CALICO_MODULE: &str = "github.com/projectcalico/calico";
/// The Calico release those programs report (`-X .../buildinfo.Version`).
pub const CALICO_RELEASE: &str = "v3.31.0";
const CALICO_GIT_REVISION: &str = "b1f3c43f8437";
/// Calico's pseudo-versions are not in the checksum database; go.sum pins them.
const CALICO_NOSUMDB: &str = "github.com/projectcalico";
/// Calico's programs: (binary name, Go package).
pub const CALICO_PROGRAMS: &[(&str, &str)] = &[
    (
        "calico-apiserver",
        "github.com/projectcalico/calico/apiserver/cmd/apiserver",
    ),
    (
        "calico-kube-controllers",
        "github.com/projectcalico/calico/kube-controllers/cmd/kube-controllers",
    ),
    ("calico-selector-oracle", "./cmd/selector-oracle"),
    // Only the dataplane lab runs it (`cluster up --dataplane`).
    (
        "calico-felix",
        "github.com/projectcalico/calico/felix/cmd/calico-felix",
    ),
    // The dataplane lab's flow logs: Felix sends them to the real Goldmane; `flows-api` answers
    // whisker-backend's `GET /flows` from it (whisker-backend's own HTTP module is not on the
    // Go module proxy at this release; see tests/calico/cmd/flows-api).
    (
        "calico-goldmane",
        "github.com/projectcalico/calico/goldmane/cmd",
    ),
    ("calico-flows-api", "./cmd/flows-api"),
];
/// Where Calico keeps its CRD manifests inside that module.
pub const CALICO_CRD_SUBDIR: &str = "libcalico-go/config/crd";

pub const GO_MISSING: &str = "Go is required to build the test control plane: install Go 1.26+ (https://go.dev/doc/install) and retry";

pub const SEEDS: &[&str] = &["lab", "native", "empty"];

/// Where things are, relative to the workspace root.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The workspace root (the directory holding the root Cargo.toml).
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }

    /// The Go module of the control plane.
    pub fn src_dir(&self) -> PathBuf {
        self.root.join("tests").join("controlplane")
    }

    /// `target/` (or `$CARGO_TARGET_DIR`).
    pub fn target_dir(&self) -> PathBuf {
        match std::env::var_os("CARGO_TARGET_DIR") {
            Some(d) if !d.is_empty() => {
                let d = PathBuf::from(d);
                if d.is_absolute() {
                    d
                } else {
                    self.root.join(d)
                }
            }
            _ => self.root.join("target"),
        }
    }

    /// Where `controlplane` and `kubectl` are built.
    pub fn bin_dir(&self) -> PathBuf {
        self.target_dir().join("controlplane").join("bin")
    }

    pub fn controlplane_bin(&self) -> PathBuf {
        self.bin_dir().join("controlplane")
    }

    pub fn kubectl_bin(&self) -> PathBuf {
        self.bin_dir().join("kubectl")
    }

    /// The Go module that builds Calico's programs.
    pub fn calico_src_dir(&self) -> PathBuf {
        self.root.join("tests").join("calico")
    }

    /// Where Calico's programs are built.
    pub fn calico_bin_dir(&self) -> PathBuf {
        self.target_dir().join("calico").join("bin")
    }

    pub fn calico_bin(&self, name: &str) -> PathBuf {
        self.calico_bin_dir().join(name)
    }
}

/// The `go` binary: `$GO`, then `go` on PATH, then `$GOROOT/bin/go`, then
/// /usr/local/go/bin/go.
pub fn find_go() -> Result<PathBuf, String> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(go) = std::env::var_os("GO") {
        candidates.push(PathBuf::from(go));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            candidates.push(dir.join("go"));
        }
    }
    if let Some(goroot) = std::env::var_os("GOROOT") {
        candidates.push(PathBuf::from(goroot).join("bin").join("go"));
    }
    candidates.push(PathBuf::from("/usr/local/go/bin/go"));
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| GO_MISSING.to_string())
}

fn go_command(go: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(go);
    cmd.current_dir(dir).env("GONOSUMDB", CALICO_NOSUMDB);
    // The tree is not always a git checkout (CI clones, tarballs).
    let flags = std::env::var("GOFLAGS").unwrap_or_default();
    if !flags.contains("-buildvcs") {
        cmd.env("GOFLAGS", format!("{flags} -buildvcs=false").trim());
    }
    cmd
}

fn newest_mtime(dir: &Path) -> std::io::Result<SystemTime> {
    let mut newest = SystemTime::UNIX_EPOCH;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        let m = if meta.is_dir() {
            newest_mtime(&entry.path())?
        } else {
            meta.modified()?
        };
        if m > newest {
            newest = m;
        }
    }
    Ok(newest)
}

fn mtime(p: &Path) -> Option<SystemTime> {
    fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn all_newer_than(bins: &[PathBuf], src_dir: &Path) -> bool {
    let Ok(src) = newest_mtime(src_dir) else {
        return false;
    };
    bins.iter().all(|b| mtime(b).is_some_and(|m| m > src))
}

/// True when every binary exists and is newer than every file of the Go
/// module it is built from.
pub fn binaries_fresh(layout: &Layout) -> bool {
    let calico: Vec<PathBuf> = CALICO_PROGRAMS
        .iter()
        .map(|(name, _)| layout.calico_bin(name))
        .collect();
    all_newer_than(
        &[layout.controlplane_bin(), layout.kubectl_bin()],
        &layout.src_dir(),
    ) && all_newer_than(&calico, &layout.calico_src_dir())
}

fn touch(bins: &[PathBuf]) {
    // go build leaves an up-to-date binary's mtime alone; make freshness
    // checks hold after a no-op build too.
    for b in bins {
        if let Ok(f) = fs::File::options().append(true).open(b) {
            let _ = f.set_modified(SystemTime::now());
        }
    }
}

fn run_go_build(go: &Path, dir: &Path, args: &[String]) -> Result<(), String> {
    let status = go_command(go, dir)
        .arg("build")
        .args(args)
        .env("CGO_ENABLED", "0")
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("running {}: {e}", go.display()))?;
    if !status.success() {
        return Err(format!("go build in {} failed ({status})", dir.display()));
    }
    Ok(())
}

/// Builds Calico's programs from tests/calico into `calico_bin_dir()`.
fn build_calico(layout: &Layout, go: &Path) -> Result<(), String> {
    let bin = layout.calico_bin_dir();
    fs::create_dir_all(&bin).map_err(|e| format!("creating {}: {e}", bin.display()))?;
    let ldflags = format!(
        "-ldflags=-s -w -X github.com/projectcalico/calico/pkg/buildinfo.Version={CALICO_RELEASE} \
         -X github.com/projectcalico/calico/pkg/buildinfo.GitRevision={CALICO_GIT_REVISION}"
    );
    let mut built = Vec::new();
    for (name, package) in CALICO_PROGRAMS {
        let out = layout.calico_bin(name);
        let args = [
            ldflags.clone(),
            "-o".to_string(),
            out.display().to_string(),
            (*package).to_string(),
        ];
        run_go_build(go, &layout.calico_src_dir(), &args)?;
        built.push(out);
    }
    touch(&built);
    Ok(())
}

/// Builds `controlplane` and `kubectl` into `bin_dir()` unless they are
/// fresh. Returns whether it built.
pub fn build(layout: &Layout, force: bool) -> Result<bool, String> {
    let go = find_go()?;
    if !force && binaries_fresh(layout) {
        return Ok(false);
    }
    let bin = layout.bin_dir();
    fs::create_dir_all(&bin).map_err(|e| format!("creating {}: {e}", bin.display()))?;
    let args = [
        "-ldflags=-s -w".to_string(),
        "-o".to_string(),
        format!("{}/", bin.display()),
        ".".to_string(),
        "k8s.io/kubernetes/cmd/kubectl".to_string(),
    ];
    run_go_build(&go, &layout.src_dir(), &args)?;
    touch(&[layout.controlplane_bin(), layout.kubectl_bin()]);
    build_calico(layout, &go)?;
    Ok(true)
}

/// The directory of Calico's CRD manifests in the Go module cache
/// (downloads the module pinned in tests/calico/go.mod if needed).
pub fn calico_crd_dir(layout: &Layout) -> Result<PathBuf, String> {
    let go = find_go()?;
    let out = go_command(&go, &layout.calico_src_dir())
        .args(["mod", "download", "-json", CALICO_MODULE])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", go.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "go mod download {CALICO_MODULE} (tests/calico) failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let dir = json_string_field(&text, "Dir")
        .ok_or_else(|| format!("no Dir in go mod download output: {text}"))?;
    let crd = PathBuf::from(dir).join(CALICO_CRD_SUBDIR);
    if !crd.is_dir() {
        return Err(format!("{} does not exist", crd.display()));
    }
    Ok(crd)
}

/// Finds `"key": "value"` in simple JSON (no escapes in value expected).
pub fn json_string_field(json: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\"");
    let rest = &json[json.find(&pat)? + pat.len()..];
    let rest = rest
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    None
}

/// Finds `"key": 123` in simple JSON.
pub fn json_number_field(json: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\"");
    let rest = &json[json.find(&pat)? + pat.len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

pub fn process_alive(pid: u32) -> bool {
    // /proc/PID/stat's third field is the state; Z (zombie) counts as gone.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn read_pid(dir: &Path) -> Option<u32> {
    fs::read_to_string(dir.join("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// What `controlplane run` writes to DIR/ready.
#[derive(Clone, Debug)]
pub struct Ready {
    pub pid: u32,
    pub owner_pid: Option<u32>,
    pub server: String,
    pub kubeconfig: PathBuf,
    pub seed: String,
}

pub fn read_ready(dir: &Path) -> Option<Ready> {
    let text = fs::read_to_string(dir.join("ready")).ok()?;
    Some(Ready {
        pid: json_number_field(&text, "pid")? as u32,
        owner_pid: json_number_field(&text, "owner_pid")
            .map(|p| p as u32)
            .filter(|p| *p != 0),
        server: json_string_field(&text, "server")?,
        kubeconfig: PathBuf::from(json_string_field(&text, "kubeconfig")?),
        seed: json_string_field(&text, "seed")?,
    })
}

/// The running control plane in `dir`, if any.
pub fn running(dir: &Path) -> Option<Ready> {
    let ready = read_ready(dir)?;
    (process_alive(ready.pid) && read_pid(dir) == Some(ready.pid)).then_some(ready)
}

pub fn log_path(dir: &Path) -> PathBuf {
    dir.join("controlplane.log")
}

/// The last `lines` lines of DIR/controlplane.log.
pub fn log_tail(dir: &Path, lines: usize) -> String {
    let text = fs::read(log_path(dir)).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Spawns `controlplane run` in its own process group, stdout and stderr to
/// DIR/controlplane.log (truncated first). It outlives the caller unless
/// `owner_pid` is given, in which case it exits when that process is gone.
pub fn spawn(
    layout: &Layout,
    dir: &Path,
    seed: &str,
    owner_pid: Option<u32>,
) -> Result<Child, String> {
    spawn_lab(layout, dir, seed, owner_pid, false)
}

/// `spawn`, and with `dataplane` the dataplane lab too: the lab's nodes and
/// pods as network namespaces with one real calico-felix per node (seed lab,
/// root; see tests/controlplane/dataplane.go).
pub fn spawn_lab(
    layout: &Layout,
    dir: &Path,
    seed: &str,
    owner_pid: Option<u32>,
    dataplane: bool,
) -> Result<Child, String> {
    if dataplane && seed != "lab" {
        return Err(format!(
            "the dataplane lab runs the lab seed only (asked for {seed})"
        ));
    }
    if !SEEDS.contains(&seed) {
        return Err(format!("unknown seed {seed:?} (want one of {SEEDS:?})"));
    }
    let crd_dir = calico_crd_dir(layout)?;
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let log = fs::File::create(log_path(dir)).map_err(|e| format!("creating log: {e}"))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    for stale in ["ready", "pid"] {
        let _ = fs::remove_file(dir.join(stale));
    }
    // Detach from the caller's process group (the program itself ignores
    // SIGHUP), so Ctrl-C and a closing terminal leave it running.
    let mut cmd = Command::new(layout.controlplane_bin());
    cmd.arg("run")
        .arg("--dir")
        .arg(dir)
        .arg("--seed")
        .arg(seed)
        .arg("--calico-crd-dir")
        .arg(&crd_dir)
        .arg("--calico-apiserver")
        .arg(layout.calico_bin("calico-apiserver"))
        .arg("--calico-kube-controllers")
        .arg(layout.calico_bin("calico-kube-controllers"));
    if dataplane {
        cmd.arg("--calico-felix")
            .arg(layout.calico_bin("calico-felix"))
            // Felix's flow logs go to the real Goldmane, read through the API server.
            .arg("--calico-goldmane")
            .arg(layout.calico_bin("calico-goldmane"))
            .arg("--calico-flows-api")
            .arg(layout.calico_bin("calico-flows-api"));
    }
    if let Some(pid) = owner_pid {
        cmd.arg("--owner-pid").arg(pid.to_string());
    }
    cmd.stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0);
    cmd.spawn()
        .map_err(|e| format!("starting {}: {e}", layout.controlplane_bin().display()))
}

/// Waits for DIR/ready. On failure the error includes the log's tail.
pub fn wait_ready(dir: &Path, child: &mut Child, timeout: Duration) -> Result<Ready, String> {
    let start = Instant::now();
    loop {
        if let Some(r) = read_ready(dir).filter(|r| r.pid == child.id()) {
            return Ok(r);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the control plane exited during startup ({status}); last lines of {}:\n{}",
                log_path(dir).display(),
                log_tail(dir, 40)
            ));
        }
        if start.elapsed() > timeout {
            return Err(format!(
                "the control plane was not ready within {}s; last lines of {}:\n{}",
                timeout.as_secs(),
                log_path(dir).display(),
                log_tail(dir, 40)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Stops the control plane in `dir`: SIGTERM, then SIGKILL after 10 s.
/// Returns false when nothing was running.
pub fn stop(dir: &Path) -> Result<bool, String> {
    let Some(pid) = read_pid(dir).filter(|p| process_alive(*p)) else {
        sweep_dataplane(dir)?;
        return Ok(false);
    };
    signal(pid, "TERM");
    let start = Instant::now();
    while process_alive(pid) {
        if start.elapsed() > Duration::from_secs(10) {
            signal(pid, "KILL");
            std::thread::sleep(Duration::from_millis(200));
            for f in ["ready", "pid", "control.sock"] {
                let _ = fs::remove_file(dir.join(f));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    sweep_dataplane(dir)?;
    Ok(true)
}

/// The file a running dataplane lab describes itself in; a clean shutdown
/// removes it, so its presence after a stop means the lab's network
/// namespaces were left behind (a SIGKILL, a crash).
pub const DATAPLANE_FILE: &str = "dataplane.json";

/// Deletes the network namespaces a dataplane lab in `dir` left behind (all
/// named `PREFIX-...`, PREFIX from DIR/dataplane.json), ending what still runs
/// in them. Nothing to do when there is no such file.
pub fn sweep_dataplane(dir: &Path) -> Result<(), String> {
    let file = dir.join(DATAPLANE_FILE);
    let Ok(text) = fs::read_to_string(&file) else {
        return Ok(());
    };
    let prefix = json_string_field(&text, "prefix")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| format!("no prefix in {}", file.display()))?;
    let mut failed = Vec::new();
    for entry in fs::read_dir("/run/netns").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&format!("{prefix}-")) {
            continue;
        }
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &name]).output() {
            let pids = String::from_utf8_lossy(&out.stdout).into_owned();
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
            {
                if pid > 1 && pid != std::process::id() {
                    signal(pid, "KILL");
                }
            }
        }
        let deleted = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !deleted {
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        return Err(format!(
            "could not delete network namespaces {failed:?} (needs root)"
        ));
    }
    let _ = fs::remove_file(file);
    Ok(())
}

/// `controlplane probe` against the dataplane lab in `dir`: prints
/// `allowed` or `denied`, exits 0, 1, or 2 on error.
pub fn probe_command(layout: &Layout, dir: &Path) -> Command {
    let mut cmd = Command::new(layout.controlplane_bin());
    cmd.arg("probe").arg("--dir").arg(dir).stdin(Stdio::null());
    cmd
}

/// Sends one command line to the running control plane in `dir` over its
/// control socket; returns the milliseconds it took there.
fn control(dir: &Path, line: &str) -> Result<Duration, String> {
    let sock = dir.join("control.sock");
    let mut stream = UnixStream::connect(&sock).map_err(|e| {
        format!(
            "connecting to {} (is the control plane running?): {e}",
            sock.display()
        )
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(180)))
        .map_err(|e| e.to_string())?;
    writeln!(stream, "{line}").map_err(|e| e.to_string())?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .map_err(|e| format!("reading reply from {}: {e}", sock.display()))?;
    let reply = reply.trim();
    match reply.strip_prefix("ok ") {
        Some(ms) => Ok(Duration::from_millis(ms.parse().unwrap_or(0))),
        None => Err(reply.strip_prefix("error ").unwrap_or(reply).to_string()),
    }
}

/// Asks the running control plane in `dir` to reset to `seed`; returns the
/// time the reset took inside the control plane.
pub fn reset(dir: &Path, seed: &str) -> Result<Duration, String> {
    if !SEEDS.contains(&seed) {
        return Err(format!("unknown seed {seed:?} (want one of {SEEDS:?})"));
    }
    control(dir, &format!("reset {seed}")).map_err(|e| format!("reset to {seed} failed: {e}"))
}

/// Restarts the real calico-kube-controllers of the control plane in `dir`
/// with these environment overrides (`NAME=value`; none = back to its
/// defaults), as editing its Deployment would. Returns once it has reported
/// its running configuration.
pub fn set_kube_controllers_env(dir: &Path, overrides: &[&str]) -> Result<Duration, String> {
    if let Some(bad) = overrides
        .iter()
        .find(|o| !o.contains('=') || o.contains(char::is_whitespace))
    {
        return Err(format!("not NAME=value: {bad:?}"));
    }
    let mut line = String::from("kube-controllers-env");
    for o in overrides {
        line.push(' ');
        line.push_str(o);
    }
    control(dir, &line).map_err(|e| format!("restarting calico-kube-controllers: {e}"))
}
