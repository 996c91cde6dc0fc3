//! Interruption, concurrent edits, least privilege, secrets and scale, against the real control
//! plane.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::faults_e2e::FaultProxy;
use crate::harness::{self, ClusterGuard, Seed};
use crate::stages_e2e::{Run, calico_harden, calico_harden_env, calico_state, with_kubeconfig};
use crate::tutorial_render::plugin;

const TEST_LABEL: &str = "calico-harden-test=true";

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The plugin running in the background through a fault proxy, its stderr captured.
fn spawn_through(proxy: &FaultProxy, args: &[&str]) -> std::process::Child {
    plugin()
        .arg("--kubeconfig")
        .arg(proxy.kubeconfig())
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn history(c: &ClusterGuard) -> Vec<Value> {
    let out = calico_harden(c, &["history", "-o", "json"]);
    serde_json::from_str::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_process_killed_at_each_write_of_lockdown_can_be_rolled_back() {
    let c = harness::cluster(Seed::Lab);
    calico_harden(&c, &["up", "--yes"]);
    calico_harden(&c, &["enable-hep", "--wait", "--yes"]);
    let ready = calico_state(&c);
    for writes in 1..=2 {
        let killed = calico_harden_env(
            &c,
            &["lockdown", "--yes"],
            &[(
                "KUBECTL_CALICO_HARDEN_ABORT_AFTER_WRITES",
                &writes.to_string(),
            )],
        );
        assert_ne!(killed.code, 0, "write {writes}: the process must die");
        assert_eq!(
            history(&c).last().unwrap()["state"],
            "pending",
            "write {writes}"
        );
        let rollback = calico_harden(&c, &["rollback", "--yes"]);
        assert_eq!(rollback.code, 0, "write {writes}: {}", rollback.stderr);
        assert_eq!(
            calico_state(&c),
            ready,
            "write {writes}: the safety net is back"
        );
    }
    println!("crash recovery: 2 kill points of `lockdown`, each restored by rollback");
}

#[test]
fn ctrl_c_mid_write_finishes_the_write_marks_the_revision_and_exits_130() {
    let c = harness::cluster(Seed::Lab);
    let start = calico_state(&c);
    // The first policy write is held for two seconds; Ctrl-C arrives while it is in flight.
    let proxy = FaultProxy::start_matching(
        &c,
        "POST /apis/projectcalico.org/v3/globalnetworkpolicies",
        "delay",
        "2s",
    );
    let child = spawn_through(&proxy, &["up", "--yes"]);
    wait_for("the held write", Duration::from_secs(20), || {
        proxy
            .log()
            .contains("POST /apis/projectcalico.org/v3/globalnetworkpolicies")
    });
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted after 1 of"), "{stderr}");
    let last = history(&c).last().unwrap().clone();
    assert_eq!(last["state"], "failed", "{last}");
    assert_eq!(
        last["objects"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["applied"] == true)
            .count(),
        1
    );
    calico_harden(&c, &["rollback", "--yes"]);
    assert_eq!(calico_state(&c), start);
}

#[test]
fn ctrl_c_at_a_prompt_changes_nothing_and_exits_130() {
    let c = harness::cluster(Seed::Lab);
    let mark = c.audit_mark();
    // A pseudo-terminal, so the prompt really is interactive; Ctrl-C is typed as the operator would.
    let driver = r#"
import os, pty, sys, time, select
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out = b""
deadline = time.time() + 60
while b"Apply" not in out and time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.5)
    if r:
        try:
            out += os.read(fd, 4096)
        except OSError:
            break
os.write(fd, b"\x03")
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
code = os.waitstatus_to_exitcode(status)
sys.exit(130 if code == -2 else code)
"#;
    let out = Command::new("python3")
        .args([
            "-c",
            driver,
            env!("CARGO_BIN_EXE_kubectl-calico_harden"),
            "--kubeconfig",
        ])
        .arg(c.kubeconfig())
        .arg("localhost")
        .env("NO_COLOR", "1")
        .output()
        .expect("python3 drives the pseudo-terminal");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Apply 1 change(s)"),
        "the prompt was shown: {text}"
    );
    assert_eq!(out.status.code(), Some(130), "{text}");
    assert!(c.writes_since(&mark).is_empty());
}

