//! The Server controller: drives each Server toward its declared containers
//! through the playbook runner, within its cluster's rollout.
//!
//! - [`desired`]: the desired state (role files, images, hash) from the
//!   caches, and a memo of every Server's desired hash.
//! - [`rollout`]: the rollout planner — who may start now, and why the others
//!   wait (pure).
//! - [`availability`]: whether the containers have run `minReadySeconds`
//!   (pure).
//! - [`step`]: one reconcile as a state machine over the status, with the
//!   runner and the credentials behind traits.
//! - [`outcome`]: the one place the conditions are computed.
//! - [`reconcile`]: the I/O around it (caches, status writes, Events,
//!   deletion).
//! - [`provisioner`]: the seam to the playbook runners.
//! - [`decide`]: the backoff.

pub mod availability;
pub mod decide;
pub mod desired;
pub mod outcome;
pub mod provisioner;
pub mod reconcile;
pub mod rollout;
pub mod step;
