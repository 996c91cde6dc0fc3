//! The e2e harness: one real kube-apiserver (tests/controlplane) with Calico
//! v3.31.0's own calico-apiserver and calico-kube-controllers for the whole
//! test process, reset to a seed before each test that asks for it. The
//! `native` seed (projectcalico.org/v3 served as CRDs, the emulated Calico
//! 3.32 mode) gets a second control plane of its own, started on first use.
//!
//! ```ignore
//! let c = harness::cluster(harness::Seed::Lab);
//! let mark = c.audit_mark();
//! c.kubectl_ok(&["get", "nodes"]);
//! assert!(c.writes_since(&mark).is_empty());
//! ```
//!
//! The first `cluster()` builds the Go control plane and kubectl (Go 1.26+ is
//! required; without it this panics saying so) and starts it in
//! `target/e2e-controlplane/` with `--owner-pid` = this process, so it exits
//! with the test process. Tests are serialised by a global lock held by the
//! returned guard (GlobalNetworkPolicies are cluster-wide).
#![allow(dead_code, clippy::print_stderr, clippy::print_stdout)]

#[path = "../../xtask/src/controlplane.rs"]
mod cp;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The states the control plane can be reset to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seed {
    /// k3s-like 3-node cluster (control 10.0.0.1, node1, node2; pods in
    /// 192.168.0.0/16; the API server published at 10.0.0.1:6443) with Calico
    /// installed by the Tigera operator: the real calico-apiserver serves
    /// projectcalico.org/v3, the real calico-kube-controllers runs.
    Lab,
    /// Same, without calico-apiserver pods: projectcalico.org/v3 served as
    /// CRDs (emulated; a control plane of its own).
    Native,
    /// Calico installed (calico-apiserver serving v3, its built-in tiers), no
    /// nodes, pods, Calico configuration, or kube-controllers.
    Empty,
}

impl Seed {
    /// Which control plane serves this seed: 0 = aggregated (real
    /// calico-apiserver), 1 = native (emulated).
    fn plane(self) -> usize {
        usize::from(self == Seed::Native)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Seed::Lab => "lab",
            Seed::Native => "native",
            Seed::Empty => "empty",
        }
    }
}

struct Shared {
    dir: PathBuf,
    kubeconfig: PathBuf,
    _child: Option<Child>,
}

/// Serialises `go build`s of the same outputs from parallel tests.
static BUILD: Mutex<()> = Mutex::new(());

/// The aggregated control plane and, once a test asks for them, the native
/// one and the dataplane lab (`DATAPLANE_PLANE`).
static STATE: Mutex<[Option<Shared>; 3]> = Mutex::new([None, None, None]);

/// The slot of the dataplane lab: seed lab with one real calico-felix per
/// node (root; see tests/controlplane/dataplane.go).
const DATAPLANE_PLANE: usize = 2;

fn layout() -> cp::Layout {
    cp::Layout::new(env!("CARGO_MANIFEST_DIR"))
}

/// Where the harness builds `controlplane` and `kubectl`.
pub fn bin_dir() -> PathBuf {
    layout().bin_dir()
}

/// One of Calico's programs built from tests/calico (building everything
/// the harness needs first, if stale).
pub fn calico_program(name: &str) -> PathBuf {
    let layout = layout();
    if let Err(e) = cp::find_go() {
        panic!("{e}");
    }
    let _one_build_at_a_time = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = cp::build(&layout, false) {
        panic!("building the test control plane and Calico's programs: {e}");
    }
    layout.calico_bin(name)
}

