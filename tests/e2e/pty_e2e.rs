//! The real binary in a real pseudo-terminal, typed at as a person would: every prompt waits
//! for Enter, keys typed before a prompt never answer it, Ctrl-C and Ctrl-D cancel cleanly,
//! lockdown takes the context name and the countdown, and colour and width follow the terminal.
//! The scripted prompter of the unit tests cannot see any of this.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use expectrl::process::unix::WaitStatus;
use expectrl::session::OsSession;
use expectrl::{Eof, Expect, Regex};
use serde_json::Value;

use crate::harness::{self, ClusterGuard, Seed};
use crate::stages_e2e::calico_harden;

const BINARY: &str = env!("CARGO_BIN_EXE_kubectl-calico_harden");
/// How long a step may take on a loaded two-core machine before the test gives up.
const STEP: Duration = Duration::from_secs(90);
/// Enter on a terminal sends a carriage return.
const ENTER: &str = "\r";
const CTRL_C: &str = "\x03";
const CTRL_D: &str = "\x04";
/// A stage prompt of `up`, up to where it waits for the answer; group 1 is the stage.
const STAGE_PROMPT: &str = r"Apply \d+ change\(s\) for stage ([a-z-]+) \([^\n]*\)\? \[y/N\] ";
const TYPED_AHEAD: &str = "(ignored what was typed before this question)";

/// The plugin on the slave side of a pseudo-terminal, with everything it printed so far.
struct Terminal {
    session: OsSession,
    transcript: String,
}

impl Terminal {
    /// `args` in an 80-column terminal that echoes, as a terminal emulator's does.
    fn start(c: &ClusterGuard, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = c.command(BINARY);
        // The harness gives its commands no stdin; here all three are the terminal.
        command
            .stdin(Stdio::inherit())
            .args(args)
            .env_remove("NO_COLOR")
            .env("TERM", "xterm-256color");
        for (key, value) in env {
            command.env(key, value);
        }
        Self::spawn(command)
    }

    fn spawn(command: Command) -> Self {
        let mut session = OsSession::spawn(command).expect("spawning the plugin in a pty");
        session
            .get_process_mut()
            .set_echo(true, None)
            .expect("turning on the terminal's echo");
        Self {
            session,
            transcript: String::new(),
        }
    }

    /// Wait for `pattern` (a regex); returns the match, then each group that took part.
    fn expect(&mut self, pattern: &str) -> Vec<String> {
        self.expect_within(pattern, STEP)
            .unwrap_or_else(|| self.fail(&format!("no {pattern:?} within {STEP:?}")))
    }

