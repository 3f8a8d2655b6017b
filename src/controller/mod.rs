//! The controllers (`server-manager operator`): Image, Server and Cluster.
//! Thin reconcilers over pure "desired state" functions; side effects go
//! through the Kubernetes client, the playbook runner and the image engine.

pub mod cluster;
pub mod conditions;
pub mod leader;
pub mod metrics;
pub mod server;
