//! server-manager: a Kubernetes-style operator that provisions Contrail
//! (Tungsten Fabric) control-plane containers on servers.
//!
//! - [`crd`]: the `Cluster`, `Server` and `Image` custom resources.
//! - [`config`]: the effective-configuration engine (merge, derive, render,
//!   validate); pure, no I/O.
//! - [`controller`]: the Image, Server and Cluster controllers (`operator`).
//! - [`image_ref`]: registry image reference naming and validation.
//! - [`registry`]: pushing image tarballs to a registry (direct OCI push or
//!   through a Docker engine) and deleting pushed tags.
//! - [`runner`]: the playbook runner service (REST over `ansible-playbook`) and
//!   its client.
//! - [`apiserver`]: the embedded Kubernetes-compatible API server.
//! - [`standalone`]: `server-manager standalone` (API server + CRDs + kubeconfig,
//!   operator, playbook runner).
//! - [`lab`]: the demo lab of `standalone --lab N` (sshd hosts on loopback,
//!   demo images, manifests), also used by the tests to build their hosts.
//! - [`validation`]: rules on user input (host paths, image paths) defined
//!   once, used by the CRD schemas and by the runner and image engine.
//! - [`manifests`]: reading manifests from files (for `render` and tests).
//! - [`logs`]: `server-manager logs` (a Server's host log files through the
//!   runner).

pub mod apiserver;
pub mod backoff;
pub mod config;
pub mod controller;
pub mod crd;
pub mod image_ref;
pub mod lab;
pub mod local_registry;
pub mod logs;
pub mod manifests;
pub mod registry;
pub mod runner;
pub mod standalone;
pub mod validation;
