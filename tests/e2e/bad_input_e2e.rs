//! The bad-input matrix against the real cluster: every case exits 2 (usage) or 1 (cluster or
//! refusal) with an `error:` line that says what is wrong, and the API server's audit log shows
//! ZERO writes for it.

use std::path::Path;

use serde_json::Value;

use crate::faults_e2e::FaultProxy;
use crate::harness::{self, ClusterGuard, Seed};
use crate::stages_e2e::{calico_harden, with_kubeconfig};

/// The admin kubeconfig with `edit` applied to its YAML (as JSON).
fn variant(
    c: &ClusterGuard,
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&mut Value),
) -> std::path::PathBuf {
    let text = std::fs::read_to_string(c.kubeconfig()).unwrap();
    let mut config: Value = serde_saphyr::from_str(&text).unwrap();
    edit(&mut config);
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    path
}

struct Case {
    name: &'static str,
    kubeconfig: std::path::PathBuf,
    args: Vec<&'static str>,
    code: i32,
    expect: &'static str,
}

#[test]
fn forty_bad_inputs_each_fail_clearly_and_write_nothing() {
    let c = harness::cluster(Seed::Lab);
    let dir = tempfile::tempdir().unwrap();
    let good = c.kubeconfig().to_path_buf();
    let missing = dir.path().join("missing-kubeconfig");
    let malformed = dir.path().join("malformed");
    std::fs::write(
        &malformed,
        "apiVersion: v1\nclusters: [ {name: x, cluster: {server: ",
    )
    .unwrap();
    let unreachable = variant(&c, dir.path(), "unreachable", |k| {
        k["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1".into();
    });
    let wrong_ca = variant(&c, dir.path(), "wrong-ca", |k| {
        let not_the_ca = k["users"][0]["user"]["client-certificate-data"].clone();
        k["clusters"][0]["cluster"]["certificate-authority-data"] = not_the_ca;
    });
    let no_context = variant(&c, dir.path(), "no-current-context", |k| {
        k["current-context"] = "".into();
    });
    let hidden = FaultProxy::start(&c, 0, "hide-calico", "1s");
    let no_calico = hidden.kubeconfig();

    let case = |name, kubeconfig: &std::path::PathBuf, args: &[&'static str], code, expect| Case {
        name,
        kubeconfig: kubeconfig.clone(),
        args: args.to_vec(),
        code,
        expect,
    };
    let cases = vec![
        case(
            "registry: octet out of range",
            &good,
            &["registry", "--ip", "10.0.0.300", "--yes"],
            2,
            "invalid registry address",
        ),
        case(
            "registry: IPv4 prefix too long",
            &good,
            &["registry", "--ip", "10.0.0.5/33", "--yes"],
            2,
            "invalid registry address",
        ),
        case(
            "registry: IPv6 prefix too long",
            &good,
            &["registry", "--ip", "fd00::1/129", "--yes"],
            2,
            "invalid registry address",
        ),
        case(
            "registry: host bits set",
            &good,
            &["registry", "--ip", "10.0.0.5/24", "--yes"],
            2,
            "host bits are set",
        ),
        case(
            "registry: a name, not an address",
            &good,
            &["registry", "--ip", "registry.example.com", "--yes"],
            2,
            "invalid registry address",
        ),
        case(
            "registry: empty address",
            &good,
            &["registry", "--ip", "", "--yes"],
            2,
            "invalid registry address",
        ),
        case(
            "registry: port 0",
            &good,
            &["registry", "--ip", "10.0.0.5", "--port", "0", "--yes"],
            2,
            "invalid registry port",
        ),
        case(
            "registry: port too large",
            &good,
            &["registry", "--ip", "10.0.0.5", "--port", "70000", "--yes"],
            2,
            "invalid registry port",
        ),
        case(
            "registry: port not a number",
            &good,
            &["registry", "--ip", "10.0.0.5", "--port", "https", "--yes"],
            2,
            "invalid registry port",
        ),
        case(
            "registry: no address",
            &good,
            &["registry", "--yes"],
            2,
            "--ip",
        ),
        case(
            "render: unknown stage",
            &good,
            &["render", "bogus-stage"],
            2,
            "invalid value 'bogus-stage'",
        ),
        case(
            "up: unknown --through stage",
            &good,
            &["up", "--through", "bogus", "--yes"],
            2,
            "invalid value 'bogus'",
        ),
        case(
            "up: --force without --lockdown",
            &good,
            &["up", "--force", "--yes"],
            2,
            "--lockdown",
        ),
        case(
            "isolate-apps: uppercase namespace",
            &good,
            &[
                "isolate-apps",
                "--exclude-namespaces",
                "Kube-System",
                "--yes",
            ],
            2,
            "invalid namespace",
        ),
        case(
            "isolate-apps: dotted namespace",
            &good,
            &["isolate-apps", "--exclude-namespaces", "a..b", "--yes"],
            2,
            "invalid namespace",
        ),
        case(
            "request timeout not a duration",
            &good,
            &["plan", "--request-timeout", "never"],
            2,
            "invalid --request-timeout",
        ),
        case(
            "confirm timeout not a duration",
            &good,
            &["lockdown", "--confirm-timeout=xyz", "--yes"],
            2,
            "invalid --confirm-timeout",
        ),
        case(
            "wait timeout with an unknown unit",
            &good,
            &["enable-hep", "--wait", "--timeout", "5d", "--yes"],
            2,
            "invalid --timeout",
        ),
        case(
            "unknown dry-run mode",
            &good,
            &["localhost", "--dry-run=partial"],
            2,
            "invalid value 'partial'",
        ),
        case(
            "unknown output format",
            &good,
            &["plan", "-o", "xml"],
            2,
            "invalid value 'xml'",
        ),
        case(
            "rollback: revision and --all",
            &good,
            &["rollback", "5", "--all", "--yes"],
            2,
            "cannot be used with",
        ),
        case(
            "rollback: revision not a number",
            &good,
            &["rollback", "five", "--yes"],
            2,
            "invalid value 'five'",
        ),
        case(
            "rollback: unknown revision",
            &good,
            &["rollback", "999", "--yes"],
            2,
            "revision 999 is not in the history",
        ),
        case(
            "render: lab override without --offline",
            &good,
            &["render", "--apiserver-port", "6443"],
            2,
            "--offline",
        ),
        case(
            "render: port 0",
            &good,
            &["render", "--offline", "--apiserver-port", "0"],
            2,
            "invalid --apiserver-port",
        ),
        case(
            "render: bad node name",
            &good,
            &["render", "--offline", "--control-plane-node", "Node One"],
            2,
            "invalid control-plane node name",
        ),
        case(
            "-n on a cluster-wide stage",
            &good,
            &["nodes-to-kapi", "-n", "kube-system", "--yes"],
            2,
            "-n/--namespace does not apply",
        ),
        case(
            "-n on enable-hep",
            &good,
            &["enable-hep", "-n", "kube-system", "--yes"],
            2,
            "-n/--namespace does not apply",
        ),
        case(
            "-n not a namespace name",
            &good,
            &["calico-apiserver-to-kapi", "-n", "Not_A_NS", "--yes"],
            2,
            "invalid namespace",
        ),
        case(
            "history namespace not a name",
            &good,
            &["history", "--history-namespace", "Kube System"],
            2,
            "invalid --history-namespace",
        ),
        case(
            "empty --context",
            &good,
            &["plan", "--context", ""],
            2,
            "--context needs a non-empty value",
        ),
        case(
            "empty --as",
            &good,
            &["localhost", "--as", "", "--yes"],
            2,
            "--as needs a non-empty value",
        ),
        case(
            "unknown subcommand",
            &good,
            &["harden-everything"],
            2,
            "unrecognized subcommand",
        ),
        case(
            "no terminal and no --yes: stage",
            &good,
            &["localhost"],
            1,
            "without confirmation",
        ),
        case(
            "no terminal and no --yes: up",
            &good,
            &["up"],
            1,
            "without confirmation",
        ),
        case(
            "no terminal and no --yes: enable-hep",
            &good,
            &["enable-hep"],
            1,
            "without confirmation",
        ),
        case(
            "lockdown before anything is in place",
            &good,
            &["lockdown", "--yes"],
            1,
            "lockdown refused",
        ),
        case(
            "missing kubeconfig",
            &missing,
            &["plan"],
            2,
            "does not exist",
        ),
        case(
            "malformed kubeconfig",
            &malformed,
            &["localhost", "--yes"],
            2,
            "cannot read kubeconfig",
        ),
        case(
            "kubeconfig without a current context",
            &no_context,
            &["plan"],
            2,
            "no current context",
        ),
        case(
            "unknown context",
            &good,
            &["localhost", "--context", "production", "--yes"],
            2,
            "context \"production\" is not in the kubeconfig",
        ),
        case(
            "unknown cluster",
            &good,
            &["plan", "--cluster", "nowhere"],
            2,
            "cluster \"nowhere\" is not in the kubeconfig",
        ),
        case(
            "unknown user",
            &good,
            &["plan", "--user", "nobody"],
            2,
            "user \"nobody\" is not in the kubeconfig",
        ),
        case(
            "unreachable server",
            &unreachable,
            &["localhost", "--yes", "--request-timeout", "3s"],
            1,
            "failed to",
        ),
        case(
            "server certificate from another CA",
            &wrong_ca,
            &["localhost", "--yes"],
            1,
            "failed to",
        ),
        case(
            "Calico API not served: plan",
            &no_calico,
            &["plan"],
            1,
            "does not serve the projectcalico.org/v3 API",
        ),
        case(
            "Calico API not served: stage",
            &no_calico,
            &["safety-net", "--yes"],
            1,
            "does not serve the projectcalico.org/v3 API",
        ),
        case(
            "Calico API not served: enable-hep",
            &no_calico,
            &["enable-hep", "--yes"],
            1,
            "does not serve the projectcalico.org/v3 API",
        ),
    ];
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut zero_write = 0;
    for case in &cases {
        let mark = c.audit_mark();
        let run = with_kubeconfig(&case.kubeconfig, &case.args, &[]);
        assert_eq!(
            run.code, case.code,
            "{}: exit code\n{}",
            case.name, run.stderr
        );
        let error_line = run
            .stderr
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_else(|| panic!("{}: no error line in\n{}", case.name, run.stderr));
        assert!(
            run.stderr.contains(case.expect),
            "{}: expected {:?} in\n{}",
            case.name,
            case.expect,
            run.stderr
        );
        assert!(
            error_line.len() < 400,
            "{}: one clear line, not {error_line}",
            case.name
        );
        let writes = c.writes_since(&mark);
        assert!(writes.is_empty(), "{}: wrote {writes:?}", case.name);
        zero_write += 1;
    }
    drop(hidden);

    // The one case that needs another seed: no KubeControllersConfiguration.
    c.reset(Seed::Empty);
    let mark = c.audit_mark();
    let run = calico_harden(&c, &["enable-hep", "--yes"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("KubeControllersConfiguration `default` does not exist"),
        "{}",
        run.stderr
    );
    assert!(c.writes_since(&mark).is_empty());
    zero_write += 1;
    println!(
        "bad input: {} cases tried, {zero_write} failed clearly with zero writes",
        cases.len() + 1
    );
}
