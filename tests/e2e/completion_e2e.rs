//! Completion in real shells: kubectl's own bash completion calling the
//! `kubectl_complete-calico_harden` hook, and the committed bash, zsh and fish scripts of the
//! binary, each completing a subcommand, a flag, a stage and a revision read from the cluster.
//! Plus: the committed scripts are what the CLI prints, and `completion kubectl --install`.
//!
//! The shells come from Debian's packages (bash-completion, zsh, fish); a missing one fails the
//! test with the package to install, never skips it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::harness::{self, ClusterGuard, Seed};

const SCRIPTS: [(&str, &str); 5] = [
    ("bash", "kubectl-calico_harden.bash"),
    ("zsh", "_kubectl-calico_harden"),
    ("fish", "kubectl-calico_harden.fish"),
    ("powershell", "kubectl-calico_harden.ps1"),
    ("elvish", "kubectl-calico_harden.elv"),
];

fn plugin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kubectl-calico_harden"))
}

fn completions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("completions")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The shell's path, or a failure naming the Debian package that provides it.
fn require(program: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!("{program} is not installed; the completion tests need it: apt-get install -y {package}")
        })
}

fn bash_completion_library() -> PathBuf {
    let library = PathBuf::from("/usr/share/bash-completion/bash_completion");
    assert!(
        library.is_file(),
        "{} is missing; kubectl's bash completion needs it: apt-get install -y bash-completion",
        library.display()
    );
    library
}

/// A directory for PATH with the plugin as users install it, kubectl's completion hook linked to
/// it, and the harness's kubectl.
struct Links {
    dir: tempfile::TempDir,
}

impl Links {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, target) in [
            ("kubectl-calico_harden", plugin()),
            ("kubectl_complete-calico_harden", plugin()),
            ("kubectl", harness::kubectl_path()),
        ] {
            std::os::unix::fs::symlink(target, dir.path().join(name)).expect("symlink");
        }
        Self { dir }
    }

    /// `program` with KUBECONFIG for the cluster and this directory first on PATH.
    fn command(&self, cluster: &ClusterGuard, program: &Path) -> Command {
        let mut command = cluster.command(program);
        let mut dirs = vec![self.dir.path().to_path_buf()];
        dirs.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        command.env("PATH", std::env::join_paths(dirs).expect("PATH"));
        command.stdin(Stdio::null());
        command
    }
}

fn lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('\t').next().unwrap_or_default().to_string())
        .collect()
}

/// A cluster with exactly one recorded revision; returns its number.
fn cluster_with_a_revision() -> (ClusterGuard, String) {
    let cluster = harness::cluster(Seed::Lab);
    let applied = cluster
        .command(plugin())
        .args(["safety-net", "--yes"])
        .output()
        .expect("running safety-net");
    assert!(
        applied.status.success(),
        "safety-net --yes:\n{}",
        text(&applied)
    );
    let history = cluster
        .command(plugin())
        .args(["history", "-o", "json"])
        .output()
        .expect("running history");
    assert!(history.status.success(), "history:\n{}", text(&history));
    let revisions: serde_json::Value =
        serde_json::from_slice(&history.stdout).expect("history JSON");
    let revisions = revisions.as_array().expect("a list of revisions");
    assert_eq!(revisions.len(), 1, "{revisions:?}");
    let revision = revisions[0]["revision"]
        .as_u64()
        .expect("revision number")
        .to_string();
    (cluster, revision)
}

#[test]
fn committed_scripts_match_the_cli() {
    for (shell, file) in SCRIPTS {
        let out = Command::new(plugin())
            .args(["completion", shell])
            .output()
            .expect("running completion");
        assert!(out.status.success(), "completion {shell}:\n{}", text(&out));
        let committed = std::fs::read(completions_dir().join(file)).unwrap_or_default();
        assert!(
            committed == out.stdout,
            "completions/{file} differs from `kubectl-calico_harden completion {shell}`; regenerate it:\n  \
             cargo run -q -- completion {shell} > completions/{file}"
        );
    }
}

/// Completes LINE (cursor at its end) with kubectl's own bash completion; prints COMPREPLY.
const KUBECTL_BASH_DRIVER: &str = r#"
source "$BASH_COMPLETION_LIBRARY"
source <(kubectl completion bash)
COMP_LINE=$1
COMP_POINT=${#1}
read -r -a COMP_WORDS <<<"$1"
[[ $1 == *' ' ]] && COMP_WORDS+=('')
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMPREPLY=()
# compopt complains outside a real completion; the candidates are what matters.
__start_kubectl kubectl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}" 2>/dev/null
printf '%s\n' "${COMPREPLY[@]}"
"#;

