//! The demo lab's building blocks, which the tests use too:
//!
//! - [`sshd`]: a real `sshd` target host on a loopback address;
//! - [`demo_image`]: images built with no network from a static busybox
//!   through the Docker engine's import, saved as `docker save` tarballs;
//! - [`procs`]: process trees, ended SIGTERM first.

pub mod demo_image;
pub mod procs;
pub mod sshd;
