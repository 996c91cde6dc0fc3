//! `check`: the critical flows (API server, kubelet, typha, DNS, BGP, encapsulation...) with the
//! verdict now and after a stage or lockdown, and the policy and rule that decide. Exit 1 when
//! a flow allowed now would be denied after the change (without `--after`: when one is denied
//! now). Nothing is written.

use crate::cli::CheckArgs;
use crate::cluster::inventory::{LiveState, Observe};
use crate::engine::{self, FlowOutcome, FlowReport};
use crate::error::Result;
use crate::exit::ExitStatus;
use crate::facts::ClusterFacts;
use crate::stages::{StageId, StageOptions};
use crate::ui::Printer;
use crate::ui::printer::Tone;

use super::Context;
use super::observe::Observed;

/// Above this many flows the table groups them; the lost ones are always listed.
const ROWS_BEFORE_GROUPING: usize = 60;
const LOST_LISTED: usize = 50;

pub async fn run(ctx: &Context, args: &CheckArgs) -> Result<ExitStatus> {
    let Observed { facts, live, .. } = ctx.observe(&Observe::everything()).await?;
    let options = StageOptions {
        namespace_override: ctx.namespace.clone(),
        ..StageOptions::with_defaults()
    };
    let report = engine::check(&live, &facts, &options, args.after);
    // Every pod of a fleet is the bulk of the memory; the report is all that is shown.
    drop(live);
    if ctx.printer.output.is_some() {
        ctx.printer.structured(&report);
    } else {
        ctx.printer.data(&render_table(&ctx.printer, &report));
    }
    for note in &report.notes {
        ctx.printer.say_tone(Tone::Dim, &format!("note: {note}"));
    }
    Ok(conclude(&ctx.printer, &report))
}

/// Say what the report means and turn it into an exit status.
fn conclude(printer: &Printer, report: &FlowReport) -> ExitStatus {
    let total = report.flows.len();
    match report.after {
        Some(stage) => {
            let lost: Vec<&FlowOutcome> = report.lost().collect();
            let still_denied = report
                .flows
                .iter()
                .filter(|f| !f.now.allowed && f.denied_in_the_end())
                .count();
            if lost.is_empty() {
                printer.say_tone(
                    Tone::Good,
                    &format!("after {stage}: no critical flow is lost ({total} checked)"),
                );
                if still_denied > 0 {
                    printer.warn(&format!(
                        "{still_denied} critical flow(s) are denied now and stay denied"
                    ));
                }
                return ExitStatus::Success;
            }
            printer.say_tone(
                Tone::Bad,
                &format!(
                    "after {stage}: {} critical flow(s) would be lost:",
                    lost.len()
                ),
            );
            for line in FlowReport::summarize(lost.into_iter(), 5) {
                printer.say(&format!("  {line}"));
            }
            printer.hint(&format!(
                "see why with `kubectl calico-harden explain FROM TO PROTO/PORT --after {stage}`; add the missing stage or policy before applying {stage}"
            ));
            ExitStatus::Failure
        }
        None => {
            let denied: Vec<&FlowOutcome> = report.denied_in_the_end().collect();
            if denied.is_empty() {
                printer.say_tone(
                    Tone::Good,
                    &format!("every critical flow is allowed ({total} checked)"),
                );
                return ExitStatus::Success;
            }
            printer.say_tone(
                Tone::Bad,
                &format!("{} critical flow(s) are denied now:", denied.len()),
            );
            for line in FlowReport::summarize(denied.into_iter(), 5) {
                printer.say(&format!("  {line}"));
            }
            ExitStatus::Failure
        }
    }
}

fn verdict_word(printer: &Printer, allowed: bool) -> String {
    let (tone, word) = if allowed {
        (Tone::Good, "allowed")
    } else {
        (Tone::Bad, "DENIED ")
    };
    printer.paint(tone, word)
}

fn render_table(printer: &Printer, report: &FlowReport) -> String {
    if report.flows.len() <= ROWS_BEFORE_GROUPING {
        flow_table(printer, report)
    } else {
        let mut out = grouped_table(printer, report);
        out.push_str(&lost_flows(report));
        out
    }
}