#[test]
fn bash_through_kubectl_completes_the_plugin() {
    let bash = require("bash", "bash");
    let library = bash_completion_library();
    let (cluster, revision) = cluster_with_a_revision();
    let links = Links::new();
    let complete = |line: &str| {
        let out = links
            .command(&cluster, &bash)
            .env("BASH_COMPLETION_LIBRARY", &library)
            .args(["--norc", "--noprofile", "-c", KUBECTL_BASH_DRIVER, "bash"])
            .arg(line)
            .output()
            .expect("running bash");
        assert!(
            out.status.success(),
            "bash completing {line:?}:\n{}",
            text(&out)
        );
        lines(&out)
    };
    assert_eq!(complete("kubectl calico-h"), ["calico-harden"]);
    assert_eq!(complete("kubectl calico-harden en"), ["enable-hep"]);
    assert_eq!(
        complete("kubectl calico-harden enable-hep --print-c"),
        ["--print-command"]
    );
    assert_eq!(
        complete("kubectl calico-harden render nodes-to-"),
        ["nodes-to-kapi", "nodes-to-typha"]
    );
    assert_eq!(
        complete("kubectl calico-harden rollback "),
        [revision.as_str()]
    );
    assert_eq!(
        complete("kubectl calico-harden --context "),
        ["admin", "limited"]
    );
    assert_eq!(
        complete("kubectl calico-harden plan -n kube-s"),
        ["kube-system"]
    );
}

