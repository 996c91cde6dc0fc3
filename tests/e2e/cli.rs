//! The command line without a cluster: help, usage errors and their exit codes, offline output.
//! Every usage error must be reported before any request (these tests point at a kubeconfig
//! whose server does not exist, so a request would show up as a connection error instead).

use std::io::Write;

use crate::tutorial_render::plugin;

fn run(args: &[&str]) -> (i32, String, String) {
    let kubeconfig = unreachable_kubeconfig();
    let out = plugin()
        .args(args)
        .env("KUBECONFIG", kubeconfig.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A kubeconfig pointing at a closed loopback port.
pub fn unreachable_kubeconfig() -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write!(
        file,
        "apiVersion: v1\nkind: Config\ncurrent-context: nowhere\nclusters:\n- name: nowhere\n  cluster:\n    server: https://127.0.0.1:1\ncontexts:\n- name: nowhere\n  context:\n    cluster: nowhere\n    user: nobody\nusers:\n- name: nobody\n  user:\n    token: not-a-secret-but-still-never-printed\n"
    )
    .unwrap();
    file
}

#[test]
fn help_lists_every_stage_and_succeeds() {
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for stage in [
        "safety-net",
        "localhost",
        "isolate-apps",
        "calico-apiserver-to-kapi",
        "controllers-to-calico-apiserver",
        "hosts-to-calico-apiserver",
        "nodes-to-kapi",
        "srcnat-to-kapi",
        "nodes-to-typha",
        "registry",
        "enable-hep",
        "lockdown",
        "plan",
        "render",
        "up",
        "history",
        "rollback",
    ] {
        assert!(stdout.contains(stage), "--help misses {stage}");
    }
}

#[test]
fn tutorial_file_names_are_aliases() {
    for alias in [
        "allow-everything",
        "container-to-localhost",
        "deny-app-policy",
        "default-deny",
        "worker-nodes-to-typha",
        "private-registry",
        "status",
    ] {
        let (code, stdout, _) = run(&[alias, "--help"]);
        assert_eq!(code, 0, "{alias}");
        assert!(stdout.contains("Usage:"), "{alias}");
    }
}

#[test]
fn usage_errors_exit_2_with_one_clear_line_and_no_request() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["registry", "--ip", "10.0.0.300"],
            "invalid registry address",
        ),
        (
            &["registry", "--ip", "10.0.0.5/33"],
            "invalid registry address",
        ),
        (&["registry", "--ip", "10.0.0.5/24"], "host bits are set"),
        (
            &["registry", "--ip", "registry.local"],
            "invalid registry address",
        ),
        (
            &["registry", "--ip", "10.0.0.5", "--port", "0"],
            "invalid registry port",
        ),
        (
            &["registry", "--ip", "10.0.0.5", "--port", "65536"],
            "invalid registry port",
        ),
        (
            &["registry", "--ip", "10.0.0.5", "--port", "http"],
            "invalid registry port",
        ),
        (&["registry"], "--ip"),
        (
            &["render", "no-such-stage"],
            "invalid value 'no-such-stage'",
        ),
        (&["up", "--through", "nope"], "invalid value 'nope'"),
        (
            &["isolate-apps", "--exclude-namespaces", "Bad_NS"],
            "invalid namespace",
        ),
        (
            &["plan", "--request-timeout", "soon"],
            "invalid --request-timeout",
        ),
        (
            &["lockdown", "--confirm-timeout=-5s"],
            "invalid --confirm-timeout",
        ),
        (&["plan", "--dry-run=maybe"], "invalid value 'maybe'"),
        (&["plan", "-o", "xml"], "invalid value 'xml'"),
        (&["render", "--apiserver-port", "6443"], "--offline"),
        (
            &["render", "--offline", "--apiserver-port", "99999"],
            "invalid --apiserver-port",
        ),
        (
            &["render", "--offline", "--control-plane-node", "Bad Node"],
            "invalid control-plane node name",
        ),
        (
            &["render", "--offline", "--registry-port", "5000"],
            "without a registry address",
        ),
        (&["rollback", "3", "--all"], "cannot be used with"),
        (
            &["plan", "--context", "missing"],
            "context \"missing\" is not in the kubeconfig",
        ),
        (
            &["plan", "--kubeconfig", "/nonexistent/kubeconfig"],
            "does not exist",
        ),
        (
            &["nodes-to-kapi", "-n", "kube-system"],
            "-n/--namespace does not apply",
        ),
        (&["plan", "-n", "Not_A_Namespace"], "invalid namespace"),
        (&["completion", "tcsh"], "invalid value 'tcsh'"),
        (&["frobnicate"], "unrecognized subcommand"),
    ];
    for (args, expected) in cases {
        let (code, stdout, stderr) = run(args);
        assert_eq!(code, 2, "{args:?}: exit code; stderr: {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected {expected:?} in {stderr}"
        );
        assert!(
            !stderr.contains("127.0.0.1:1"),
            "{args:?}: a request was attempted: {stderr}"
        );
        assert!(
            stdout.is_empty(),
            "{args:?}: stdout must stay empty: {stdout}"
        );
    }
}

#[test]
fn malformed_kubeconfig_is_a_usage_error() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write!(file, "this: [is not: a kubeconfig").unwrap();
    let out = plugin()
        .args(["plan", "--kubeconfig"])
        .arg(file.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read kubeconfig"));
}

#[test]
fn unreachable_server_is_a_cluster_error_without_secrets() {
    let (code, _, stderr) = run(&["plan", "-vvv"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("127.0.0.1:1") || stderr.contains("onnect"),
        "{stderr}"
    );
    assert!(stderr.contains("hint:"), "{stderr}");
    assert!(
        !stderr.contains("not-a-secret"),
        "the token leaked: {stderr}"
    );
}

#[test]
fn enable_hep_prints_shell_commands_without_a_cluster() {
    let (code, stdout, _) = run(&["enable-hep", "--print-command", "bash"]);
    assert_eq!(code, 0);
    assert!(
        stdout.starts_with(
            "kubectl patch kubecontrollersconfiguration default --type=merge --patch='{"
        )
    );
    let (code, stdout, _) = run(&["enable-hep", "--print-command", "powershell", "--disable"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("\"autoCreate\":\"Disabled\""));
    assert!(stdout.contains("--patch-file"));
}

#[test]
fn rbac_prints_a_cluster_role() {
    let (code, stdout, _) = run(&["rbac"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("kind: ClusterRole"));
    assert!(stdout.contains("globalnetworkpolicies"));
}

#[test]
fn completion_scripts_are_generated_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let (code, stdout, _) = run(&["completion", shell]);
        assert_eq!(code, 0, "{shell}");
        assert!(stdout.contains("kubectl-calico_harden"), "{shell}");
        // bash, zsh, fish and elvish ask the binary for candidates; PowerShell's lists them.
        let dynamic = ["bash", "zsh", "fish", "elvish"].contains(&shell);
        assert!(
            stdout.contains(if dynamic { "__complete" } else { "enable-hep" }),
            "{shell}"
        );
    }
}

/// What users read first: the top-level help and a usage error, snapshotted.
#[test]
fn help_and_usage_error_snapshots() {
    let (_, help, _) = run(&["--help"]);
    insta::assert_snapshot!("top_level_help", help);
    let (_, _, error) = run(&["registry", "--ip", "10.0.0.5/24"]);
    insta::assert_snapshot!("registry_host_bits_error", error);
    let (_, enable_hep_help, _) = run(&["enable-hep", "--help"]);
    insta::assert_snapshot!("enable_hep_help", enable_hep_help);
}
