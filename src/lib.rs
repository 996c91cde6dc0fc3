//! kubectl calico-harden: takes a Calico cluster from "everything allowed" to default deny on every
//! host and workload in safe, reversible, journaled steps.
//!
//! Data flows one way: arguments → validated settings → cluster facts → desired resources →
//! changes → confirmation → writes → journal → report. Everything before "writes" is pure.

pub mod calico;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod engine;
pub mod error;
pub mod exit;
pub mod facts;
pub mod flowlogs;
pub mod interrupt;
pub mod journal;
pub mod live;
pub mod logging;
pub mod plan;
pub mod stages;
pub mod ui;
pub mod yaml;
