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

#[expect(
    clippy::expect_used,
    reason = "a pattern built from constants; its unit tests compile it"
)]
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

// ---- Rules on strings: hosts, URLs, registry addresses, names ----------------
//
// Each rule is a pair of anchored regular expressions in the syntax Go's RE2
// (kube-apiserver's CEL `matches`) and Rust's `regex` (the embedded API
// server's CEL, and the checks below) read alike: no look-around, no `\d`
// (Unicode digits in Rust), ASCII classes only. The CRD schema gets them as CEL
// rules with a message; the Rust check runs the very same expressions.

/// A decimal octet 0-255, without leading zeros (`010` is octal to
/// `inet_aton`, decimal to others: refused).
const DEC_OCTET: &str = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";

/// 1 to 4 hexadecimal digits: one 16-bit piece of an IPv6 address.
const H16: &str = "[0-9A-Fa-f]{1,4}";

/// One label of a host name (RFC 1123): 1 to 63 letters, digits and `-`, not
/// starting or ending with `-`.
const LABEL: &str = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";

/// A TCP port, 1 to 65535, without leading zeros.
const PORT: &str = "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9][0-9]|6[0-4][0-9][0-9][0-9]|[1-5][0-9][0-9][0-9][0-9]|[1-9][0-9]{0,3})";

/// Labels ending in a number (all digits, or `0x` hexadecimal): how WHATWG's
/// URL standard and `inet_aton` recognize an IPv4 address written in any of
/// the forms they accept (`127.1`, `0x7f.1`, `2130706433`).
const NUMBER_LAST: &str = r"(?:[A-Za-z0-9-]*\.)*(?:[0-9]+|0[xX][0-9A-Fa-f]*)";

fn ipv4() -> String {
    format!(r"{DEC_OCTET}(?:\.{DEC_OCTET}){{3}}")
}

/// An IPv6 address as RFC 3986 writes it (`IPv6address`): eight pieces, or
/// fewer around one `::`, the last 32 bits optionally as an IPv4 address. No
/// zone (`%eth0`), no brackets.
fn ipv6() -> String {
    let ls32 = format!("(?:{H16}:{H16}|{})", ipv4());
    // Up to `n + 1` pieces before the `::`: `[ *n( h16 ":" ) h16 ]`.
    let before = |n: usize| match n {
        0 => format!("(?:{H16})?"),
        n => format!("(?:(?:{H16}:){{0,{n}}}{H16})?"),
    };
    let forms = [
        format!("(?:{H16}:){{6}}{ls32}"),
        format!("::(?:{H16}:){{5}}{ls32}"),
        format!("{}::(?:{H16}:){{4}}{ls32}", before(0)),
        format!("{}::(?:{H16}:){{3}}{ls32}", before(1)),
        format!("{}::(?:{H16}:){{2}}{ls32}", before(2)),
        format!("{}::{H16}:{ls32}", before(3)),
        format!("{}::{ls32}", before(4)),
        format!("{}::{H16}", before(5)),
        format!("{}::", before(6)),
    ];
    format!("(?:{})", forms.join("|"))
}

fn host_name() -> String {
    format!(r"{LABEL}(?:\.{LABEL})*")
}

/// One rule on a string: when `when` matches (always, when `None`), `must`
/// must match (or, when `None`, the rule refuses what `when` matches).
struct Rule {
    when: Option<String>,
    must: Option<String>,
    message: &'static str,
}

impl Rule {
    /// The string must match `re`.
    fn must(re: impl Into<String>, message: &'static str) -> Rule {
        Rule {
            when: None,
            must: Some(re.into()),
            message,
        }
    }

    /// The string must not match `re`.
    fn forbid(re: impl Into<String>, message: &'static str) -> Rule {
        Rule {
            when: Some(re.into()),
            must: None,
            message,
        }
    }

    /// A host between `before` and `after` whose last label is a number must
    /// be an IPv4 address.
    fn numeric_host(before: &str, after: &str) -> Rule {
        Rule {
            when: Some(format!("^{before}{NUMBER_LAST}{after}")),
            must: Some(format!("^{before}{}{after}", ipv4())),
            message: NUMERIC_HOST_RULE,
        }
    }
}

/// A string field's rules: its longest length and its `Rule`s, compiled
/// once for the Rust checks.
pub struct StringRules {
    max_len: usize,
    rules: Vec<Rule>,
    compiled: Vec<(Option<regex::Regex>, Option<regex::Regex>)>,
}

/// A CEL string literal holding `text` (single quotes; `\` and `'` escaped).
fn cel_string(text: &str) -> String {
    format!("'{}'", text.replace('\\', r"\\").replace('\'', r"\'"))
}

