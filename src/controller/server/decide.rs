//! The controllers' backoff is [`crate::backoff::Backoff`].

pub use crate::backoff::Backoff;
