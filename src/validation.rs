//! Rules on user input that can be judged from a value alone, each defined
//! once and used in two places: by the CRD schemas (patterns and CEL rules, so
//! the API server rejects a manifest at admission and names the field) and by
//! the component that receives the value later (the playbook runner's request
//! checks, the image engine), which must not trust that admission ran.

use std::path::{Path, PathBuf};

/// One component of a normalized path: letters, digits and `._@+=~-`, but
/// not `.` or `..`. Nothing else: no white space, no `:` or `,` (Docker's
/// volume syntax splits on them), no quotes, no control characters.
const COMPONENT: &str = r"(?:[A-Za-z0-9_@+=~-][A-Za-z0-9._@+=~-]*|\.[A-Za-z0-9_@+=~-][A-Za-z0-9._@+=~-]*|\.\.[A-Za-z0-9._@+=~-]+)";

/// The longest path accepted.
pub const MAX_PATH_LEN: usize = 1024;

/// An absolute, normalized path: `/` then components separated by single
/// `/`, no trailing `/`, no `.` or `..` component (so never `/` itself).
pub fn absolute_path_pattern() -> String {
    format!("^(?:/{COMPONENT})+$")
}

/// Host directories a Server's `layout` must never be: the root, the
/// top-level system directories and the system directories right below them
/// whose takeover gives the host away (the provision playbook makes a layout
/// directory mode 0700 and bind-mounts the log directory read-write into
/// every container). A dedicated directory below one of them
/// (`/var/lib/contrail`, `/etc/contrail`) is fine.
pub const SYSTEM_DIRECTORIES: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/etc/cron.d",
    "/etc/cron.daily",
    "/etc/cron.hourly",
    "/etc/default",
    "/etc/init.d",
    "/etc/pam.d",
    "/etc/profile.d",
    "/etc/security",
    "/etc/ssh",
    "/etc/ssl",
    "/etc/sudoers.d",
    "/etc/systemd",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/lost+found",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/usr/bin",
    "/usr/lib",
    "/usr/lib64",
    "/usr/libexec",
    "/usr/local",
    "/usr/local/bin",
    "/usr/local/sbin",
    "/usr/sbin",
    "/usr/share",
    "/var",
    "/var/cache",
    "/var/lib",
    "/var/lib/docker",
    "/var/log",
    "/var/run",
    "/var/spool",
    "/var/spool/cron",
    "/var/tmp",
];

/// Trees nothing of a Server's layout may be inside: kernel and device
/// interfaces, the boot files, SSH keys of any user.
pub const SYSTEM_TREES: &[&str] = &["/proc/", "/sys/", "/dev/", "/boot/", "/root/.ssh/"];

/// What a layout path must be, for messages.
pub const HOST_DIRECTORY_RULE: &str = "must be an absolute, normalized path (no `.` or `..` components, no `//`, no trailing `/`) \
     of letters, digits and `._@+=~-`, and not `/`, a system directory such as /etc, /usr or /var, \
     or anything under /proc, /sys, /dev, /boot: use a dedicated directory such as /var/lib/contrail";

/// Why `path` cannot be a host directory of a Server's layout, or `None`.
pub fn host_directory_error(path: &str) -> Option<String> {
    if path.len() > MAX_PATH_LEN {
        return Some(format!("must be at most {MAX_PATH_LEN} characters"));
    }
    if !path_regex().is_match(path) {
        return Some(HOST_DIRECTORY_RULE.to_string());
    }
    if SYSTEM_DIRECTORIES.contains(&path) {
        return Some(format!(
            "{path} is a system directory: use a dedicated directory below it"
        ));
    }
    if SYSTEM_TREES.iter().any(|t| path.starts_with(t)) || path.ends_with("/.ssh") {
        return Some(format!("{path} is inside a system tree"));
    }
    None
}

fn path_regex() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(&absolute_path_pattern()).expect("valid path pattern"))
}

