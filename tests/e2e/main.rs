mod selector_differential;
mod tutorial_render;
mod cli;
mod harness;
mod controlplane_smoke;
mod stages_e2e;
mod check_e2e;
