mod selector_differential;
mod tutorial_render;
mod cli;
mod harness;
mod controlplane_smoke;