#[test]
fn an_object_changed_between_the_diff_and_the_write_is_a_conflict_not_a_clobber() {
    let c = harness::cluster(Seed::Lab);
    calico_harden(&c, &["localhost", "--yes"]);
    c.kubectl_ok(&[
        "patch",
        "globalnetworkpolicies.projectcalico.org",
        "allow-containers-access-to-localhost",
        "--type=merge",
        "-p",
        "{\"spec\":{\"order\":5}}",
    ]);
    let proxy = FaultProxy::start_matching(
        &c,
        "PUT /apis/projectcalico.org/v3/globalnetworkpolicies/allow-containers-access-to-localhost",
        "delay",
        "2s",
    );
    let child = spawn_through(&proxy, &["localhost", "--yes"]);
    wait_for("the held update", Duration::from_secs(20), || {
        proxy.log().contains("PUT /apis/projectcalico.org")
    });
    // A colleague edits the same policy while our update is on its way.
    c.kubectl_ok(&[
        "patch",
        "globalnetworkpolicies.projectcalico.org",
        "allow-containers-access-to-localhost",
        "--type=merge",
        "-p",
        "{\"spec\":{\"order\":9}}",
    ]);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("someone changed or created this object after it was read"),
        "{stderr}"
    );
    let policy = c.get_json(&[
        "globalnetworkpolicies.projectcalico.org",
        "allow-containers-access-to-localhost",
    ]);
    assert_eq!(policy["spec"]["order"], 9, "the colleague's change is kept");
}

fn apply_role(c: &ClusterGuard, role: &Value) {
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "limited-calico-harden", "labels": {"calico-harden-test": "true"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "limited-user"}],
    });
    let _ = c.kubectl(&["delete", "clusterrole,clusterrolebinding", "-l", TEST_LABEL]);
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [role, binding]});
    c.kubectl_stdin_ok(&["create", "-f", "-"], &list.to_string());
}

fn shipped_role(c: &ClusterGuard) -> Value {
    let mut role: Value =
        serde_json::from_str(&calico_harden(c, &["rbac", "-o", "json"]).stdout).unwrap();
    role["metadata"]["labels"]["calico-harden-test"] = json!("true");
    role
}

/// The walk-through as the limited user; returns every run.
fn walk_through(c: &ClusterGuard) -> Vec<(String, Run, usize)> {
    let steps: &[&[&str]] = &[
        &["plan"],
        &["up", "--yes"],
        &["enable-hep", "--yes", "--wait", "--timeout", "20s"],
        &["check"],
        &["lockdown", "--yes"],
        &["history"],
        &["rollback", "--all", "--yes"],
    ];
    let mut runs = Vec::new();
    for step in steps {
        let mark = c.audit_mark();
        let mut args = vec!["--context", "limited"];
        args.extend_from_slice(step);
        let run = calico_harden(c, &args);
        let writes = c.writes_since(&mark).len();
        runs.push((step.join(" "), run, writes));
    }
    runs
}

