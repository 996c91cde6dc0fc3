//! Distribution, proven with the tools that consume it: `cargo xtask dist` packs the plugin and
//! renders the krew manifest, krew's own validator accepts it, krew itself installs it offline
//! from the archive, and kubectl then runs `kubectl calico-harden` from KREW_ROOT/bin. The
//! release workflow, which cannot run here, is linted with actionlint.
//!
//! krew (sigs.k8s.io/krew v0.4.3) and actionlint are built from the Go modules pinned in
//! tests/tools/, so Go is required, as for the control plane.
#![allow(clippy::print_stderr)] // build and packing times, shown with --nocapture

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use crate::harness;

const TAG: &str = "v0.1.0";

fn plugin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kubectl-calico_harden"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn find_go() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::env::var_os("GO")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|dir| dir.join("go")));
    }
    if let Some(goroot) = std::env::var_os("GOROOT") {
        candidates.push(PathBuf::from(goroot).join("bin").join("go"));
    }
    candidates.push(PathBuf::from("/usr/local/go/bin/go"));
    candidates
        .into_iter()
        .find(|go| go.is_file())
        .unwrap_or_else(|| {
            panic!(
                "Go is required to build krew and actionlint from tests/tools/ for this test: \
             install Go 1.26+ (https://go.dev/doc/install) or set $GO, and retry"
            )
        })
}

static GO_BUILDS: Mutex<()> = Mutex::new(());

/// Builds `packages` of the Go module in tests/tools/`module` into target/tools/`module`/, once
/// per change of its go.mod (go's own cache makes a rebuild cheap), and returns that directory.
fn go_tools(module: &str, packages: &[(&str, &str)]) -> PathBuf {
    let _one_at_a_time = GO_BUILDS.lock().unwrap_or_else(|p| p.into_inner());
    let source = root().join("tests/tools").join(module);
    let bin = target_dir().join("tools").join(module);
    let go = find_go();
    let started = Instant::now();
    for (package, name) in packages {
        let out = Command::new(&go)
            .current_dir(&source)
            .args(["build", "-o"])
            .arg(bin.join(name))
            .arg(package)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", go.display()));
        assert!(
            out.status.success(),
            "go build {package} in {} failed:\n{}",
            source.display(),
            text(&out)
        );
    }
    eprintln!(
        "built {} from tests/tools/{module} in {:.1}s",
        packages.iter().map(|p| p.1).collect::<Vec<_>>().join(", "),
        started.elapsed().as_secs_f64()
    );
    bin
}

/// A local port that records whether anything connected: set as HTTP(S)_PROXY, it shows
/// whether a program tried the network.
struct NetworkTrap {
    listener: TcpListener,
}

impl NetworkTrap {
    fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a local port");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        Self { listener }
    }

    fn proxy_url(&self) -> String {
        format!(
            "http://{}",
            self.listener.local_addr().expect("local address")
        )
    }

    fn was_contacted(&self) -> bool {
        self.listener.accept().is_ok()
    }
}

/// `cargo xtask dist` with the plugin this test run built (xtask itself built optimised, so
/// that compressing a debug binary takes seconds), into `out`, labelled for `target`.
fn dist(out: &Path, target: Option<&str>) -> Output {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Command::new(cargo)
        .current_dir(root())
        .args([
            "run",
            "--quiet",
            "--release",
            "--package",
            "xtask",
            "--",
            "dist",
            "--tag",
            TAG,
        ])
        .args(target.map(|t| format!("--target={t}")))
        .arg("--binary")
        .arg(plugin())
        .arg("--out")
        .arg(out)
        .stdin(Stdio::null())
        .output()
        .expect("running cargo xtask dist")
}

fn host_archive_name() -> String {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let extension = if os == "windows" { "zip" } else { "tar.gz" };
    format!("kubectl-calico_harden-{TAG}-{os}-{arch}.{extension}")
}

fn kubectl_dir() -> PathBuf {
    if !harness::kubectl_path().is_file() {
        // The harness builds kubectl from the control plane's Kubernetes version on first use.
        drop(harness::cluster(harness::Seed::Empty));
    }
    harness::bin_dir()
}

