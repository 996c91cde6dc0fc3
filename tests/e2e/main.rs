mod selector_differential;
mod tutorial_render;
mod cli;
