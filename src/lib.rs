//! kubectl calico-harden: takes a Calico cluster from "everything allowed" to default deny on every
//! host and workload in safe, reversible, journaled steps.
//!
//! Data flows one way: arguments → validated settings → cluster facts → desired resources →
//! changes → confirmation → writes → journal → report. Everything before "writes" is pure.

pub mod calico;
