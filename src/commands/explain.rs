//! `explain`: how Calico policy decides one flow. (Being built: see the policy engine.)

use crate::cli::ExplainArgs;
use crate::error::{Error, Result};
use crate::exit::ExitStatus;

use super::Context;

pub async fn run(_ctx: &Context, _args: &ExplainArgs) -> Result<ExitStatus> {
    Err(Error::refused("`explain` is not available in this build yet", None))
}
