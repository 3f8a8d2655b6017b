//! Image reference naming: an Image is pushed as `<registry>/<imageId>-<imageType>:<version>`.

use std::fmt;

use crate::crd::Role;

/// Why an image reference part is invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageRefError {
    /// The image id is not a valid repository path component.
    #[error(
        "invalid image id {0:?}: use lower case letters, digits and single '.', '_' or '-' separators (e.g. contrail-container)"
    )]
    ImageId(String),
    /// The version is not a valid tag.
    #[error(
        "invalid version {0:?}: a tag is 1-128 of letters, digits, '_', '.', '-', not starting with '.' or '-'"
    )]
    Version(String),
    /// The registry address is not `host[:port][/prefix]`.
    #[error("invalid registry {0:?}: expected host[:port] optionally followed by /path")]
    Registry(String),
}

/// A validated reference `<registry>/<repository>:<tag>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageReference {
    /// `host[:port]` with an optional path prefix.
    pub registry: String,
    /// `<imageId>-<imageType>`, prefixed by the registry's path prefix if any.
    pub repository: String,
    /// The version.
    pub tag: String,
}

impl ImageReference {
    /// Builds the reference of an image, validating every part.
    pub fn new(
        registry: &str,
        image_id: &str,
        image_type: Role,
        version: &str,
    ) -> Result<Self, ImageRefError> {
        validate_image_id(image_id)?;
        validate_version(version)?;
        let registry = registry.trim_end_matches('/');
        let (host, prefix) = match registry.split_once('/') {
            Some((h, p)) => (h, Some(p)),
            None => (registry, None),
        };
        if !valid_registry_host(host)
            || prefix.is_some_and(|p| !p.split('/').all(valid_path_component))
        {
            return Err(ImageRefError::Registry(registry.to_string()));
        }
        let name = format!("{image_id}-{image_type}");
        let repository = match prefix {
            Some(p) => format!("{p}/{name}"),
            None => name,
        };
        Ok(ImageReference {
            registry: host.to_string(),
            repository,
            tag: version.to_string(),
        })
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.registry, self.repository, self.tag)
    }
}

/// Checks an image id: a repository path component of the OCI distribution spec
/// (`[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`).
pub fn validate_image_id(id: &str) -> Result<(), ImageRefError> {
    if id.len() <= 128 && valid_path_component(id) {
        Ok(())
    } else {
        Err(ImageRefError::ImageId(id.to_string()))
    }
}

/// Checks a version against the tag grammar `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn validate_version(v: &str) -> Result<(), ImageRefError> {
    let mut chars = v.chars();
    let ok = match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => {
            v.len() <= 128
                && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ImageRefError::Version(v.to_string()))
    }
}

fn valid_path_component(s: &str) -> bool {
    // Alternating runs: alphanumerics, then one separator ('.', '_', '__' or '-'+).
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        let sep_start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &s[sep_start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
}

fn valid_registry_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    let name_ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    name_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_documented_name() {
        let r = ImageReference::new(
            "127.0.0.1:5000",
            "contrail-container",
            Role::Controller,
            "5.0-214",
        )
        .unwrap();
        assert_eq!(
            r.to_string(),
            "127.0.0.1:5000/contrail-container-controller:5.0-214"
        );
        assert_eq!(r.repository, "contrail-container-controller");
        let p = ImageReference::new("reg.example.com/lab", "ci", Role::Agent, "1").unwrap();
        assert_eq!(p.to_string(), "reg.example.com/lab/ci-agent:1");
    }

    #[test]
    fn rejects_upper_case_and_bad_tags() {
        // The original server manager hung on an upper-case image id.
        assert!(matches!(
            ImageReference::new("r:5000", "Contrail", Role::Agent, "1"),
            Err(ImageRefError::ImageId(_))
        ));
        for bad in ["", "-x", ".x", "a b", "a/b", &"x".repeat(129)] {
            assert!(validate_version(bad).is_err(), "{bad:?}");
        }
        for bad in ["", "a..b", "a-", "_a", "a___b", "a:b"] {
            assert!(validate_image_id(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "a.b", "a__b", "a---b", "contrail-container"] {
            assert!(validate_image_id(good).is_ok(), "{good:?}");
        }
        assert!(matches!(
            ImageReference::new("bad host:1", "a", Role::Agent, "1"),
            Err(ImageRefError::Registry(_))
        ));
        assert!(ImageReference::new("r:0", "a", Role::Agent, "1").is_err());
    }
}
