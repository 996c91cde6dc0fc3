//! `check`: the critical-flow table, now and after a stage. (Being built: see the policy engine.)

use crate::cli::CheckArgs;
use crate::error::{Error, Result};
use crate::exit::ExitStatus;

use super::Context;

pub async fn run(_ctx: &Context, _args: &CheckArgs) -> Result<ExitStatus> {
    Err(Error::refused("`check` is not available in this build yet", None))
}