#[test]
fn the_shipped_cluster_role_is_enough_and_every_rule_in_it_is_needed() {
    let c = harness::cluster(Seed::Lab);
    let role = shipped_role(&c);
    apply_role(&c, &role);
    for (step, run, _) in walk_through(&c) {
        assert_eq!(
            run.code, 0,
            "limited user with the shipped role: {step}\n{}",
            run.stderr
        );
    }

    let rules = role["rules"].as_array().unwrap().clone();
    for (index, rule) in rules.iter().enumerate() {
        c.reset(Seed::Lab);
        let mut reduced = role.clone();
        reduced["rules"].as_array_mut().unwrap().remove(index);
        apply_role(&c, &reduced);
        let resources: Vec<&str> = rule["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        let verbs: Vec<&str> = rule["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        let runs = walk_through(&c);
        let named = |run: &Run| {
            resources.iter().any(|r| run.stderr.contains(r))
                && verbs.iter().any(|v| run.stderr.contains(v))
        };
        let failed = runs.iter().find(|(_, run, _)| run.code != 0);
        match failed {
            Some((step, run, writes)) => {
                assert!(
                    named(run),
                    "rule {index} {resources:?} {verbs:?} removed: `{step}` failed without naming it:\n{}",
                    run.stderr
                );
                assert_eq!(
                    *writes, 0,
                    "rule {index} removed: `{step}` failed but wrote"
                );
            }
            None => {
                // Optional reads degrade with a warning that names them.
                assert!(
                    runs.iter()
                        .any(|(_, run, _)| named(run) && run.stderr.contains("cannot")),
                    "rule {index} {resources:?} removed: nothing failed and nothing said so"
                );
            }
        }
    }
    println!(
        "least privilege: the shipped role runs the whole walk-through; {} rules each proven necessary",
        rules.len()
    );
}

#[test]
fn no_token_key_or_certificate_appears_in_any_output() {
    let c = harness::cluster(Seed::Lab);
    // A token-based identity: a service account bound to cluster-admin.
    let _ = c.kubectl(&["delete", "serviceaccount", "secret-test", "-n", "default"]);
    c.kubectl_ok(&["create", "serviceaccount", "secret-test", "-n", "default"]);
    let _ = c.kubectl(&["delete", "clusterrolebinding", "secret-test"]);
    c.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "secret-test",
        "--clusterrole=cluster-admin",
        "--serviceaccount=default:secret-test",
    ]);
    c.kubectl_ok(&["label", "clusterrolebinding", "secret-test", TEST_LABEL]);
    let token = c
        .kubectl_ok(&["create", "token", "secret-test", "-n", "default"])
        .trim()
        .to_string();
    assert!(token.len() > 100);
    let cert_config: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(c.kubeconfig()).unwrap()).unwrap();
    let mut token_config = cert_config.clone();
    token_config["users"] = json!([{"name": "admin", "user": {"token": token}}]);
    token_config["contexts"] = json!([{"name": "admin", "context": {"cluster": cert_config["clusters"][0]["name"], "user": "admin"}}]);
    token_config["current-context"] = json!("admin");
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("token-kubeconfig");
    std::fs::write(&token_path, token_config.to_string()).unwrap();

    let user = &cert_config["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "admin")
        .unwrap()["user"];
    let cert_data = user["client-certificate-data"]
        .as_str()
        .unwrap()
        .to_string();
    let key_data = user["client-key-data"].as_str().unwrap().to_string();
    let secrets: Vec<(&str, String)> = vec![
        ("the token", token.clone()),
        (
            "the token's signature",
            token.rsplit('.').next().unwrap().to_string(),
        ),
        ("the client certificate", cert_data[20..80].to_string()),
        ("the client key", key_data[20..80].to_string()),
        ("a PEM block", "-----BEGIN".to_string()),
        ("an Authorization header", "Bearer ".to_string()),
    ];
    let commands: &[&[&str]] = &[
        &["plan", "-vvv"],
        &["plan", "-vvv", "-o", "json"],
        &["up", "--yes", "-vvv"],
        &["enable-hep", "--yes", "--wait", "-vvv"],
        &["check", "--after", "lockdown", "-vvv"],
        &["explain", "control", "node1", "tcp/10250", "-vvv"],
        &["render", "-vvv"],
        &["lockdown", "--yes", "-vvv"],
        &["history", "-vvv", "-o", "yaml"],
        &["rollback", "--all", "--yes", "-vvv"],
        &["localhost", "--dry-run=server", "-vvv"],
        &["rbac", "-vvv"],
    ];
    let mut checked = 0;
    for kubeconfig in [c.kubeconfig().to_path_buf(), token_path.clone()] {
        for args in commands {
            let run = with_kubeconfig(&kubeconfig, args, &[]);
            for (what, secret) in &secrets {
                assert!(
                    !run.stdout.contains(secret.as_str()),
                    "{args:?}: {what} on stdout"
                );
                assert!(
                    !run.stderr.contains(secret.as_str()),
                    "{args:?}: {what} on stderr"
                );
            }
            checked += 1;
        }
    }
    // The token identity really worked (its history entries name the service account).
    let runs = with_kubeconfig(&token_path, &["history"], &[]);
    assert!(
        runs.stdout
            .contains("system:serviceaccount:default:secret-test"),
        "{}",
        runs.stdout
    );
    println!(
        "secrets: {checked} runs at -vvv with certificate and token identities, none printed a secret"
    );
}

/// Peak resident memory (KiB) and wall time of a command, measured by the parent.
fn measure(
    program: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Duration, u64, std::process::Output) {
    let script = "import resource, subprocess, sys, time\nstart = time.monotonic()\np = subprocess.run(sys.argv[1:], capture_output=True)\nelapsed = time.monotonic() - start\nsys.stderr.buffer.write(p.stderr)\nsys.stdout.buffer.write(p.stdout)\nsys.stderr.write('\\nMEASURE %f %d\\n' % (elapsed, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\nsys.exit(p.returncode)";
    let mut command = Command::new("python3");
    command.args(["-c", script]).arg(program).args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("MEASURE "))
        .expect("measured");
    let mut parts = line.split_whitespace().skip(1);
    let seconds: f64 = parts.next().unwrap().parse().unwrap();
    let kib: u64 = parts.next().unwrap().parse().unwrap();
    (Duration::from_secs_f64(seconds), kib, out)
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

