//! Thin entry point: parse, build the runtime, run, map the result to an exit code.
//! Invoked as `kubectl_complete-calico_harden`, it answers kubectl's completion protocol.

use std::process::ExitCode;

use clap::Parser;
use kubectl_calico_harden::cli::Cli;
use kubectl_calico_harden::commands;
use kubectl_calico_harden::exit::ExitStatus;

fn main() -> ExitCode {
    let invoked_as = std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    // kubectl runs the hook with the words alone; the shell scripts pass `__complete` first.
    if invoked_as == commands::completion_hook_name()
        || std::env::args_os()
            .nth(1)
            .is_some_and(|a| a == "__complete")
    {
        let args: Vec<String> = std::env::args_os()
            .skip(1)
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let args = match args.first().map(String::as_str) {
            Some("__complete") | Some("__completeNoDesc") => &args[1..],
            _ => &args[..],
        };
        kubectl_calico_harden::ui::printer::Printer::new(true, None)
            .data(&commands::complete_for_kubectl(args));
        return ExitCode::SUCCESS;
    }

    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // --help and --version are "errors" to clap; they print and succeed.
            let _ = err.print();
            return match err.kind() {
                clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayVersion
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    ExitStatus::Success.into()
                }
                _ => ExitStatus::Usage.into(),
            };
        }
    };
    kubectl_calico_harden::logging::init(cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            kubectl_calico_harden::ui::printer::Printer::new(true, None)
                .error(&format!("cannot start the async runtime: {err}"));
            return ExitStatus::Failure.into();
        }
    };
    runtime.block_on(commands::run(cli)).into()
}
