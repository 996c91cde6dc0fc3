//! Completion in real shells, each completing subcommands, flags, stages, and the revisions and
//! contexts that only the lab cluster and its kubeconfig know:
//! - kubectl's own completion in bash, zsh and fish, which asks the
//!   `kubectl_complete-calico_harden` hook;
//! - the binary's committed scripts in bash, zsh, fish and elvish. PowerShell cannot be installed
//!   here, so its script is checked statically against the CLI.
//!
//! Plus: the committed scripts are what the CLI prints, `completion kubectl --install`, and
//! `rollback --to N` (the flag the completions offer revisions for) is `rollback N`.
//!
//! The shells come from Debian's packages (bash-completion, zsh, fish, elvish); a missing one
//! fails the test with the package to install, never skips it. Interactive zsh and elvish run on
//! a pseudo-terminal through zsh's zpty module.

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

/// A lab cluster with two revisions, `up --through localhost` and `isolate-apps`; returns their
/// numbers, newest first.
fn cluster_with_revisions() -> (ClusterGuard, Vec<String>) {
    let cluster = harness::cluster(Seed::Lab);
    for args in [
        &["up", "--through", "localhost", "--yes"][..],
        &["isolate-apps", "--yes"],
    ] {
        let applied = cluster
            .command(plugin())
            .args(args)
            .output()
            .expect("running the plugin");
        assert!(applied.status.success(), "{args:?}:\n{}", text(&applied));
    }
    let history = cluster
        .command(plugin())
        .args(["history", "-o", "json"])
        .output()
        .expect("running history");
    assert!(history.status.success(), "history:\n{}", text(&history));
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).expect("history JSON");
    let mut revisions: Vec<u64> = history
        .as_array()
        .expect("a list of revisions")
        .iter()
        .map(|r| r["revision"].as_u64().expect("revision number"))
        .collect();
    assert_eq!(revisions.len(), 2, "{history}");
    revisions.sort_unstable_by(|a, b| b.cmp(a));
    (cluster, revisions.iter().map(u64::to_string).collect())
}

/// The subcommands kubectl's completion hook offers after `kubectl calico-harden`, sorted.
fn plugin_subcommands() -> Vec<String> {
    let out = Command::new(plugin())
        .args(["__complete", ""])
        .output()
        .expect("running __complete");
    assert!(out.status.success(), "__complete:\n{}", text(&out));
    let names = sorted(
        &lines(&out)
            .into_iter()
            .filter(|l| !l.starts_with(':'))
            .collect::<Vec<_>>(),
    );
    for expected in [
        "plan",
        "up",
        "rollback",
        "history",
        "completion",
        "enable-hep",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
    }
    names
}