#[test]
fn krew_validates_and_installs_the_rendered_manifest_offline() {
    let tools = go_tools(
        "krew",
        &[
            ("sigs.k8s.io/krew/cmd/krew", "kubectl-krew"),
            (
                "sigs.k8s.io/krew/cmd/validate-krew-manifest",
                "validate-krew-manifest",
            ),
        ],
    );
    let kubectl_dir = kubectl_dir();
    let temp = tempfile::tempdir().expect("temp dir");
    let out_dir = temp.path().join("dist");

    let started = Instant::now();
    let packed = dist(&out_dir, None);
    assert!(
        packed.status.success(),
        "cargo xtask dist failed:\n{}",
        text(&packed)
    );
    eprintln!(
        "cargo xtask dist --binary took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let manifest = out_dir.join("calico-harden.yaml");
    let archive = out_dir.join(host_archive_name());
    let rendered = std::fs::read_to_string(&manifest).expect("dist wrote calico-harden.yaml");
    let sum_file = std::fs::read_to_string(out_dir.join(format!("{}.sha256", host_archive_name())))
        .expect("dist wrote the archive's .sha256");
    let sha256 = sum_file.split_whitespace().next().unwrap_or_default();
    assert_eq!(sha256.len(), 64, "{sum_file}");
    assert!(
        rendered.contains(&format!("sha256: {sha256}")),
        "{rendered}"
    );
    assert!(rendered.contains(&format!("version: {TAG}")), "{rendered}");
    assert!(
        !rendered.contains("{{"),
        "unrendered template left:\n{rendered}"
    );
    assert_eq!(
        rendered.matches("- selector:").count(),
        1,
        "only this machine's archive exists, so only its platform is listed:\n{rendered}"
    );

    // A Windows archive (zip, .exe inside) joins the manifest; krew installs it below as if on
    // Windows. The binary inside is this machine's, which is all packing and krew look at.
    let packed = dist(&out_dir, Some("x86_64-pc-windows-msvc"));
    assert!(
        packed.status.success(),
        "cargo xtask dist --target x86_64-pc-windows-msvc failed:\n{}",
        text(&packed)
    );
    let windows_archive = out_dir.join(format!("kubectl-calico_harden-{TAG}-windows-amd64.zip"));
    let rendered = std::fs::read_to_string(&manifest).expect("dist wrote calico-harden.yaml");
    assert_eq!(rendered.matches("- selector:").count(), 2, "{rendered}");
    assert!(rendered.contains("os: windows"), "{rendered}");

    // krew's validator; its install step downloads the uri, so krew install below does that
    // part from the archive instead.
    let validated = Command::new(tools.join("validate-krew-manifest"))
        .args(["-manifest"])
        .arg(&manifest)
        .arg("-skip-install")
        .output()
        .expect("running validate-krew-manifest");
    assert!(
        validated.status.success(),
        "validate-krew-manifest rejected {}:\n{}\n{rendered}",
        manifest.display(),
        text(&validated)
    );

    let krew_root = temp.path().join("krew");
    let path = std::env::join_paths([
        tools.clone(),
        kubectl_dir,
        krew_root.join("bin"),
        "/usr/bin".into(),
        "/bin".into(),
    ])
    .expect("PATH");
    let trap = NetworkTrap::new();
    let env = |command: &mut Command| {
        command
            .env_clear()
            .env("HOME", temp.path())
            .env("PATH", &path)
            .env("KREW_ROOT", &krew_root)
            .env("HTTP_PROXY", trap.proxy_url())
            .env("HTTPS_PROXY", trap.proxy_url())
            .env("http_proxy", trap.proxy_url())
            .env("https_proxy", trap.proxy_url())
            .env("ALL_PROXY", trap.proxy_url())
            .stdin(Stdio::null());
    };
    let mut install = Command::new(harness::kubectl_path());
    install
        .arg("krew")
        .arg("install")
        .arg(format!("--manifest={}", manifest.display()))
        .arg(format!("--archive={}", archive.display()));
    env(&mut install);
    let installed = install.output().expect("running kubectl krew install");
    assert!(
        installed.status.success(),
        "kubectl krew install failed:\n{}",
        text(&installed)
    );
    let said = String::from_utf8_lossy(&installed.stderr);
    assert!(
        said.contains("Installed plugin: calico-harden"),
        "{}",
        text(&installed)
    );
    assert!(
        said.contains("kubectl calico-harden completion kubectl --install"),
        "the caveats show how to enable completion:\n{said}"
    );
    assert!(
        !trap.was_contacted(),
        "krew tried the network during an offline --archive install:\n{}",
        text(&installed)
    );
    let store = krew_root.join("store/calico-harden").join(TAG);
    assert!(
        store.join("LICENSE").is_file(),
        "LICENSE not installed in {}",
        store.display()
    );
    assert!(krew_root.join("bin/kubectl-calico_harden").exists());

    let windows_root = temp.path().join("krew-windows");
    let mut install = Command::new(harness::kubectl_path());
    install
        .arg("krew")
        .arg("install")
        .arg(format!("--manifest={}", manifest.display()))
        .arg(format!("--archive={}", windows_archive.display()));
    env(&mut install);
    install
        .env("KREW_ROOT", &windows_root)
        .env("KREW_OS", "windows")
        .env("KREW_ARCH", "amd64");
    let installed = install.output().expect("running kubectl krew install");
    assert!(
        installed.status.success(),
        "kubectl krew install of the Windows archive failed:\n{}",
        text(&installed)
    );
    let store = windows_root.join("store/calico-harden").join(TAG);
    for file in ["kubectl-calico_harden.exe", "LICENSE"] {
        assert!(
            store.join(file).is_file(),
            "{file} not installed in {}",
            store.display()
        );
    }

    let mut help = Command::new(harness::kubectl_path());
    help.args(["calico-harden", "--help"]);
    env(&mut help);
    let help = help.output().expect("running kubectl calico-harden --help");
    assert!(
        help.status.success(),
        "kubectl calico-harden --help:\n{}",
        text(&help)
    );
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("Harden a Calico cluster"),
        "{}",
        text(&help)
    );

    // The documented way to enable completion, through kubectl, as the caveats say.
    let mut enable = Command::new(harness::kubectl_path());
    enable.args(["calico-harden", "completion", "kubectl", "--install"]);
    env(&mut enable);
    let enabled = enable
        .output()
        .expect("running completion kubectl --install");
    assert!(
        enabled.status.success(),
        "completion kubectl --install:\n{}",
        text(&enabled)
    );
    let link = krew_root.join("bin/kubectl_complete-calico_harden");
    assert_eq!(
        std::fs::read_link(&link).ok(),
        Some(PathBuf::from("kubectl-calico_harden")),
        "the hook links to the plugin next to it, so krew upgrades keep it working:\n{}",
        text(&enabled)
    );
    let mut complete = Command::new(harness::kubectl_path());
    complete.args(["__complete", "calico-harden", "enable-"]);
    env(&mut complete);
    let completed = complete.output().expect("running kubectl __complete");
    assert!(
        String::from_utf8_lossy(&completed.stdout).starts_with("enable-hep\t"),
        "kubectl completes the krew-installed plugin:\n{}",
        text(&completed)
    );
    assert!(!trap.was_contacted(), "something tried the network");
}

#[test]
fn release_workflow_passes_actionlint() {
    let tools = go_tools(
        "actionlint",
        &[("github.com/rhysd/actionlint/cmd/actionlint", "actionlint")],
    );
    let workflows = root().join(".github/workflows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&workflows)
        .unwrap_or_else(|e| panic!("reading {}: {e}", workflows.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.iter().any(|f| f.ends_with("release.yml")),
        "no .github/workflows/release.yml"
    );
    // shellcheck, when installed, also checks every `run:` script.
    let linted = Command::new(tools.join("actionlint"))
        .current_dir(root())
        .arg("-no-color")
        .args(&files)
        .output()
        .expect("running actionlint");
    assert!(
        linted.status.success(),
        "actionlint found problems:\n{}",
        text(&linted)
    );
}