    fn expect_within(&mut self, pattern: &str, limit: Duration) -> Option<Vec<String>> {
        let start = Instant::now();
        // `check` reads what is there without blocking; expectrl's own `expect` spins a core.
        loop {
            match self.session.check(Regex(pattern)) {
                Ok(found) if !found.is_empty() => {
                    self.transcript
                        .push_str(&String::from_utf8_lossy(found.as_bytes()));
                    return Some(
                        found
                            .matches()
                            .map(|m| String::from_utf8_lossy(m).into_owned())
                            .collect(),
                    );
                }
                Ok(_) => {}
                Err(expectrl::Error::Eof) => {
                    self.fail(&format!("the plugin ended before {pattern:?}"))
                }
                Err(err) => self.fail(&format!("reading the terminal: {err}")),
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The stage a prompt of `up` asks about.
    fn expect_stage_prompt(&mut self) -> String {
        self.expect(STAGE_PROMPT).swap_remove(1)
    }

    /// Nothing matching `pattern` appears for `quiet`: the plugin is still waiting.
    fn stays_waiting(&mut self, pattern: &str, quiet: Duration) {
        if let Some(found) = self.expect_within(pattern, quiet) {
            self.fail(&format!(
                "expected the plugin to keep waiting, but it went on to {found:?}"
            ));
        }
    }

    fn send(&mut self, keys: &str) {
        self.session
            .send(keys)
            .unwrap_or_else(|e| self.fail(&format!("typing {keys:?}: {e}")));
    }

    /// Read to the end; the exit code and the whole transcript without carriage returns.
    fn finish(mut self) -> (i32, String) {
        let start = Instant::now();
        loop {
            match self.session.check(Eof) {
                Ok(rest) if !rest.is_empty() => {
                    self.transcript
                        .push_str(&String::from_utf8_lossy(rest.as_bytes()));
                    break;
                }
                Ok(_) => {}
                Err(expectrl::Error::Eof) => break,
                Err(err) => self.fail(&format!("reading the terminal: {err}")),
            }
            if start.elapsed() > STEP {
                self.fail("the plugin did not end");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let code = match self.session.get_process().wait() {
            Ok(WaitStatus::Exited(_, code)) => code,
            other => self.fail(&format!("the plugin did not exit normally: {other:?}")),
        };
        (code, self.transcript.replace('\r', ""))
    }

    fn fail(&mut self, what: &str) -> ! {
        // What arrived but matched nothing yet belongs in the report too.
        if let Ok(rest) = self.session.check(Regex("(?s).+")) {
            self.transcript
                .push_str(&String::from_utf8_lossy(rest.as_bytes()));
        }
        panic!("{what}\n--- terminal so far ---\n{}", self.transcript)
    }
}

fn history(c: &ClusterGuard) -> Vec<Value> {
    let run = calico_harden(c, &["history", "-o", "json"]);
    assert_eq!(run.code, 0, "history: {}", run.stderr);
    serde_json::from_str::<Value>(&run.stdout)
        .expect("history -o json")
        .as_array()
        .expect("a list of revisions")
        .clone()
}

fn states(history: &[Value]) -> Vec<String> {
    history
        .iter()
        .map(|r| r["state"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn gnp_names(c: &ClusterGuard) -> Vec<String> {
    let list = c.get_json(&["globalnetworkpolicies.projectcalico.org"]);
    let mut names: Vec<String> = list["items"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|i| {
            i["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    names.sort();
    names
}

/// The policies `up` made: every one carries the tool's label.
fn managed_policies(c: &ClusterGuard) -> Vec<String> {
    let list = c.get_json(&[
        "globalnetworkpolicies.projectcalico.org,networkpolicies.projectcalico.org",
        "-A",
        "-l",
        "app.kubernetes.io/managed-by=kubectl-calico-harden",
    ]);
    let mut names: Vec<String> = list["items"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|i| {
            i["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    names.sort();
    names
}

/// The stages `up` has something to do for, in order, from the plan.
fn stages_up_changes(c: &ClusterGuard) -> Vec<String> {
    plan_states(c)
        .into_iter()
        .filter(|(stage, state)| {
            !["registry", "enable-hep", "lockdown"].contains(&stage.as_str())
                && !["applied", "not-applicable"].contains(&state.as_str())
        })
        .map(|(stage, _)| stage)
        .collect()
}

/// Every stage with its state, from `plan -o json`.
fn plan_states(c: &ClusterGuard) -> Vec<(String, String)> {
    let run = calico_harden(c, &["plan", "-o", "json"]);
    assert_eq!(run.code, 0, "plan: {}", run.stderr);
    let plan: Value = serde_json::from_str(&run.stdout).expect("plan -o json");
    plan["stages"]
        .as_array()
        .expect("a list of stages")
        .iter()
        .map(|s| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (text(&s["stage"]), text(&s["state"]))
        })
        .collect()
}

fn current_context(c: &ClusterGuard) -> String {
    let out = c
        .command(ClusterGuard::kubectl_path())
        .args(["config", "current-context"])
        .output()
        .expect("running kubectl config current-context");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Answer every stage prompt of `up` with `answer` until `done` shows; the stages asked about.
fn answer_every_stage(term: &mut Terminal, answer: &str, done: &str) -> Vec<String> {
    let mut asked = Vec::new();
    loop {
        let found = term.expect(&format!("{STAGE_PROMPT}|{done}"));
        if !found[0].starts_with("Apply ") {
            return asked;
        }
        asked.push(found[1].clone());
        term.send(answer);
    }
}

#[test]
fn up_answered_y_enter_at_each_stage_applies_every_stage() {
    let c = harness::cluster(Seed::Lab);
    let expected = stages_up_changes(&c);
    assert!(!expected.is_empty(), "the lab starts unhardened");
    let mark = c.audit_mark();
    let mut term = Terminal::start(&c, &["up"], &[]);
    let asked = answer_every_stage(
        &mut term,
        &format!("y{ENTER}"),
        r"applied \d+ change\(s\), recorded as revision \d+",
    );
    let (code, transcript) = term.finish();
    assert_eq!(code, 0, "{transcript}");
    assert_eq!(asked, expected, "one prompt per stage, in order");
    assert!(!transcript.contains(TYPED_AHEAD), "{transcript}");
    assert!(!c.writes_since(&mark).is_empty());
    for (stage, state) in plan_states(&c) {
        if expected.contains(&stage) {
            assert_eq!(state, "applied", "{stage}");
        }
    }
    let names = gnp_names(&c);
    for policy in [
        "final-allow-everything",
        "log-everything",
        "allow-containers-access-to-localhost",
        "deny-app-policy",
    ] {
        assert!(names.contains(&policy.to_string()), "{policy}: {names:?}");
    }
    // Every stage is in place: a second run has nothing to ask.
    let again = calico_harden(&c, &["up"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again
            .stderr
            .contains("every selected stage is already in place"),
        "{}",
        again.stderr
    );
    assert_eq!(states(&history(&c)), ["complete"]);
}

#[test]
fn yes_words_in_any_case_are_accepted_and_anything_else_asks_again() {
    let c = harness::cluster(Seed::Lab);
    let mut term = Terminal::start(&c, &["safety-net"], &[]);
    term.expect(r"\[y/N\] ");
    term.send(&format!("sure{ENTER}"));
    term.expect(r"please answer y \(yes\) or n \(no\)[^\n]*\n[^\n]*\[y/N\] ");
    // Backspace corrects a typo as on any terminal line.
    term.send(&format!("YEP\x7fS{ENTER}"));
    term.expect(r"applied \d+ change\(s\)");
    let (code, transcript) = term.finish();
    assert_eq!(code, 0, "{transcript}");
    assert!(gnp_names(&c).contains(&"final-allow-everything".to_string()));
}

#[test]
fn keys_typed_before_a_prompt_do_not_answer_it() {
    let c = harness::cluster(Seed::Lab);
    let mark = c.audit_mark();
    let mut term = Terminal::start(&c, &["up"], &[]);
    // Typed while the plugin still reads the cluster: discarded when the first prompt appears.
    term.send(&format!("y{ENTER}"));
    let first = term.expect_stage_prompt();
    assert!(term.transcript.contains(TYPED_AHEAD), "{}", term.transcript);
    term.stays_waiting(r"Apply \d+ change\(s\) for stage", Duration::from_secs(2));
    // The field report: `y` Enter, typed twice in a hurry. The first answers this prompt; the
    // second was typed before the next prompt appeared and must not answer it.
    term.send(&format!("y{ENTER}y{ENTER}"));
    let answered = term.transcript.len();
    let second = term.expect_stage_prompt();
    assert_ne!(first, second);
    assert!(
        term.transcript[answered..].contains(TYPED_AHEAD),
        "{}",
        term.transcript
    );
    term.stays_waiting(r"Apply \d+ change\(s\) for stage", Duration::from_secs(2));
    // Enter alone is the default shown in capitals: no.
    term.send(ENTER);
    term.expect(&format!("cancelled at stage {second}: nothing was changed"));
    let (code, transcript) = term.finish();
    assert_eq!(code, 130, "{transcript}");
    assert!(c.writes_since(&mark).is_empty(), "{transcript}");
}

#[test]
fn n_enter_applies_nothing() {
    let c = harness::cluster(Seed::Lab);
    let mark = c.audit_mark();
    let mut term = Terminal::start(&c, &["up"], &[]);
    let stage = term.expect_stage_prompt();
    term.send(&format!("n{ENTER}"));
    term.expect(&format!("cancelled at stage {stage}: nothing was changed"));
    let (code, transcript) = term.finish();
    assert_eq!(code, 130, "{transcript}");
    assert!(c.writes_since(&mark).is_empty(), "{transcript}");
    assert!(
        managed_policies(&c).is_empty(),
        "{:?}",
        managed_policies(&c)
    );
}

#[test]
fn ctrl_c_or_ctrl_d_at_a_prompt_cancels_with_130_and_leaves_the_journal_consistent() {
    let c = harness::cluster(Seed::Lab);
    let start = gnp_names(&c);

    // Ctrl-C after two stages were confirmed: nothing was written yet.
    let mark = c.audit_mark();
    let mut term = Terminal::start(&c, &["up"], &[]);
    term.expect(STAGE_PROMPT);
    term.send(&format!("y{ENTER}"));
    term.expect(STAGE_PROMPT);
    term.send(&format!("yes{ENTER}"));
    term.expect(STAGE_PROMPT);
    term.send(&format!("y{CTRL_C}"));
    term.expect(r"cancelled at the prompt \(Ctrl-C\)");
    let (code, transcript) = term.finish();
    assert_eq!(code, 130, "{transcript}");
    assert!(c.writes_since(&mark).is_empty(), "{transcript}");

    // Ctrl-D is the end of input: the same.
    let mut term = Terminal::start(&c, &["localhost"], &[]);
    term.expect(r"\[y/N\] ");
    term.send(CTRL_D);
    term.expect(r"cancelled at the prompt \(Ctrl-D\)");
    let (code, transcript) = term.finish();
    assert_eq!(code, 130, "{transcript}");
    assert!(c.writes_since(&mark).is_empty(), "{transcript}");

    // Mid-way through `up --lockdown`: the stages are applied as one revision, then Ctrl-C at
    // the host-endpoint prompt. The journal holds one complete revision and nothing pending.
    let mut term = Terminal::start(&c, &["up", "--lockdown"], &[]);
    answer_every_stage(
        &mut term,
        &format!("y{ENTER}"),
        r"applied \d+ change\(s\), recorded as revision \d+",
    );
    term.expect(r"Enable automatic host endpoints on \d+ node\(s\)\? \[y/N\] ");
    term.send(CTRL_C);
    term.expect(r"cancelled at the prompt \(Ctrl-C\)");
    let (code, transcript) = term.finish();
    assert_eq!(code, 130, "{transcript}");
    assert_eq!(states(&history(&c)), ["complete"], "{transcript}");
    let kcc = c.get_json(&["kubecontrollersconfigurations.projectcalico.org", "default"]);
    assert_ne!(
        kcc["spec"]["controllers"]["node"]["hostEndpoint"]["autoCreate"], "Enabled",
        "host endpoints were not enabled"
    );

    // A re-run finds everything in place; rolling everything back is clean.
    let again = calico_harden(&c, &["up", "--yes"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again
            .stderr
            .contains("every selected stage is already in place"),
        "{}",
        again.stderr
    );
    let rollback = calico_harden(&c, &["rollback", "--all", "--yes"]);
    assert_eq!(rollback.code, 0, "{}", rollback.stderr);
    assert_eq!(gnp_names(&c), start);
    assert!(
        !states(&history(&c)).iter().any(|s| s == "pending"),
        "{:?}",
        history(&c)
    );
}

#[test]
fn lockdown_takes_the_context_name_then_the_countdown() {
    let c = harness::cluster(Seed::Lab);
    assert_eq!(calico_harden(&c, &["up", "--yes"]).code, 0);
    assert_eq!(
        calico_harden(&c, &["enable-hep", "--wait", "--yes"]).code,
        0
    );
    let context = current_context(&c);
    let safety_net = "final-allow-everything".to_string();
    let name_prompt = format!(
        r"Type the context name \({}\) to go on: ",
        regex_escape(&context)
    );
    let countdown = r"Confirm within \d+s, or the safety net is restored \[y/N\] ";

    // A wrong name changes nothing.
    let mark = c.audit_mark();
    let mut term = Terminal::start(&c, &["lockdown"], &[]);
    term.expect(&name_prompt);
    term.send(&format!("{context}-typo{ENTER}"));
    term.expect("the context name did not match; nothing was changed");
    let (code, transcript) = term.finish();
    assert_eq!(code, 130, "{transcript}");
    assert!(c.writes_since(&mark).is_empty(), "{transcript}");

    // The right name, then no answer: the countdown runs out and the safety net comes back.
    let mut term = Terminal::start(&c, &["lockdown", "--confirm-timeout", "3s"], &[]);
    term.expect(&name_prompt);
    term.send(&format!("{context}{ENTER}"));
    term.expect(countdown);
    term.expect("no answer within 3s");
    term.expect("lockdown reverted: no confirmation in time");
    let (code, transcript) = term.finish();
    assert_eq!(code, 1, "{transcript}");
    assert!(gnp_names(&c).contains(&safety_net), "{transcript}");

    // Ctrl-C at the countdown is not a confirmation either: restored, exit 130.
    let mut term = Terminal::start(&c, &["lockdown"], &[]);
    term.expect(&name_prompt);
    term.send(&format!("{context}{ENTER}"));
    term.expect(countdown);
    term.send(CTRL_C);
    term.expect("lockdown cancelled: the safety net is back");
    let (code, transcript) = term.finish();
    assert_eq!(code, 130, "{transcript}");
    assert!(gnp_names(&c).contains(&safety_net), "{transcript}");

    // Confirmed in time: default deny is in force.
    let mut term = Terminal::start(&c, &["lockdown"], &[]);
    term.expect(&name_prompt);
    term.send(&format!("{context}{ENTER}"));
    term.expect(countdown);
    term.send(&format!("y{ENTER}"));
    term.expect("lockdown confirmed: default deny is in force");
    let (code, transcript) = term.finish();
    assert_eq!(code, 0, "{transcript}");
    let names = gnp_names(&c);
    assert!(!names.contains(&safety_net), "{names:?}");
    assert!(!names.contains(&"log-everything".to_string()), "{names:?}");
    let states = states(&history(&c));
    assert!(!states.iter().any(|s| s == "pending"), "{states:?}");
    assert_eq!(
        states.last().map(String::as_str),
        Some("complete"),
        "{states:?}"
    );
}

const COLOUR: &str = "\x1b[";

#[test]
fn colour_follows_the_terminal_and_no_color() {
    let c = harness::cluster(Seed::Lab);
    let coloured = Terminal::start(&c, &["up", "--dry-run=client"], &[]).finish();
    assert_eq!(coloured.0, 0, "{}", coloured.1);
    assert!(
        coloured.1.contains(COLOUR),
        "a terminal gets colour: {}",
        coloured.1
    );

    for (what, args, env) in [
        (
            "NO_COLOR",
            &["up", "--dry-run=client"][..],
            &[("NO_COLOR", "1")][..],
        ),
        (
            "--no-color",
            &["up", "--dry-run=client", "--no-color"][..],
            &[][..],
        ),
    ] {
        let (code, transcript) = Terminal::start(&c, args, env).finish();
        assert_eq!(code, 0, "{what}: {transcript}");
        assert!(!transcript.contains(COLOUR), "{what}: {transcript:?}");
        assert!(
            transcript.contains("+ "),
            "{what}: the diff is shown: {transcript}"
        );
    }

    // stdout piped (`... | less`) while stderr is the terminal: the data written to the pipe
    // has no colour codes.
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let stdout_file = scratch.path().join("stdout");
    let mut command = c.command("sh");
    command
        .stdin(Stdio::inherit())
        .args(["-c", "exec \"$0\" up --dry-run=client >\"$1\"", BINARY])
        .arg(&stdout_file)
        .env_remove("NO_COLOR")
        .env("TERM", "xterm-256color");
    let (code, transcript) = Terminal::spawn(command).finish();
    assert_eq!(code, 0, "{transcript}");
    let data = std::fs::read_to_string(&stdout_file).expect("the piped stdout");
    assert!(data.contains("+ "), "the diff went to stdout: {data}");
    assert!(
        !data.contains(COLOUR),
        "no colour codes in a pipe: {data:?}"
    );

    // Piped, as in CI or `| less`: neither output carries colour codes.
    let piped = c
        .command(BINARY)
        .args(["up", "--dry-run=client"])
        .env_remove("NO_COLOR")
        .output()
        .expect("running the plugin");
    assert!(piped.status.success(), "{piped:?}");
    assert!(!String::from_utf8_lossy(&piped.stdout).contains(COLOUR));
    assert!(!String::from_utf8_lossy(&piped.stderr).contains(COLOUR));
}

#[test]
fn help_wraps_to_the_terminals_width() {
    // No cluster needed: help is printed before anything is read.
    let help_at = |columns: u32| -> String {
        // `stty` sizes the terminal before the plugin starts, so it sees the size at once.
        let mut command = Command::new("sh");
        command.args([
            "-c",
            &format!("stty cols {columns} rows 40 && exec \"$0\" up --help"),
            BINARY,
        ]);
        let (code, transcript) = Terminal::spawn(command).finish();
        assert_eq!(code, 0, "{transcript}");
        transcript
    };
    // A line may pass the edge only when it is one word that cannot be broken (a long list of
    // namespaces without spaces).
    let too_wide = |text: &str, columns: usize| -> Vec<String> {
        strip_colour(text)
            .lines()
            .filter(|l| l.chars().count() > columns && l.split_whitespace().count() > 1)
            .map(str::to_string)
            .collect()
    };
    let narrow = help_at(60);
    assert_eq!(too_wide(&narrow, 60), Vec::<String>::new(), "{narrow}");
    let wide = help_at(100);
    assert_eq!(too_wide(&wide, 100), Vec::<String>::new(), "{wide}");
    assert!(
        !too_wide(&wide, 60).is_empty(),
        "the wider terminal is used:\n{wide}"
    );
    assert!(
        narrow.lines().count() > wide.lines().count(),
        "narrower means more lines"
    );
}

#[test]
fn a_prompt_needs_stdin_and_stderr_to_be_the_terminal() {
    let c = harness::cluster(Seed::Lab);
    let mark = c.audit_mark();
    let scratch = tempfile::tempdir().expect("a scratch directory");

    // stderr redirected to a file: nobody would see the question.
    let stderr_file = scratch.path().join("stderr");
    let mut command = c.command("sh");
    command
        .stdin(Stdio::inherit())
        .args(["-c", "exec \"$0\" localhost 2>\"$1\"", BINARY])
        .arg(&stderr_file);
    let (code, transcript) = Terminal::spawn(command).finish();
    let stderr = read(&stderr_file);
    assert_eq!(code, 1, "{transcript}{stderr}");
    assert!(stderr.contains("stderr is not a terminal"), "{stderr}");
    assert!(stderr.contains("--yes"), "{stderr}");

    // stdin not a terminal while the output is one.
    let mut command = c.command("sh");
    command
        .stdin(Stdio::inherit())
        .args(["-c", "exec \"$0\" up </dev/null", BINARY]);
    let (code, transcript) = Terminal::spawn(command).finish();
    assert_eq!(code, 1, "{transcript}");
    assert!(
        transcript.contains("stdin is not a terminal"),
        "{transcript}"
    );
    assert!(c.writes_since(&mark).is_empty());

    // --yes answers for the operator, terminal or not; lockdown's own checks still refuse.
    let mut command = c.command(BINARY);
    command.stdin(Stdio::inherit()).args(["lockdown", "--yes"]);
    let (code, transcript) = Terminal::spawn(command).finish();
    assert_eq!(code, 1, "{transcript}");
    assert!(transcript.contains("lockdown refused"), "{transcript}");
    assert!(c.writes_since(&mark).is_empty());
    let mut command = c.command(BINARY);
    command.stdin(Stdio::inherit()).args(["localhost", "--yes"]);
    let (code, transcript) = Terminal::spawn(command).finish();
    assert_eq!(code, 0, "{transcript}");
    assert!(
        gnp_names(&c).contains(&"allow-containers-access-to-localhost".to_string()),
        "{transcript}"
    );
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The text without its SGR colour codes.
fn strip_colour(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(COLOUR) {
        plain.push_str(&rest[..start]);
        let code = &rest[start + COLOUR.len()..];
        rest = code.find('m').map_or("", |end| &code[end + 1..]);
    }
    plain.push_str(rest);
    plain
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|ch| {
            let special = r"\.+*?()|[]{}^$#&-~".contains(ch);
            special.then_some('\\').into_iter().chain([ch])
        })
        .collect()
}
