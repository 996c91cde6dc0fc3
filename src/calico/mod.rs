//! Calico's resource model and selector language, as far as this tool needs them.

pub mod host_endpoints;
pub mod objects;
pub mod policy;
pub mod selector;