impl StringRules {
    fn new(max_len: usize, rules: Vec<Rule>) -> StringRules {
        // The expressions are this file's constants; the unit tests compile
        // every one of them, so this cannot fail at run time.
        #[allow(clippy::expect_used)]
        let compile = |re: &Option<String>| {
            re.as_deref()
                .map(|r| regex::Regex::new(r).expect("the rule's expression compiles"))
        };
        let compiled = rules
            .iter()
            .map(|r| (compile(&r.when), compile(&r.must)))
            .collect();
        StringRules {
            max_len,
            rules,
            compiled,
        }
    }

    /// Why `value` is refused (the first rule it breaks), or `None`.
    pub fn error(&self, value: &str) -> Option<String> {
        if value.chars().count() > self.max_len {
            return Some(format!("must be at most {} characters", self.max_len));
        }
        self.rules
            .iter()
            .zip(&self.compiled)
            .find(|(_, (when, must))| {
                let applies = when.as_ref().is_none_or(|w| w.is_match(value));
                applies && must.as_ref().is_none_or(|m| !m.is_match(value))
            })
            .map(|(rule, _)| rule.message.to_string())
    }

    /// The CEL expression of each rule, with its message.
    fn cel_rules(&self) -> Vec<serde_json::Value> {
        self.rules
            .iter()
            .map(|r| {
                let when = r
                    .when
                    .as_deref()
                    .map(|w| format!("self.matches({})", cel_string(w)));
                let must = r
                    .must
                    .as_deref()
                    .map(|m| format!("self.matches({})", cel_string(m)));
                let rule = match (when, must) {
                    (None, Some(m)) => m,
                    (Some(w), Some(m)) => format!("!{w} || {m}"),
                    (Some(w), None) => format!("!{w}"),
                    (None, None) => "true".to_string(),
                };
                serde_json::json!({"rule": rule, "message": r.message})
            })
            .collect()
    }

    /// The CRD schema of a string field following these rules: `maxLength`
    /// (which also bounds the CEL cost kube-apiserver estimates) and one CEL
    /// rule per `Rule`.
    pub fn schema(&self) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "maxLength": self.max_len,
            "x-kubernetes-validations": self.cel_rules(),
        })
    }
}

/// What a host must be, for messages.
pub const HOST_RULE: &str = "must be an IPv4 address, an IPv6 address or an RFC 1123 host name (labels of 1 to 63 letters, digits and '-', not starting or ending with '-', joined by single dots); no port, no brackets, no white space";

const NUMERIC_HOST_RULE: &str = "a name whose last label is a number must be an IPv4 address: four decimal numbers from 0 to 255 without leading zeros";

/// The longest host name (RFC 1123).
pub const MAX_HOST_LEN: usize = 253;

/// `Server.spec.host` (and the runner's `target.host`): an IPv4 address, an
/// IPv6 address or an RFC 1123 host name, nothing else. A name whose last
/// label is a number must be a valid IPv4 address (`127.0.0.300`, `127.1`,
/// `0x7f.1`, `010.0.0.1` are refused: resolvers read some of them as
/// addresses other than the one meant).
pub fn host_rules() -> &'static StringRules {
    static RULES: std::sync::LazyLock<StringRules> = std::sync::LazyLock::new(|| {
        StringRules::new(
            MAX_HOST_LEN,
            vec![
                Rule::must(format!("^(?:{}|{})$", ipv6(), host_name()), HOST_RULE),
                Rule::numeric_host("", "$"),
            ],
        )
    });
    &RULES
}

/// Why `host` cannot be a Server's host, or `None`.
pub fn host_error(host: &str) -> Option<String> {
    host_rules().error(host)
}

/// The longest `source.url`.
pub const MAX_URL_LEN: usize = 2048;

/// `Image.spec.source.url`: `http://` or `https://`, a host (a host name, an
/// IPv4 address or a bracketed IPv6 address, with the numeric rule of
/// [`host_rules`]), an optional port 1-65535, then an optional path, query
/// and fragment of RFC 3986 characters (anything else percent-encoded). No
/// user name or password: they would show wherever the URL does.
pub fn url_rules() -> &'static StringRules {
    static RULES: std::sync::LazyLock<StringRules> = std::sync::LazyLock::new(|| {
        let rest = r"(?:[/?#](?:[A-Za-z0-9._~!$&'()*+,;=:@/?#-]|%[0-9A-Fa-f]{2})*)?";
        StringRules::new(
            MAX_URL_LEN,
            vec![
                Rule::must("^https?://", "must start with http:// or https://"),
                Rule::forbid(
                    r"^https?://[^/?#]*@",
                    "must not hold a user name or password (they would show wherever the URL does)",
                ),
                Rule::must(
                    format!(
                        r"^https?://(?:{}|\[{}\])(?::{PORT})?{rest}$",
                        host_name(),
                        ipv6()
                    ),
                    "must be http(s)://HOST[:PORT][/PATH]: HOST a host name, an IPv4 address or [IPv6], PORT 1 to 65535, PATH of URL characters (others percent-encoded, no white space)",
                ),
                Rule::numeric_host("https?://", "(?:[:/?#]|$)"),
            ],
        )
    });
    &RULES
}