/// The CRD schema of a layout directory field: the pattern, the length, and a
/// CEL rule for the system directories, from the same definitions as
/// [`host_directory_error`].
pub fn host_directory_schema() -> schemars::Schema {
    let listed: Vec<String> = SYSTEM_DIRECTORIES
        .iter()
        .map(|d| format!("'{d}'"))
        .collect();
    let trees: Vec<String> = SYSTEM_TREES.iter().map(|t| format!("'{t}'")).collect();
    let rule = format!(
        "!(self in [{}]) && ![{}].exists(t, self.startsWith(t)) && !self.endsWith('/.ssh')",
        listed.join(", "),
        trees.join(", ")
    );
    schemars::json_schema!({
        "type": "string",
        "maxLength": MAX_PATH_LEN,
        "pattern": absolute_path_pattern(),
        "x-kubernetes-validations": [{
            "rule": rule,
            "message": "must not be a system directory (/etc, /usr, /var, /root, ...) nor under /proc, /sys, /dev, /boot: use a dedicated directory below one, e.g. /var/lib/contrail"
        }]
    })
}

/// Why `path` cannot name an Image tarball (before it is resolved against the
/// image directory), or `None`: it must be an absolute, normalized path.
pub fn image_path_error(path: &str) -> Option<String> {
    if path.len() > MAX_PATH_LEN {
        return Some(format!("must be at most {MAX_PATH_LEN} characters"));
    }
    (!path_regex().is_match(path)).then(|| {
        "must be an absolute, normalized path (no `.` or `..` components) of letters, digits and `._@+=~-`"
            .to_string()
    })
}

/// The CRD schema of `Image.spec.source.path`.
pub fn image_path_schema() -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "maxLength": MAX_PATH_LEN,
        "pattern": absolute_path_pattern(),
    })
}

/// Why an Image's tarball path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfineError {
    /// The path is not an absolute, normalized path.
    #[error("source.path {path:?} {why}; Image tarballs must be in {dir}")]
    Syntax {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        why: String,
        /// The image directory.
        dir: String,
    },
    /// The image directory itself cannot be resolved.
    #[error("the image directory {dir} cannot be used: {why}")]
    Directory {
        /// The image directory.
        dir: String,
        /// The I/O error.
        why: String,
    },
    /// The file does not exist (or a component is not readable).
    #[error("source.path {path}: {why}; Image tarballs must be in {dir}")]
    NotFound {
        /// The path as given.
        path: String,
        /// The I/O error.
        why: String,
        /// The image directory.
        dir: String,
    },
    /// The path, with every symbolic link resolved, leaves the directory.
    #[error(
        "source.path {path} is outside the image directory (it resolves to {resolved}); Image tarballs must be in {dir}"
    )]
    Outside {
        /// The path as given.
        path: String,
        /// Where it leads.
        resolved: String,
        /// The image directory.
        dir: String,
    },
    /// The path names something other than a regular file.
    #[error("source.path {path} is not a regular file; Image tarballs must be in {dir}")]
    NotAFile {
        /// The path as given.
        path: String,
        /// The image directory.
        dir: String,
    },
}

/// Resolves an Image's `source.path` inside `dir`, the operator's image
/// directory: the path must be absolute and normalized, and, with every
/// symbolic link resolved, a regular file inside `dir`. Returns the resolved
/// path, which is what gets opened. Nothing outside `dir` is opened or read
/// (only its metadata is looked up, to resolve links).
pub fn confine_image_path(dir: &Path, path: &str) -> Result<PathBuf, ConfineError> {
    let shown = dir.display().to_string();
    if let Some(why) = image_path_error(path) {
        return Err(ConfineError::Syntax {
            path: path.to_string(),
            why,
            dir: shown,
        });
    }
    let root = std::fs::canonicalize(dir).map_err(|e| ConfineError::Directory {
        dir: shown.clone(),
        why: e.to_string(),
    })?;
    // Outside the directory as written: refused before touching it.
    let lexical = Path::new(path);
    if !lexical.starts_with(dir) && !lexical.starts_with(&root) {
        return Err(ConfineError::Outside {
            path: path.to_string(),
            resolved: path.to_string(),
            dir: shown,
        });
    }
    let resolved = std::fs::canonicalize(lexical).map_err(|e| ConfineError::NotFound {
        path: path.to_string(),
        why: e.to_string(),
        dir: shown.clone(),
    })?;
    if !resolved.starts_with(&root) || resolved == root {
        return Err(ConfineError::Outside {
            path: path.to_string(),
            resolved: resolved.display().to_string(),
            dir: shown,
        });
    }
    let meta = std::fs::metadata(&resolved).map_err(|e| ConfineError::NotFound {
        path: path.to_string(),
        why: e.to_string(),
        dir: shown.clone(),
    })?;
    if !meta.is_file() {
        return Err(ConfineError::NotAFile {
            path: path.to_string(),
            dir: shown,
        });
    }
    Ok(resolved)
}

