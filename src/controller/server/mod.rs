//! The Server controller: drives each Server toward its declared containers
//! through the playbook runner.

pub mod decide;
pub mod provisioner;
pub mod reconcile;