#[test]
fn at_scale_plan_and_every_stage_stay_correct_and_close_to_kubectl_get() {
    let c = harness::cluster(Seed::Lab);
    let seeded = Command::new(harness::bin_dir().join("controlplane"))
        .args(["scale-seed", "--dir"])
        .arg(c.dir())
        .args(["--nodes", "2000", "--pods", "20000", "--policies", "1000"])
        .output()
        .unwrap();
    assert!(
        seeded.status.success(),
        "{}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    print!("{}", String::from_utf8_lossy(&seeded.stdout));
    let kubeconfig = c.kubeconfig().to_str().unwrap().to_string();
    let plugin_path = std::path::PathBuf::from(env!("CARGO_BIN_EXE_kubectl-calico_harden"));
    let kubectl = ClusterGuard::kubectl_path();
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap().to_string();
    let env = [("KUBECACHEDIR", cache_dir.as_str()), ("NO_COLOR", "1")];
    // What plan reads, listed by kubectl.
    let list_args = [
        "--kubeconfig",
        kubeconfig.as_str(),
        "get",
        "nodes,pods,namespaces,globalnetworkpolicies.projectcalico.org,networkpolicies.projectcalico.org,hostendpoints.projectcalico.org",
        "-A",
        "-o",
        "json",
    ];
    let mut kubectl_times = Vec::new();
    let mut plan_times = Vec::new();
    let mut plan_peak = 0;
    let mut kubectl_peak = 0;
    for _ in 0..3 {
        let (t, kib, out) = measure(&kubectl, &list_args, &env);
        assert!(out.status.success());
        kubectl_times.push(t);
        kubectl_peak = kubectl_peak.max(kib);
        let (t, kib, out) = measure(
            &plugin_path,
            &["--kubeconfig", &kubeconfig, "plan", "-o", "json"],
            &env,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        plan_times.push(t);
        plan_peak = plan_peak.max(kib);
        let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(plan["facts"]["node_count"], 2003);
        assert_eq!(plan["facts"]["control_plane_nodes"][0]["name"], "control");
    }
    let kubectl_median = median(kubectl_times);
    let plan_median = median(plan_times);
    let ratio = plan_median.as_secs_f64() / kubectl_median.as_secs_f64();

    let mut stage_times = Vec::new();
    for stage in [
        "safety-net",
        "localhost",
        "isolate-apps",
        "nodes-to-kapi",
        "kubelet",
    ] {
        let (t, _, out) = measure(
            &plugin_path,
            &["--kubeconfig", &kubeconfig, stage, "--yes"],
            &env,
        );
        assert!(
            out.status.success(),
            "{stage}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stage_times.push((stage, t));
    }
    let (up_time, up_peak, out) = measure(
        &plugin_path,
        &["--kubeconfig", &kubeconfig, "up", "--yes"],
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: Value =
        serde_json::from_str(&calico_harden(&c, &["plan", "-o", "json"]).stdout).unwrap();
    for stage in plan["stages"].as_array().unwrap() {
        let state = stage["state"].as_str().unwrap();
        if !["enable-hep", "lockdown", "registry"].contains(&stage["stage"].as_str().unwrap()) {
            assert!(state == "applied", "{}: {state}", stage["stage"]);
        }
    }
    println!(
        "scale (2,000 nodes, 20,000 pods, 1,000 policies): plan {:.2}s vs kubectl get {:.2}s = {ratio:.2}x; peak memory plan {} MiB, up {} MiB, kubectl {} MiB; up {:.2}s; stages {}",
        plan_median.as_secs_f64(),
        kubectl_median.as_secs_f64(),
        plan_peak / 1024,
        up_peak / 1024,
        kubectl_peak / 1024,
        up_time.as_secs_f64(),
        stage_times
            .iter()
            .map(|(s, t)| format!("{s} {:.2}s", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = std::io::stdout().flush();
    assert!(ratio <= 1.5, "plan took {ratio:.2}x of kubectl get");
    for (stage, t) in &stage_times {
        assert!(
            t.as_secs_f64() <= 1.5 * kubectl_median.as_secs_f64(),
            "{stage} took {:.2}s",
            t.as_secs_f64()
        );
    }
    c.reset(Seed::Lab);
}