/// A control plane of the caller's own in `dir` (not the shared one), for tests of the bed's
/// life cycle; `wait_ready` false returns as soon as it has written its pid.
pub fn spawn_own_control_plane(dir: &Path, wait_ready: bool) -> Child {
    let layout = layout();
    {
        let _one_build_at_a_time = BUILD.lock().unwrap_or_else(|p| p.into_inner());
        cp::build(&layout, false).unwrap_or_else(|e| panic!("building the control plane: {e}"));
    }
    let _ = cp::stop(dir);
    let mut child = cp::spawn(&layout, dir, "lab", Some(std::process::id()))
        .unwrap_or_else(|e| panic!("starting a control plane in {}: {e}", dir.display()));
    if wait_ready {
        cp::wait_ready(dir, &mut child, Duration::from_secs(120)).unwrap_or_else(|e| panic!("{e}"));
    } else {
        let start = Instant::now();
        while !dir.join("pid").exists() && start.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    child
}

/// `cargo xtask cluster down` for `dir`: SIGTERM, SIGKILL after 10 s.
pub fn stop_own_control_plane(dir: &Path) {
    cp::stop(dir)
        .unwrap_or_else(|e| panic!("stopping the control plane in {}: {e}", dir.display()));
}

/// The kubectl built from the same Kubernetes version as the control plane.
pub fn kubectl_path() -> PathBuf {
    layout().kubectl_bin()
}

/// Is the control plane in `dir` (running or starting) someone else's?
fn owned_by_another_live_process(dir: &Path) -> bool {
    let me = std::process::id();
    match cp::read_ready(dir) {
        Some(r) if cp::process_alive(r.pid) => {
            r.owner_pid.is_some_and(|o| o != me && cp::process_alive(o))
        }
        _ => fs::read_to_string(dir.join("pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .is_some_and(cp::process_alive),
    }
}

fn start(seed: Seed, dataplane: bool) -> Shared {
    let layout = layout();
    if let Err(e) = cp::find_go() {
        panic!("{e}");
    }
    let t = Instant::now();
    let built = {
        let _one_build_at_a_time = BUILD.lock().unwrap_or_else(|p| p.into_inner());
        cp::build(&layout, false)
    };
    match built {
        Ok(true) => eprintln!(
            "harness: built the control plane and kubectl in {:.1}s",
            t.elapsed().as_secs_f64()
        ),
        Ok(false) => {}
        Err(e) => panic!("building the test control plane: {e}"),
    }
    let me = std::process::id();
    let base = layout.target_dir().join(if dataplane {
        "e2e-dataplane"
    } else {
        ["e2e-controlplane", "e2e-controlplane-native"][seed.plane()]
    });
    if let Some(r) = cp::running(&base).filter(|r| r.owner_pid == Some(me)) {
        return Shared {
            kubeconfig: r.kubeconfig,
            dir: base,
            _child: None,
        };
    }
    let dir = if owned_by_another_live_process(&base) {
        // Another test process is using it; do not disturb it.
        base.with_file_name(format!(
            "{}-{me}",
            base.file_name().expect("named").to_string_lossy()
        ))
    } else {
        // Stale (its owner is gone; it would exit within a second anyway).
        let _ = cp::stop(&base);
        base
    };
    let t = Instant::now();
    let mut child = cp::spawn_lab(&layout, &dir, seed.as_str(), Some(me), dataplane)
        .unwrap_or_else(|e| panic!("starting the test control plane: {e}"));
    let ready = cp::wait_ready(&dir, &mut child, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "harness: control plane ready in {:.1}s at {} (dir {})",
        t.elapsed().as_secs_f64(),
        ready.server,
        dir.display()
    );
    Shared {
        dir,
        kubeconfig: ready.kubeconfig,
        _child: Some(child),
    }
}

/// Serialises tests (GlobalNetworkPolicies are cluster-wide), resets the
/// shared control plane to `seed`, returns a guard.
pub fn cluster(seed: Seed) -> ClusterGuard {
    let mut lock = STATE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if lock[seed.plane()].is_none() {
        lock[seed.plane()] = Some(start(seed, false));
    }
    let shared = lock[seed.plane()].as_ref().expect("started");
    let guard = ClusterGuard {
        dir: shared.dir.clone(),
        kubeconfig: shared.kubeconfig.clone(),
        _lock: lock,
    };
    guard.reset(seed);
    guard
}

/// The dataplane lab (its own control plane, started on first use, seed
/// lab), reset to the lab seed; serialised with every other test. Needs root
/// and iptables, ipset, conntrack, iproute2: check `dataplane_missing` first.
pub fn dataplane_cluster() -> ClusterGuard {
    let mut lock = STATE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if lock[DATAPLANE_PLANE].is_none() {
        lock[DATAPLANE_PLANE] = Some(start(Seed::Lab, true));
    }
    let shared = lock[DATAPLANE_PLANE].as_ref().expect("started");
    let guard = ClusterGuard {
        dir: shared.dir.clone(),
        kubeconfig: shared.kubeconfig.clone(),
        _lock: lock,
    };
    guard.reset(Seed::Lab);
    guard
}

/// Exclusive use of the shared control plane until dropped.
pub struct ClusterGuard {
    dir: PathBuf,
    kubeconfig: PathBuf,
    _lock: MutexGuard<'static, [Option<Shared>; 3]>,
}

/// The audit logs: kube-apiserver's, and calico-apiserver's for the
/// projectcalico.org/v3 requests kube-apiserver only proxies to it.
const AUDIT_LOGS: [&str; 2] = ["audit.log", "calico-apiserver-audit.log"];

/// A position in both audit logs.
#[derive(Clone, Debug)]
pub struct AuditMark {
    offsets: [u64; 2],
}

/// One write request made with a kubeconfig identity (admin or limited),
/// from DIR/audit.log.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    pub verb: String,
    pub user: String,
    pub request_uri: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub response_code: Option<u16>,
    /// "" for the core group.
    pub api_group: String,
    pub subresource: Option<String>,
    /// The request body (the audit policy logs at Request level).
    pub request_object: Option<serde_json::Value>,
}

const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

impl ClusterGuard {
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn kubectl_path() -> PathBuf {
        kubectl_path()
    }

    pub fn bin_dir() -> PathBuf {
        bin_dir()
    }

    /// Restarts the real calico-kube-controllers with these environment
    /// overrides (`NAME=value`, e.g. `AUTO_HOST_ENDPOINTS=disabled`; none =
    /// its defaults), as editing its Deployment would; the next reset clears
    /// them. Returns once it has reported its running configuration.
    pub fn set_kube_controllers_env(&self, overrides: &[&str]) {
        if let Err(e) = cp::set_kube_controllers_env(&self.dir, overrides) {
            panic!(
                "{e}\nlast lines of the control plane's log:\n{}",
                cp::log_tail(&self.dir, 30)
            );
        }
    }

    /// Resets to another seed without releasing the guard (seeds served by
    /// the same control plane only: lab and empty).
    pub fn reset(&self, seed: Seed) {
        if let Err(e) = cp::reset(&self.dir, seed.as_str()) {
            panic!(
                "resetting the test control plane to {}: {e}\nlast lines of its log:\n{}",
                seed.as_str(),
                cp::log_tail(&self.dir, 30)
            );
        }
    }

    /// A Command for `program` with KUBECONFIG pointing at this cluster and
    /// the built kubectl first on PATH.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![bin_dir()];
        dirs.extend(std::env::split_paths(&path));
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", self.dir.join("kubecache"))
            .env("PATH", std::env::join_paths(dirs).expect("PATH"))
            .stdin(Stdio::null());
        cmd
    }

    fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut cmd = self.command(kubectl_path());
        let has_context = args
            .iter()
            .any(|a| *a == "--context" || a.starts_with("--context="));
        if !has_context {
            cmd.args(["--context", "admin"]);
        }
        cmd.args(args);
        cmd
    }

    /// Runs the built kubectl with KUBECONFIG set and `--context admin`
    /// unless `args` name a context.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_command(args)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", kubectl_path().display()))
    }

    /// Like `kubectl`, with `stdin` written to its standard input (for
    /// `kubectl apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .kubectl_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running {}: {e}", kubectl_path().display()));
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("writing kubectl's stdin");
        child.wait_with_output().expect("waiting for kubectl")
    }

    /// Runs kubectl; panics with its stderr on failure; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        check_ok(args, out)
    }

    /// `kubectl_stdin`, panicking with stderr on failure; returns stdout.
    pub fn kubectl_stdin_ok(&self, args: &[&str], stdin: &str) -> String {
        let out = self.kubectl_stdin(args, stdin);
        check_ok(args, out)
    }

    /// `kubectl get ARGS -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        let out = self.kubectl_ok(&a);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("kubectl {a:?} printed invalid JSON ({e}): {out}"))
    }

    fn audit_lens(&self) -> [u64; 2] {
        AUDIT_LOGS.map(|log| {
            fs::metadata(self.dir.join(log))
                .map(|m| m.len())
                .unwrap_or(0)
        })
    }

    /// The audit logs are appended after responses are sent: wait until they
    /// have not grown for 200 ms (at most 2 s).
    fn wait_audit_quiet(&self) -> [u64; 2] {
        let start = Instant::now();
        let mut lens = self.audit_lens();
        let mut stable_since = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(25));
            let now = self.audit_lens();
            if now != lens {
                lens = now;
                stable_since = Instant::now();
            } else if stable_since.elapsed() >= Duration::from_millis(200) {
                break;
            }
        }
        lens
    }

    /// The current end of the audit logs.
    pub fn audit_mark(&self) -> AuditMark {
        AuditMark {
            offsets: self.wait_audit_quiet(),
        }
    }

    /// Write requests (create, update, patch, delete, deletecollection) made
    /// with kubeconfig identities since `mark`, excluding dry-run requests,
    /// from both audit logs. The control plane's own identities and Calico's
    /// components never appear in them.
    pub fn writes_since(&self, mark: &AuditMark) -> Vec<AuditEvent> {
        let ends = self.wait_audit_quiet();
        let mut events = Vec::new();
        for (i, log) in AUDIT_LOGS.iter().enumerate() {
            let text = read_range(&self.dir.join(log), mark.offsets[i], ends[i]);
            events.extend(
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .filter_map(|ev| {
                        parse_event(&ev)
                            .map(|e| (ev["stageTimestamp"].as_str().map(str::to_string), e))
                    }),
            );
        }
        // One timeline: both servers stamp events with microsecond RFC 3339 times.
        events.sort_by(|a, b| a.0.cmp(&b.0));
        events.into_iter().map(|(_, e)| e).collect()
    }
}