fn sorted(list: &[String]) -> Vec<String> {
    let mut list = list.to_vec();
    list.sort();
    list
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
        complete("kubectl calico-harden rollback --to "),
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

/// Runs $INTERACTIVE (an interactive shell) on a pseudo-terminal (zsh's zpty), types $SETUP and
/// waits until it created $READY, then types LINE, a TAB and Ctrl-X. The setup binds Ctrl-X to
/// write the edited line to $LINE_OUT, and may record the offered candidates in $CANDIDATES_OUT.
/// Prints those candidates, then `=== ` and the edited line.
const PTY_DRIVER: &str = r#"
zmodload zsh/zpty || exit 3
# Reads the screen until $1 exists; fails after 10 s.
wait_for() {
    local i chunk
    for i in {1..100}; do
        # Drain the screen: a shell blocked on a full terminal stops reading keys.
        while zpty -r -t shell chunk; do
            screen+=$chunk
        done
        [[ -e $1 ]] && return 0
        sleep 0.1
    done
    zpty -d shell
    print -u2 "$INTERACTIVE did not write $1 within 10 s; the screen ended with:"
    print -u2 -r -- "${screen[-2000,-1]}"
    exit 4
}
zpty -b shell "$INTERACTIVE"
# Keys typed before the line editor starts may be discarded: wait for its first output.
zpty -r shell screen
zpty -w -n shell "$SETUP"$'\r'
wait_for $READY
zpty -w -n shell "$1"$'\t'
zpty -w -n shell $'\C-x'
wait_for $LINE_OUT
zpty -d shell
[[ -f $CANDIDATES_OUT ]] && cat $CANDIDATES_OUT
print -r -- "=== $(<$LINE_OUT)"
"#;

/// What an interactive shell did with one TAB.
struct Tabbed {
    /// The candidates the completion offered, sorted (the shells order them their own way).
    candidates: Vec<String>,
    /// The command line after the TAB.
    line: String,
}

/// Types LINE and a TAB into `interactive` (a command line run on a pseudo-terminal by `driver`,
/// a zsh command) after typing `setup`; see [`PTY_DRIVER`].
fn press_tab(mut driver: Command, interactive: &str, setup: &str, line: &str) -> Tabbed {
    let scratch = tempfile::tempdir().expect("temp dir");
    let out = driver
        .env("INTERACTIVE", interactive)
        .env("SETUP", setup)
        .env("READY", scratch.path().join("ready"))
        .env("LINE_OUT", scratch.path().join("line"))
        .env("CANDIDATES_OUT", scratch.path().join("candidates"))
        .args(["-f", "-c", PTY_DRIVER, "pty-driver"])
        .arg(line)
        .output()
        .expect("running zsh's zpty");
    assert!(
        out.status.success(),
        "{interactive} completing {line:?}:\n{}",
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (candidates, edited) = stdout
        .rsplit_once("=== ")
        .unwrap_or_else(|| panic!("no edited line in:\n{}", text(&out)));
    let mut candidates: Vec<String> = candidates
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    candidates.sort();
    candidates.dedup();
    Tabbed {
        candidates,
        line: edited.trim_end_matches('\n').to_string(),
    }
}

/// Typed into `zsh -f -i` after the code that loads a completion: TAB completes a word, Ctrl-X
/// writes the line, and every candidate handed to compadd is recorded (the list zsh would show).
const ZSH_SETUP: &str = r#"
PS1='> '
unsetopt auto_list list_ambiguous
setopt no_beep
compadd() {
    # Calls that only compute or filter matches (-O, -A, -D) are the completion system's own.
    if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then
        builtin compadd "$@"
        return
    fi
    local -a matches
    builtin compadd -O matches "$@"
    (( ${#matches} )) && print -rl -- $matches >> $CANDIDATES_OUT
    builtin compadd "$@"
}
dump() { print -r -- "$BUFFER" > $LINE_OUT }
zle -N dump
bindkey '^X' dump
bindkey '^I' complete-word
: > $READY
"#;

/// TAB in an interactive zsh that ran `load` and then [`ZSH_SETUP`].
fn zsh_tab(links: &Links, cluster: &ClusterGuard, load: &str, line: &str) -> Tabbed {
    let zsh = require("zsh", "zsh");
    let mut driver = links.command(cluster, &zsh);
    driver
        .env("ZSH_SETUP", format!("{load}\n{ZSH_SETUP}"))
        .env("COMPLETIONS", completions_dir());
    press_tab(driver, "zsh -f -i", r#"eval "$ZSH_SETUP""#, line)
}

/// Loads the committed script the way users install it: from $fpath through compinit.
const ZSH_LOAD_OWN_SCRIPT: &str =
    "fpath=($COMPLETIONS $fpath); autoload -U compinit && compinit -u -D";

/// Loads kubectl's own zsh completion, as its documentation says.
const ZSH_LOAD_KUBECTL: &str =
    "autoload -U compinit && compinit -u -D; source <(kubectl completion zsh)";

#[test]
fn zsh_script_completes_the_binary() {
    let (cluster, revision) = cluster_with_a_revision();
    let links = Links::new();
    let complete = |line: &str| zsh_tab(&links, &cluster, ZSH_LOAD_OWN_SCRIPT, line).line;
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
fn zsh_through_kubectl_completes_the_plugin() {
    let (cluster, revisions) = cluster_with_revisions();
    let links = Links::new();
    let complete = |line: &str| zsh_tab(&links, &cluster, ZSH_LOAD_KUBECTL, line);

    let subcommands = complete("kubectl calico-harden ");
    assert_eq!(subcommands.candidates, plugin_subcommands());
    assert_eq!(
        subcommands.line, "kubectl calico-harden ",
        "ambiguous: nothing inserted"
    );
    assert_eq!(
        complete("kubectl calico-harden roll").line,
        "kubectl calico-harden rollback "
    );
    assert_eq!(
        complete("kubectl calico-harden rollback --to ").candidates,
        sorted(&revisions)
    );
    assert_eq!(
        complete("kubectl calico-harden --context ").candidates,
        ["admin", "limited"]
    );
    assert_eq!(
        complete("kubectl calico-harden --context lim").line,
        "kubectl calico-harden --context limited "
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
fn fish_through_kubectl_completes_the_plugin() {
    let fish = require("fish", "fish");
    let (cluster, revisions) = cluster_with_revisions();
    let links = Links::new();
    let complete = |line: &str| {
        let out = links
            .command(&cluster, &fish)
            .args([
                "--no-config",
                "-c",
                "kubectl completion fish | source; complete -C $argv[1]",
            ])
            .arg(line)
            .output()
            .expect("running fish");
        assert!(
            out.status.success(),
            "fish completing {line:?}:\n{}",
            text(&out)
        );
        sorted(&lines(&out))
    };
    assert_eq!(complete("kubectl calico-harden "), plugin_subcommands());
    assert_eq!(complete("kubectl calico-harden roll"), ["rollback"]);
    assert_eq!(
        complete("kubectl calico-harden rollback --to "),
        sorted(&revisions)
    );
    assert_eq!(
        complete("kubectl calico-harden --context "),
        ["admin", "limited"]
    );
}

/// Typed into `elvish -norc`: loads the committed script as its header says, records every
/// candidate its completer offers, binds Ctrl-X (in the editor and in the completion list) to
/// write the line.
const ELVISH_SETUP: &str = "eval (slurp < $E:SCRIPT); \
    var complete~ = $edit:completion:arg-completer[kubectl-calico_harden]; \
    set edit:completion:arg-completer[kubectl-calico_harden] = {|@words| \
        var offered = [(complete $@words)]; \
        each {|c| echo $c[stem] } $offered >> $E:CANDIDATES_OUT; \
        all $offered \
    }; \
    set edit:insert:binding[Ctrl-X] = { print $edit:current-command > $E:LINE_OUT }; \
    set edit:completion:binding[Ctrl-X] = { print $edit:current-command > $E:LINE_OUT }; \
    echo > $E:READY";

#[test]
fn elvish_script_completes_the_binary() {
    let zsh = require("zsh", "zsh");
    let elvish = require("elvish", "elvish");
    let (cluster, revisions) = cluster_with_revisions();
    let links = Links::new();
    let complete = |line: &str| {
        let mut driver = links.command(&cluster, &zsh);
        driver.env(
            "SCRIPT",
            completions_dir().join("kubectl-calico_harden.elv"),
        );
        press_tab(
            driver,
            &format!("{} -norc", elvish.display()),
            ELVISH_SETUP,
            line,
        )
    };
    assert_eq!(
        complete("kubectl-calico_harden en").line,
        "kubectl-calico_harden enable-hep "
    );
    assert_eq!(
        complete("kubectl-calico_harden enable-hep --print-c").line,
        "kubectl-calico_harden enable-hep --print-command "
    );
    assert_eq!(
        complete("kubectl-calico_harden render nodes-to-t").line,
        "kubectl-calico_harden render nodes-to-typha "
    );
    assert_eq!(
        complete("kubectl-calico_harden plan -o j").line,
        "kubectl-calico_harden plan -o json "
    );
    // Elvish quotes a word with '=' when it inserts it, so TAB lists the candidate instead.
    assert_eq!(
        complete("kubectl-calico_harden plan --dry-run=s").candidates,
        ["--dry-run=server"]
    );
    // A path flag falls back to elvish's own file completion.
    let files = tempfile::tempdir().expect("temp dir");
    std::fs::write(files.path().join("lab-kubeconfig"), "").expect("file");
    let files = files.path().display();
    assert_eq!(
        complete(&format!("kubectl-calico_harden --kubeconfig {files}/lab-k")).line,
        format!("kubectl-calico_harden --kubeconfig {files}/lab-kubeconfig ")
    );
    assert_eq!(
        complete("kubectl-calico_harden ").candidates,
        plugin_subcommands()
    );
    assert_eq!(
        complete("kubectl-calico_harden rollback --to ").candidates,
        sorted(&revisions)
    );
    assert_eq!(
        complete("kubectl-calico_harden --context ").candidates,
        ["admin", "limited"]
    );
}

/// PowerShell (`pwsh`) is not packaged by Debian nor shipped by the registries this project
/// installs from, so its script is checked without running it: it registers a native completer
/// for the binary, and every subcommand and every long flag of the CLI is in it, under the
/// subcommand it belongs to.
#[test]
fn powershell_script_covers_every_subcommand_and_flag() {
    let script = std::fs::read_to_string(completions_dir().join("kubectl-calico_harden.ps1"))
        .expect("completions/kubectl-calico_harden.ps1");
    assert!(
        script.contains("Register-ArgumentCompleter -Native -CommandName 'kubectl-calico_harden'"),
        "{script}"
    );
    let opens = script.matches('{').count();
    let closes = script.matches('}').count();
    assert_eq!(opens, closes, "unbalanced braces");

    let cases: Vec<(&str, &str)> = script
        .split("\n        '")
        .skip(1)
        .filter_map(|case| case.split_once("' {"))
        .collect();
    let case = |path: &str| {
        cases
            .iter()
            .find(|(name, _)| *name == path)
            .map(|(_, body)| {
                body.split("\n            break\n")
                    .next()
                    .unwrap_or_default()
            })
            .unwrap_or_else(|| panic!("no completion case for {path}"))
    };
    let mut cli = <kubectl_calico_harden::cli::Cli as clap::CommandFactory>::command();
    cli.build();
    let mut pending = vec![("kubectl-calico_harden".to_string(), &cli)];
    let mut checked = 0;
    while let Some((path, command)) = pending.pop() {
        let body = case(&path);
        for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
            let names = arg
                .get_long_and_visible_aliases()
                .into_iter()
                .flatten()
                .map(|long| format!("'--{long}'"))
                .chain(arg.get_short().map(|short| format!("'-{short}'")));
            for name in names {
                assert!(body.contains(&name), "{path}: {name} missing");
            }
        }
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            assert!(
                body.contains(&format!("'{}'", sub.get_name())),
                "{path}: subcommand {} missing",
                sub.get_name()
            );
            pending.push((format!("{path};{}", sub.get_name()), sub));
        }
        checked += 1;
    }
    assert!(checked > 20, "only {checked} commands checked");
    assert!(case("kubectl-calico_harden;rollback").contains("'--to'"));
}

#[test]
fn rollback_to_is_the_positional_revision() {
    let (cluster, revisions) = cluster_with_revisions();
    let oldest = revisions.last().expect("a revision").as_str();
    let run = |args: &[&str]| {
        cluster
            .command(plugin())
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .expect("running rollback")
    };

    let mark = cluster.audit_mark();
    let positional = run(&["rollback", oldest, "--dry-run=client"]);
    let flag = run(&["rollback", "--to", oldest, "--dry-run=client"]);
    assert!(positional.status.success(), "{}", text(&positional));
    assert!(flag.status.success(), "{}", text(&flag));
    assert!(
        text(&flag).contains("deny-app-policy"),
        "the plan undoes the newer revision:\n{}",
        text(&flag)
    );
    assert_eq!(text(&flag), text(&positional));
    let writes = cluster.writes_since(&mark);
    assert!(writes.is_empty(), "a dry run writes nothing: {writes:?}");

    for args in [
        &["rollback", oldest, "--to", oldest, "--yes"][..],
        &["rollback", "--to", oldest, "--all", "--yes"],
        &["rollback", "--to", "first", "--yes"],
    ] {
        let refused = run(args);
        assert_eq!(
            refused.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&refused)
        );
    }
    let writes = cluster.writes_since(&mark);
    assert!(writes.is_empty(), "bad usage writes nothing: {writes:?}");

    let done = run(&["rollback", "--to", oldest, "--yes"]);
    assert!(done.status.success(), "{}", text(&done));
    let policies = cluster.kubectl_ok(&[
        "get",
        "globalnetworkpolicies.projectcalico.org",
        "-o",
        "name",
    ]);
    assert!(!policies.contains("deny-app-policy"), "{policies}");
    assert!(
        policies.contains("allow-containers-access-to-localhost"),
        "{policies}"
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
