//! Shell completion: scripts for the binary itself (clap_complete), and kubectl's plugin
//! completion hook, for which the binary answers Cobra's `__complete` protocol when it runs as
//! `kubectl_complete-calico_harden`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, ValueEnum};
use clap_complete::Shell;

use crate::cli::{Cli, CompletionArgs, CompletionShell, GlobalArgs};
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::ui::Printer;

pub const BINARY_NAME: &str = "kubectl-calico_harden";
pub const KUBECTL_COMPLETE_NAME: &str = "kubectl_complete-calico_harden";
/// Cobra's ShellCompDirectiveNoFileComp.
const NO_FILE_COMPLETION: u8 = 4;

pub fn script(shell: Shell) -> String {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, BINARY_NAME, &mut out);
    String::from_utf8(out).expect("completion scripts are UTF-8")
}

pub fn run(args: &CompletionArgs, global: &GlobalArgs) -> Result<ExitStatus> {
    let printer = Printer::new(global.no_color, None);
    let shell = match args.shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
        CompletionShell::Powershell => Shell::PowerShell,
        CompletionShell::Elvish => Shell::Elvish,
        CompletionShell::Kubectl => return install_kubectl_hook(&printer, args.install.as_deref()),
    };
    if args.install.is_some() {
        return Err(Error::usage("--install only applies to `completion kubectl`"));
    }
    printer.data(&script(shell));
    Ok(ExitStatus::Success)
}

fn install_kubectl_hook(printer: &Printer, dir: Option<&Path>) -> Result<ExitStatus> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::refused(format!("cannot find this binary's path: {e}"), None))?;
    let Some(dir) = dir else {
        printer.say(&format!(
            "kubectl completes plugins through an executable named {KUBECTL_COMPLETE_NAME} on PATH; create it with:\n  kubectl calico-harden completion kubectl --install"
        ));
        return Ok(ExitStatus::Success);
    };
    let dir: PathBuf = if dir.as_os_str().is_empty() {
        exe.parent().map(Path::to_path_buf).unwrap_or_default()
    } else {
        dir.to_path_buf()
    };
    if !dir.is_dir() {
        return Err(Error::usage(format!("{} is not a directory", dir.display())));
    }
    let link = dir.join(KUBECTL_COMPLETE_NAME);
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(&link)
            .map_err(|e| Error::refused(format!("cannot replace {}: {e}", link.display()), None))?;
    }
    create_link(&exe, &link)
        .map_err(|e| Error::refused(format!("cannot create {}: {e}", link.display()), Some("pass a writable directory on PATH to --install".into())))?;
    printer.say(&format!(
        "created {} -> {}\nkubectl's own completion (source <(kubectl completion bash), or zsh/fish) now completes `kubectl calico-harden`",
        link.display(),
        exe.display()
    ));
    Ok(ExitStatus::Success)
}

#[cfg(unix)]
fn create_link(exe: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(exe, link)
}

#[cfg(not(unix))]
fn create_link(exe: &Path, link: &Path) -> std::io::Result<()> {
    // Windows symlinks need privileges; a copy behaves the same for a multi-call binary.
    std::fs::copy(exe, link.with_extension("exe")).map(|_| ())
}

/// Answer kubectl's `__complete` protocol: `args` are the words after the plugin name, the last
/// one being the (possibly empty) word under the cursor.
pub fn complete_for_kubectl(args: &[String]) -> String {
    let (partial, words) = match args.split_last() {
        Some((last, rest)) => (last.as_str(), rest),
        None => ("", &[][..]),
    };
    let mut out = String::new();
    for (candidate, description) in candidates(words, partial) {
        if description.is_empty() {
            out.push_str(&format!("{candidate}\n"));
        } else {
            out.push_str(&format!("{candidate}\t{description}\n"));
        }
    }
    out.push_str(&format!(":{NO_FILE_COMPLETION}\n"));
    out
}

fn first_line(text: Option<&clap::builder::StyledStr>) -> String {
    text.map(|t| t.to_string().lines().next().unwrap_or_default().trim_end_matches('.').to_string())
        .unwrap_or_default()
}

/// Candidates for the word after `words`, filtered by `partial`.
pub fn candidates(words: &[String], partial: &str) -> Vec<(String, String)> {
    let root = Cli::command();
    let mut command = &root;
    let mut previous: Option<&str> = None;
    for word in words {
        if let Some(sub) = command.find_subcommand(word) {
            command = sub;
        }
        previous = Some(word.as_str());
    }
    // The value of the flag just typed.
    if let Some(flag) = previous.filter(|w| w.starts_with('-') && !w.contains('=')) {
        if let Some(values) = flag_values(command, &root, flag, words) {
            return values.into_iter().filter(|(v, _)| v.starts_with(partial)).collect();
        }
    }
    let mut list = Vec::new();
    if partial.starts_with('-') {
        for arg in command.get_arguments().chain(root.get_arguments().filter(|a| a.is_global_set())) {
            if let Some(long) = arg.get_long() {
                list.push((format!("--{long}"), first_line(arg.get_help())));
            }
        }
        list.sort();
        list.dedup_by(|a, b| a.0 == b.0);
    } else {
        for sub in command.get_subcommands() {
            list.push((sub.get_name().to_string(), first_line(sub.get_about())));
        }
        if command.get_name() == "render" {
            list.extend(stage_candidates());
        }
        if command.get_name() == "rollback" {
            list.extend(revision_candidates(words));
        }
    }
    list.into_iter().filter(|(c, _)| c.starts_with(partial)).collect()
}