fn read_range(path: &Path, from: u64, to: u64) -> String {
    let mut text = String::new();
    if to > from {
        let mut f =
            fs::File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        f.seek(SeekFrom::Start(from)).expect("seeking an audit log");
        f.take(to - from)
            .read_to_string(&mut text)
            .expect("reading an audit log");
    }
    text
}

fn check_ok(args: &[&str], out: Output) -> String {
    if !out.status.success() {
        panic!(
            "kubectl {} failed ({}):\nstderr: {}\nstdout: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    String::from_utf8(out.stdout).expect("kubectl printed non-UTF-8")
}

fn parse_event(ev: &serde_json::Value) -> Option<AuditEvent> {
    let s = |v: &serde_json::Value| v.as_str().map(str::to_string);
    let stage = ev.get("stage")?.as_str()?;
    if stage != "ResponseComplete" && stage != "Panic" {
        return None;
    }
    let verb = s(ev.get("verb")?)?;
    if !WRITE_VERBS.contains(&verb.as_str()) {
        return None;
    }
    let request_uri = s(ev.get("requestURI")?)?;
    if request_uri.contains("dryRun=All") {
        return None;
    }
    let user = ev.pointer("/user/username").and_then(s).unwrap_or_default();
    if matches!(
        user.as_str(),
        "system:apiserver"
            | "calico-harden-seeder"
            | "calico-harden-emulator"
            | "calico-apiserver"
            | "calico-kube-controllers"
    ) {
        return None;
    }
    // Access and identity reviews are "create" requests that persist nothing.
    let reviewed = ev
        .pointer("/objectRef/resource")
        .and_then(|r| r.as_str())
        .is_some_and(|r| r.ends_with("reviews"));
    if reviewed {
        return None;
    }
    let obj = ev.get("objectRef");
    let field = |k: &str| {
        obj.and_then(|o| o.get(k))
            .and_then(s)
            .filter(|v| !v.is_empty())
    };
    Some(AuditEvent {
        verb,
        user,
        request_uri,
        resource: field("resource").unwrap_or_default(),
        namespace: field("namespace"),
        name: field("name"),
        response_code: ev
            .pointer("/responseStatus/code")
            .and_then(|c| c.as_u64())
            .map(|c| c as u16),
        api_group: field("apiGroup").unwrap_or_default(),
        subresource: field("subresource"),
        request_object: ev.get("requestObject").cloned(),
    })
}
