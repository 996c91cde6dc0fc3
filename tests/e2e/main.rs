#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bad_input_e2e;
mod calico_versions_e2e;
mod canary_lockdown_e2e;
mod check_e2e;
mod cli;
mod completion_e2e;
mod controlplane_smoke;
mod dataplane_e2e;
mod faults_e2e;
mod harness;
mod krew_e2e;
mod pty_e2e;
mod reliability_e2e;
mod selector_differential;
mod stages_e2e;
mod tutorial_render;
