//! -v logging to stderr. Only our own crate logs above warn: kube's and hyper's debug output can
//! include request headers, and credentials must never be printed.

pub fn init(verbosity: u8) {
    let level = match verbosity {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    // kube's own errors reach the user through our messages; its logs stay off.
    let filter = tracing_subscriber::EnvFilter::new(format!("off,kubectl_calico_harden={level}"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(verbosity > 1)
        .try_init();
}
