//! `history`: the revisions stored in the cluster, newest last.

use crate::error::Result;
use crate::exit::ExitStatus;

use super::Context;

pub async fn run(ctx: &Context) -> Result<ExitStatus> {
    let cluster = ctx.connect().await?;
    let revisions = ctx.store(&cluster).list().await?;
    if ctx.printer.output.is_some() {
        ctx.printer.structured(&revisions);
        return Ok(ExitStatus::Success);
    }
    if revisions.is_empty() {
        ctx.printer.say(&format!(
            "no history in namespace {}: this tool has not changed this cluster",
            ctx.history_namespace
        ));
        return Ok(ExitStatus::Success);
    }
    let user_width = revisions
        .iter()
        .map(|r| r.user.chars().count())
        .max()
        .unwrap_or(0)
        .max(4)
        + 2;
    let mut out = format!(
        "{:<9}{:<22}{:<user_width$}{:<13}{:<8}{}\n",
        "REVISION", "TIME", "USER", "STATE", "OBJECTS", "COMMAND"
    );
    for r in &revisions {
        let applied = r.objects.iter().filter(|o| o.applied).count();
        out.push_str(&format!(
            "{:<9}{:<22}{:<user_width$}{:<13}{:<8}{}\n",
            r.revision,
            r.time,
            r.user,
            r.state.as_str(),
            format!("{applied}/{}", r.objects.len()),
            r.command
        ));
    }
    ctx.printer.data(&out);
    Ok(ExitStatus::Success)
}
