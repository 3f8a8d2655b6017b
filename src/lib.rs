//! server-manager: a Kubernetes-style operator that provisions Contrail
//! (Tungsten Fabric) control-plane containers on servers.
//!
//! - [`crd`]: the `Cluster`, `Server` and `Image` custom resources.
//! - [`config`]: the effective-configuration engine (merge, derive, render,
//!   validate); pure, no I/O.
//! - [`image_ref`]: registry image reference naming and validation.
//! - [`manifests`]: reading manifests from files (for `render` and tests).
//! - [`apiserver`]: the embedded Kubernetes-compatible API server.
//! - [`standalone`]: `server-manager standalone` (API server + CRDs + kubeconfig).

pub mod apiserver;
pub mod crd;
pub mod image_ref;
pub mod standalone;