/// Completes LINE (cursor at its end) with the binary's own bash script; prints COMPREPLY.
/// COMP_WORDS is split as readline splits it, at blanks and at COMP_WORDBREAKS' '=' and ':'.
const OWN_BASH_DRIVER: &str = r#"
source "$SCRIPT"
COMP_LINE=$1
COMP_POINT=${#1}
read -r -a COMP_WORDS <<<"$(sed -E 's/([=:]+)/ \1 /g' <<<"$1")"
[[ $1 == *' ' ]] && COMP_WORDS+=('')
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMPREPLY=()
_kubectl_calico_harden kubectl-calico_harden "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}" 2>/dev/null
printf '%s\n' "${COMPREPLY[@]}"
"#;

#[test]
fn bash_script_completes_the_binary() {
    let bash = require("bash", "bash");
    let (cluster, revision) = cluster_with_a_revision();
    let links = Links::new();
    let complete = |line: &str| {
        let out = links
            .command(&cluster, &bash)
            .env(
                "SCRIPT",
                completions_dir().join("kubectl-calico_harden.bash"),
            )
            .args(["--norc", "--noprofile", "-c", OWN_BASH_DRIVER, "bash"])
            .arg(line)
            .output()
            .expect("running bash");
        assert!(
            out.status.success(),
            "bash completing {line:?}:\n{}",
            text(&out)
        );
        lines(&out)
    };
    assert_eq!(complete("kubectl-calico_harden en"), ["enable-hep"]);
    assert_eq!(
        complete("kubectl-calico_harden enable-hep --print-c"),
        ["--print-command"]
    );
    assert_eq!(
        complete("kubectl-calico_harden render nodes-to-"),
        ["nodes-to-kapi", "nodes-to-typha"]
    );
    assert_eq!(
        complete("kubectl-calico_harden up --through iso"),
        ["isolate-apps"]
    );
    assert_eq!(
        complete("kubectl-calico_harden plan --dry-run=s"),
        ["server"]
    );
    assert_eq!(
        complete("kubectl-calico_harden rollback "),
        [revision.as_str()]
    );
}

/// Types LINE and a TAB into an interactive zsh (zpty) that loaded the committed script through
/// compinit, then prints the edited line ($BUFFER).
const ZSH_DRIVER: &str = r#"
zmodload zsh/zpty || exit 3
zpty -b z 'zsh -f -i'
zpty -w z "PS1='> '; fpath=(${(q)COMPLETIONS} \$fpath); autoload -U compinit; compinit -u -D"
zpty -w z "dump() { print -r -- \"\$BUFFER\" > ${(q)OUT}; }; zle -N dump; bindkey '^X' dump; bindkey '^I' complete-word"
zpty -w -n z "$1"$'\t'
zpty -w -n z $'\C-x'
for i in {1..100}; do
    zpty -r -t z junk
    [[ -s $OUT ]] && break
    sleep 0.1
done
zpty -d z
cat $OUT
"#;

#[test]
fn zsh_script_completes_the_binary() {
    let zsh = require("zsh", "zsh");
    let (cluster, revision) = cluster_with_a_revision();
    let links = Links::new();
    let complete = |line: &str| {
        let out_file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(out_file.path(), "").expect("truncate");
        let out = links
            .command(&cluster, &zsh)
            .env("COMPLETIONS", completions_dir())
            .env("OUT", out_file.path())
            .args(["-f", "-c", ZSH_DRIVER, "zsh"])
            .arg(line)
            .output()
            .expect("running zsh");
        assert!(
            out.status.success(),
            "zsh completing {line:?}:\n{}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim_end_matches('\n')
            .to_string()
    };
    assert_eq!(
        complete("kubectl-calico_harden en"),
        "kubectl-calico_harden enable-hep "
    );
    assert_eq!(
        complete("kubectl-calico_harden enable-hep --print-c"),
        "kubectl-calico_harden enable-hep --print-command "
    );
    assert_eq!(
        complete("kubectl-calico_harden render nodes-to-t"),
        "kubectl-calico_harden render nodes-to-typha "
    );
    assert_eq!(
        complete("kubectl-calico_harden plan --dry-run=s"),
        "kubectl-calico_harden plan --dry-run=server "
    );
    assert_eq!(
        complete("kubectl-calico_harden rollback "),
        format!("kubectl-calico_harden rollback {revision} ")
    );
}

#[test]
fn fish_script_completes_the_binary() {
    let fish = require("fish", "fish");
    let (cluster, revision) = cluster_with_a_revision();
    let links = Links::new();
    let script = completions_dir().join("kubectl-calico_harden.fish");
    let complete = |line: &str| {
        let out = links
            .command(&cluster, &fish)
            .args(["--no-config", "-c", "source $argv[1]; complete -C $argv[2]"])
            .arg(&script)
            .arg(line)
            .output()
            .expect("running fish");
        assert!(
            out.status.success(),
            "fish completing {line:?}:\n{}",
            text(&out)
        );
        lines(&out)
    };
    assert_eq!(complete("kubectl-calico_harden en"), ["enable-hep"]);
    assert_eq!(
        complete("kubectl-calico_harden enable-hep --print-c"),
        ["--print-command"]
    );
    assert_eq!(
        complete("kubectl-calico_harden render nodes-to-"),
        ["nodes-to-kapi", "nodes-to-typha"]
    );
    assert_eq!(
        complete("kubectl-calico_harden plan --dry-run=s"),
        ["--dry-run=server"]
    );
    assert_eq!(
        complete("kubectl-calico_harden rollback "),
        [revision.as_str()]
    );
}

#[test]
fn completion_kubectl_install_links_the_hook_idempotently() {
    let temp = tempfile::tempdir().expect("temp dir");
    let bin = temp.path().join("bin");
    let elsewhere = temp.path().join("elsewhere");
    std::fs::create_dir_all(&bin).expect("bin dir");
    std::fs::create_dir_all(&elsewhere).expect("dir");
    std::os::unix::fs::symlink(plugin(), bin.join("kubectl-calico_harden")).expect("symlink");
    let path = std::env::join_paths([bin.clone(), "/usr/bin".into(), "/bin".into()]).expect("PATH");
    let run = |args: &[&str]| {
        Command::new(bin.join("kubectl-calico_harden"))
            .args(["completion", "kubectl"])
            .args(args)
            .env("PATH", &path)
            .stdin(Stdio::null())
            .output()
            .expect("running completion kubectl")
    };
    let hook = bin.join("kubectl_complete-calico_harden");

    let explained = run(&[]);
    assert!(explained.status.success(), "{}", text(&explained));
    assert!(
        String::from_utf8_lossy(&explained.stderr)
            .contains("kubectl calico-harden completion kubectl --install"),
        "{}",
        text(&explained)
    );
    assert!(
        hook.symlink_metadata().is_err(),
        "without --install nothing is created"
    );

    // Default: next to the plugin as it was found on PATH (krew's bin/), linked relatively.
    let created = run(&["--install"]);
    assert!(created.status.success(), "{}", text(&created));
    let said = String::from_utf8_lossy(&created.stderr);
    assert!(
        said.contains(&format!("created {}", hook.display())),
        "{said}"
    );
    assert!(!said.contains("not on PATH"), "{said}");
    assert_eq!(
        std::fs::read_link(&hook).ok(),
        Some(PathBuf::from("kubectl-calico_harden"))
    );
    let answer = Command::new(&hook)
        .args(["en"])
        .output()
        .expect("running the hook");
    assert_eq!(
        String::from_utf8_lossy(&answer.stdout)
            .lines()
            .next()
            .map(|l| l.split('\t').next()),
        Some(Some("enable-hep"))
    );

    let again = run(&["--install"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already in place; nothing to do"),
        "{}",
        text(&again)
    );
    assert_eq!(
        std::fs::read_link(&hook).ok(),
        Some(PathBuf::from("kubectl-calico_harden"))
    );

    // Another directory: an absolute link, and a warning that kubectl will not look there.
    let other = run(&["--install", elsewhere.to_str().expect("UTF-8 path")]);
    assert!(other.status.success(), "{}", text(&other));
    let said = String::from_utf8_lossy(&other.stderr);
    assert!(said.contains("is not on PATH"), "{said}");
    assert_eq!(
        std::fs::read_link(elsewhere.join("kubectl_complete-calico_harden")).ok(),
        Some(bin.join("kubectl-calico_harden"))
    );

    // Someone else's file is left alone.
    let taken = temp.path().join("taken");
    std::fs::create_dir_all(&taken).expect("dir");
    std::fs::write(taken.join("kubectl_complete-calico_harden"), "mine").expect("file");
    let refused = run(&["--install", taken.to_str().expect("UTF-8 path")]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not a symbolic link"),
        "{}",
        text(&refused)
    );
    assert_eq!(
        std::fs::read_to_string(taken.join("kubectl_complete-calico_harden"))
            .ok()
            .as_deref(),
        Some("mine")
    );
}