/// One line per flow: what it is, its path, the verdict now (and after), what decided.
fn flow_table(printer: &Printer, report: &FlowReport) -> String {
    let after_title = report.after.map(|s| format!("AFTER {s}").to_uppercase());
    let width = report
        .flows
        .iter()
        .map(|f| f.label().len())
        .max()
        .unwrap_or(10)
        .max(4)
        + 2;
    let category_width = report
        .flows
        .iter()
        .map(|f| f.title.len())
        .max()
        .unwrap_or(10)
        + 2;
    let header = match &after_title {
        Some(_) => format!(
            "{:<category_width$}{:<width$}{:<9}{:<9}DECIDED BY",
            "CRITICAL FLOW", "PATH", "NOW", "AFTER"
        ),
        None => format!(
            "{:<category_width$}{:<width$}{:<9}DECIDED BY",
            "CRITICAL FLOW", "PATH", "NOW"
        ),
    };
    let mut out = printer.paint(Tone::Bold, &header);
    if let Some(after) = after_title {
        out.push_str(&format!("   ({after})"));
    }
    out.push('\n');
    for f in &report.flows {
        let decided = f.after.as_ref().unwrap_or(&f.now);
        let after = f
            .after
            .as_ref()
            .map(|a| format!("{}  ", verdict_word(printer, a.allowed)))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<category_width$}{:<width$}{}  {after}{}\n",
            f.title,
            f.label(),
            verdict_word(printer, f.now.allowed),
            decided.decided_by
        ));
    }
    out
}

/// One line per category and protocol with counts, for reports too long to list.
fn grouped_table(printer: &Printer, report: &FlowReport) -> String {
    let mut groups: Vec<(&str, &str, usize, usize, usize)> = Vec::new();
    for f in &report.flows {
        let after_denied = usize::from(f.denied_in_the_end());
        let now_denied = usize::from(!f.now.allowed);
        match groups
            .iter_mut()
            .find(|g| g.0 == f.title && g.1 == f.protocol)
        {
            Some(g) => {
                g.2 += 1;
                g.3 += now_denied;
                g.4 += after_denied;
            }
            None => groups.push((f.title, &f.protocol, 1, now_denied, after_denied)),
        }
    }
    let mut out = printer.paint(
        Tone::Bold,
        &format!(
            "{:<46}{:<12}{:>8}{:>12}{:>14}\n",
            "CRITICAL FLOW", "PROTOCOL", "FLOWS", "DENIED NOW", "DENIED AFTER"
        ),
    );
    for (title, protocol, count, now, after) in groups {
        let after = if report.after.is_some() {
            after.to_string()
        } else {
            "-".into()
        };
        out.push_str(&format!(
            "{title:<46}{protocol:<12}{count:>8}{now:>12}{after:>14}\n"
        ));
    }
    out
}

/// Every lost flow, up to [`LOST_LISTED`] of them.
fn lost_flows(report: &FlowReport) -> String {
    let lost: Vec<&FlowOutcome> = report.lost().collect();
    let mut out = String::new();
    if lost.is_empty() {
        return out;
    }
    out.push_str(&format!("\nlost ({}):\n", lost.len()));
    for f in lost.iter().take(LOST_LISTED) {
        let by = f
            .after
            .as_ref()
            .map(|a| a.decided_by.as_str())
            .unwrap_or_default();
        out.push_str(&format!("  {} {}: {by}\n", f.title, f.label()));
    }
    if lost.len() > LOST_LISTED {
        out.push_str(&format!(
            "  ... and {} more (-o json lists every flow)\n",
            lost.len() - LOST_LISTED
        ));
    }
    out
}

/// The critical flows whose verdict `stage` would change, for a stage command to show before
/// it asks. Empty when nothing changes.
pub fn flows_changed_by(
    live: &LiveState,
    facts: &ClusterFacts,
    options: &StageOptions,
    stage: StageId,
) -> Vec<FlowOutcome> {
    engine::changed_by(live, facts, options, stage)
}

/// Show the flows a stage changes (see [`flows_changed_by`]); returns how many would be lost.
pub fn show_flow_changes(ctx: &Context, stage: StageId, changed: &[FlowOutcome]) -> usize {
    if changed.is_empty() {
        ctx.printer
            .say_tone(Tone::Dim, &format!("{stage}: no critical flow changes"));
        return 0;
    }
    let lost = changed.iter().filter(|f| f.lost()).count();
    ctx.printer.say(&format!(
        "{stage} changes {} critical flow(s):",
        changed.len()
    ));
    for f in changed.iter().take(LOST_LISTED) {
        let after = f.after.as_ref().expect("a changed flow has an after");
        let word = if after.allowed { "now allowed" } else { "LOST" };
        ctx.printer.say(&format!(
            "  {word}: {} {} ({})",
            f.title,
            f.label(),
            after.decided_by
        ));
    }
    lost
}