/// The default directory Image tarballs are read from by `server-manager
/// operator` (the Helm chart mounts `operator.imageVolume` there).
pub const DEFAULT_IMAGE_DIR: &str = "/var/lib/server-manager/images";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn layout_paths() {
        for ok in [
            "/etc/contrail",
            "/var/log/contrail",
            "/var/lib/contrail",
            "/tmp/.tmpAbC12/etc",
            "/srv/sm/lab-1/log",
            "/opt/contrail",
            "/home/ops/contrail",
            "/x...y/..z",
        ] {
            assert_eq!(host_directory_error(ok), None, "{ok}");
        }
        for bad in [
            "/",
            "//",
            "/etc",
            "/etc/",
            "/usr",
            "/var",
            "/root",
            "/boot",
            "/proc",
            "/sys",
            "/dev",
            "/var/log",
            "/etc/ssh",
            "/proc/1",
            "/dev/shm/x",
            "/root/.ssh",
            "/home/ops/.ssh",
            "/etc/../root",
            "/etc/./contrail",
            "/a/..",
            "/a//b",
            "relative/dir",
            "",
            "/a:b",
            "/a,b",
            "/a b",
            "/a\nb",
            "/a\"b",
        ] {
            assert!(host_directory_error(bad).is_some(), "{bad:?}");
        }
        assert!(host_directory_error(&format!("/{}", "a".repeat(MAX_PATH_LEN))).is_some());
    }

    #[test]
    fn the_cel_rule_says_what_the_rust_check_says() {
        let schema = host_directory_schema();
        let rule = schema.as_value()["x-kubernetes-validations"][0]["rule"]
            .as_str()
            .expect("rule")
            .to_string();
        let pattern = regex::Regex::new(&absolute_path_pattern()).expect("pattern");
        for path in [
            "/etc",
            "/etc/contrail",
            "/var/log",
            "/var/log/contrail",
            "/proc/self",
            "/root/.ssh",
            "/home/a/.ssh",
            "/usr/local",
            "/usr/local/contrail",
        ] {
            assert!(pattern.is_match(path));
            let cel = crate::apiserver::schema::eval_rule(&rule, &json!(path)).expect("eval");
            assert_eq!(cel, host_directory_error(path).is_none(), "{path}");
        }
    }

    #[test]
    fn image_paths_stay_in_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let images = dir.path().join("images");
        std::fs::create_dir(&images).expect("mkdir");
        std::fs::write(images.join("a.tar"), b"x").expect("write");
        std::fs::write(dir.path().join("secret"), b"s").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret"), images.join("link.tar"))
            .expect("symlink");
        std::os::unix::fs::symlink(images.join("a.tar"), images.join("inside.tar"))
            .expect("symlink");
        std::fs::create_dir(images.join("sub")).expect("mkdir");
        let p = |n: &str| images.join(n).display().to_string();

        assert!(confine_image_path(&images, &p("a.tar")).is_ok());
        assert_eq!(
            confine_image_path(&images, &p("inside.tar")).expect("inside"),
            std::fs::canonicalize(images.join("a.tar")).expect("canon")
        );
        assert!(matches!(
            confine_image_path(&images, &p("link.tar")),
            Err(ConfineError::Outside { .. })
        ));
        assert!(matches!(
            confine_image_path(&images, &dir.path().join("secret").display().to_string()),
            Err(ConfineError::Outside { .. })
        ));
        assert!(matches!(
            confine_image_path(&images, "/etc/shadow"),
            Err(ConfineError::Outside { .. })
        ));
        assert!(matches!(
            confine_image_path(&images, "../../../../etc/shadow"),
            Err(ConfineError::Syntax { .. })
        ));
        assert!(matches!(
            confine_image_path(&images, &format!("{}/../secret", images.display())),
            Err(ConfineError::Syntax { .. })
        ));
        assert!(matches!(
            confine_image_path(&images, "a.tar"),
            Err(ConfineError::Syntax { .. })
        ));
        assert!(matches!(
            confine_image_path(&images, &p("sub")),
            Err(ConfineError::NotAFile { .. })
        ));
        assert!(matches!(
            confine_image_path(&images, &p("missing.tar")),
            Err(ConfineError::NotFound { .. })
        ));
        let msg = confine_image_path(&images, "/etc/shadow")
            .unwrap_err()
            .to_string();
        assert!(msg.contains(&images.display().to_string()), "{msg}");
    }
}