fn stage_candidates() -> Vec<(String, String)> {
    crate::stages::StageId::ALL
        .iter()
        .filter(|s| s.to_possible_value().is_some())
        .map(|s| (s.name().to_string(), s.summary().to_string()))
        .collect()
}

fn flag_values(command: &clap::Command, root: &clap::Command, flag: &str, words: &[String]) -> Option<Vec<(String, String)>> {
    let name = flag.trim_start_matches('-');
    let arg = command
        .get_arguments()
        .chain(root.get_arguments())
        .find(|a| a.get_long() == Some(name) || a.get_short().is_some_and(|s| s.to_string() == name))?;
    if !arg.get_action().takes_values() {
        return None;
    }
    let id = arg.get_id().as_str();
    Some(match id {
        "context" => kubeconfig_names(words, |kc| kc.contexts.iter().map(|c| c.name.clone()).collect()),
        "cluster" => kubeconfig_names(words, |kc| kc.clusters.iter().map(|c| c.name.clone()).collect()),
        "user" => kubeconfig_names(words, |kc| kc.auth_infos.iter().map(|c| c.name.clone()).collect()),
        "namespace" | "history_namespace" => namespace_candidates(words),
        "through" => stage_candidates(),
        _ => arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| (v.get_name().to_string(), first_line(v.get_help())))
            .collect(),
    })
}

fn flag_value<'a>(words: &'a [String], flag: &str) -> Option<&'a str> {
    words.iter().enumerate().find_map(|(i, w)| {
        if w == flag {
            words.get(i + 1).map(String::as_str)
        } else {
            w.strip_prefix(&format!("{flag}=")).filter(|_| true)
        }
    })
}

fn kubeconfig_names(words: &[String], pick: impl Fn(&kube::config::Kubeconfig) -> Vec<String>) -> Vec<(String, String)> {
    let path = flag_value(words, "--kubeconfig").map(PathBuf::from);
    crate::cluster::load_kubeconfig(path.as_ref())
        .map(|kc| pick(&kc).into_iter().map(|n| (n, String::new())).collect())
        .unwrap_or_default()
}

/// Ask the cluster, but never make the shell wait more than a moment.
fn with_cluster<T>(words: &[String], fetch: impl AsyncFnOnce(crate::cluster::Cluster) -> Option<T>) -> Option<T> {
    let options = crate::cluster::ConnectOptions {
        kubeconfig: flag_value(words, "--kubeconfig").map(PathBuf::from),
        context: flag_value(words, "--context").map(str::to_string),
        request_timeout: Some(Duration::from_secs(2)),
        ..Default::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    runtime.block_on(async move {
        let task = async {
            let cluster = crate::cluster::connect(&options).await.ok()?;
            fetch(cluster).await
        };
        tokio::time::timeout(Duration::from_secs(2), task).await.ok().flatten()
    })
}

fn namespace_candidates(words: &[String]) -> Vec<(String, String)> {
    with_cluster(words, async |cluster| {
        let target = crate::cluster::errors::Target { verb: "list", resource: "namespaces".into(), namespace: None, name: None };
        let items = cluster.api.list("/api/v1/namespaces", None, &target).await.ok()??;
        Some(
            items
                .iter()
                .filter_map(|n| n.pointer("/metadata/name").and_then(|v| v.as_str()))
                .map(|n| (n.to_string(), String::new()))
                .collect(),
        )
    })
    .unwrap_or_default()
}

fn revision_candidates(words: &[String]) -> Vec<(String, String)> {
    let namespace = flag_value(words, "--history-namespace").unwrap_or("kube-system").to_string();
    with_cluster(words, async move |cluster| {
        let store = crate::journal::store::Store::new(&cluster, &namespace, 20);
        let revisions = store.list().await.ok()?;
        Some(
            revisions
                .iter()
                .rev()
                .map(|r| (r.revision.to_string(), format!("{} {} by {}: {}", r.state.as_str(), r.time, r.user, r.command)))
                .collect(),
        )
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn subcommands_complete_with_descriptions() {
        let out = complete_for_kubectl(&words(&["en"]));
        assert!(out.starts_with("enable-hep\t"), "{out}");
        assert!(out.ends_with(":4\n"));
    }

    #[test]
    fn flags_and_their_values_complete() {
        let out = complete_for_kubectl(&words(&["enable-hep", "--print"]));
        assert!(out.contains("--print-command\t"), "{out}");
        let out = complete_for_kubectl(&words(&["enable-hep", "--print-command", ""]));
        assert!(out.contains("bash\n") && out.contains("powershell\n"), "{out}");
        let out = complete_for_kubectl(&words(&["render", "nodes-"]));
        assert!(out.contains("nodes-to-kapi\t") && out.contains("nodes-to-typha\t"), "{out}");
        let out = complete_for_kubectl(&words(&["up", "--through", "iso"]));
        assert!(out.starts_with("isolate-apps\t"), "{out}");
    }

    #[test]
    fn global_flags_complete_under_subcommands() {
        let out = complete_for_kubectl(&words(&["plan", "--kubec"]));
        assert!(out.contains("--kubeconfig\t"), "{out}");
    }
}
