//! Ctrl-C while writing: the current write finishes, no further write starts, the revision is
//! marked failed with what was done, and the process exits 130. Before the first write Ctrl-C
//! keeps its default meaning (the process ends, nothing was changed).

use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);
static WATCH: Once = Once::new();

/// Start listening for Ctrl-C (from the first write on).
pub fn watch() {
    WATCH.call_once(|| {
        tokio::spawn(async {
            while tokio::signal::ctrl_c().await.is_ok() {
                if REQUESTED.swap(true, Ordering::SeqCst) {
                    // A second Ctrl-C: the operator insists.
                    std::process::exit(130);
                }
            }
        });
    });
}

pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