/// Why `url` cannot be an Image's `source.url`, or `None`.
pub fn url_error(url: &str) -> Option<String> {
    url_rules().error(url)
}

/// The longest registry address.
pub const MAX_REGISTRY_LEN: usize = 255;

/// `Cluster.spec.registry.address` (and the runner's `vars.registry.address`):
/// `HOST[:PORT]` then optional `/path` components, as the first part of an
/// image reference. HOST is a host name with a dot, `localhost`, an IPv4
/// address or `[IPv6]`; a single-label name needs a port (Docker reads a
/// first component without `.` or `:` as a Docker Hub namespace and would
/// pull from there). No scheme: `insecure: true` selects plain HTTP.
pub fn registry_address_rules() -> &'static StringRules {
    static RULES: std::sync::LazyLock<StringRules> = std::sync::LazyLock::new(|| {
        let component = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
        StringRules::new(
            MAX_REGISTRY_LEN,
            vec![
                Rule::forbid(
                    "^[A-Za-z][A-Za-z0-9+.-]*://",
                    "must not start with a scheme (http://, https://): write HOST[:PORT][/path]; insecure: true selects plain HTTP",
                ),
                Rule::must(
                    format!(
                        r"^(?:(?:{LABEL}(?:\.{LABEL})+|localhost)(?::{PORT})?|{LABEL}:{PORT}|\[{}\](?::{PORT})?)(?:/{component})*$",
                        ipv6()
                    ),
                    "must be HOST[:PORT][/path]: HOST a host name with a dot, localhost, an IPv4 address or [IPv6] (a single-label name needs a port), PORT 1 to 65535, path components of lower case letters and digits separated by '.', '_', '__' or '-'",
                ),
                Rule::numeric_host("", "(?:[:/]|$)"),
            ],
        )
    });
    &RULES
}

/// Why `address` cannot be a registry address, or `None`.
pub fn registry_address_error(address: &str) -> Option<String> {
    registry_address_rules().error(address)
}

/// The longest SSH user name (Linux `useradd`'s limit).
pub const MAX_USER_LEN: usize = 32;

/// `Server.spec.ssh.user` (and the runner's `target.user`): a POSIX user
/// name.
pub fn user_rules() -> &'static StringRules {
    static RULES: std::sync::LazyLock<StringRules> = std::sync::LazyLock::new(|| {
        StringRules::new(
            MAX_USER_LEN,
            vec![Rule::must(
                "^[a-z_][a-z0-9_.-]*$",
                "must be a POSIX user name: a lower case letter or '_', then lower case letters, digits, '_', '.' or '-'",
            )],
        )
    });
    &RULES
}

/// The longest container name prefix (the role name follows it).
pub const MAX_CONTAINER_PREFIX_LEN: usize = 48;

/// `Server.spec.layout.containerPrefix` (and the runner's
/// `vars.container_prefix`): the start of a Docker container name.
pub fn container_prefix_rules() -> &'static StringRules {
    static RULES: std::sync::LazyLock<StringRules> = std::sync::LazyLock::new(|| {
        StringRules::new(
            MAX_CONTAINER_PREFIX_LEN,
            vec![Rule::must(
                "^[a-zA-Z0-9][a-zA-Z0-9_.-]*$",
                "must start a Docker container name: a letter or digit, then letters, digits, '_', '.' or '-'",
            )],
        )
    });
    &RULES
}

/// An object name as Kubernetes requires it of custom resources and Secrets
/// (a lower case RFC 1123 subdomain): what `clusterRef.name`, `images`
/// values and Secret references must be.
pub const OBJECT_NAME_PATTERN: &str =
    r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*$";

/// The longest object name.
pub const MAX_OBJECT_NAME_LEN: usize = 253;

/// Why `name` cannot name an object, or `None`.
pub fn object_name_error(name: &str) -> Option<String> {
    static RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        #[allow(clippy::expect_used)]
        regex::Regex::new(OBJECT_NAME_PATTERN).expect("the name pattern compiles")
    });
    if name.len() > MAX_OBJECT_NAME_LEN {
        return Some(format!("must be at most {MAX_OBJECT_NAME_LEN} characters"));
    }
    (!RE.is_match(name)).then(|| {
        "must be an object name: lower case letters, digits, '-' and '.', starting and ending with a letter or digit".to_string()
    })
}

/// The CRD schema of a field naming an object: a pattern (kube-apiserver
/// answers `should match '<pattern>'`), `minLength` 1 and `maxLength` 253.
pub fn object_name_schema() -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_OBJECT_NAME_LEN,
        "pattern": OBJECT_NAME_PATTERN,
    })
}
