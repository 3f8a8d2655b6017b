//! The `Image` resource: a container image to ingest into the registry as
//! `<imageId>-<imageType>:<version>`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, Role, condition::conditions_schema};

/// A container image (or package) to ingest into the registry.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "servermanager.contrail.io",
    version = "v1alpha1",
    kind = "Image",
    doc = "A container image to push to the registry as <imageId>-<imageType>:<version>.",
    plural = "images",
    singular = "image",
    shortname = "smimage",
    shortname = "ctim",
    category = "contrail",
    namespaced,
    status = "ImageStatus",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.imageType"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.version"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reference","type":"string","priority":1,"jsonPath":".status.reference"}"#,
    printcolumn = r#"{"name":"Digest","type":"string","priority":1,"jsonPath":".status.digest"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// `container` images are pushed to the registry; `package` images are
    /// recorded only, so mixed clusters can be described.
    #[serde(default)]
    pub category: ImageCategory,
    /// Image identifier, the first part of the repository name
    /// (`contrail-container`): lower case letters, digits and separators.
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*$")
    )]
    pub image_id: String,
    /// The role this image runs; the repository is `<imageId>-<imageType>`.
    pub image_type: Role,
    /// Version, used as the tag (`5.0-214`): letters, digits, `_`, `.`, `-`, not
    /// starting with `.` or `-`, at most 128 characters.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"))]
    pub version: String,
    /// Where the image comes from.
    pub source: ImageSource,
    /// Delete the tag from the registry when this Image is deleted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove_from_registry_on_delete: bool,
}

/// Kind of image.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ImageCategory {
    /// A container image, pushed to the registry.
    #[default]
    Container,
    /// A package (not containerized); recorded, never pushed.
    Package,
}

/// Source of an image: exactly one of `path`, `url` or `reference`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "[has(self.path), has(self.url), has(self.reference)].exists_one(x, x)",
    "message": "exactly one of path, url or reference must be set"
}]))]
pub struct ImageSource {
    /// Absolute path of a `docker save` or OCI-layout tarball (plain or gzip)
    /// inside the operator's image directory (`--image-dir`; in the Helm chart
    /// `/var/lib/server-manager/images`, where `operator.imageVolume` is
    /// mounted; in standalone `DATA_DIR/images`). A path leading outside it,
    /// symbolic links included, is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "source_path_schema")]
    pub path: Option<String>,
    /// HTTP(S) URL of such a tarball; it is streamed, never downloaded whole.
    /// `http://` or `https://`, a host, an optional port, a path; no user name
    /// or password, no white space (percent-encode it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "source_url_schema")]
    pub url: Option<String>,
    /// An existing image to copy from another registry:
    /// `host[:port]/repository[:tag][@sha256:digest]` (tag `latest` when
    /// neither is given; an index copies its linux/amd64 image). The host is
    /// explicit: a name with a dot, `localhost`, `[IPv6]` or a name with a port.
    /// Blobs are streamed from registry to registry, never stored here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "source_reference_schema")]
    pub reference: Option<String>,
    /// For `reference`: the source registry speaks plain HTTP.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// For `reference`: Secret of the Image's namespace (type
    /// `kubernetes.io/basic-auth`: `username`, `password`) with the source
    /// registry's credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<super::LocalObjectReference>,
}

fn source_reference_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "nullable": true,
        "minLength": 1,
        "maxLength": crate::registry::SOURCE_REFERENCE_MAX,
        "pattern": crate::registry::SOURCE_REFERENCE_PATTERN,
    })
}

fn source_url_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = crate::validation::url_rules().schema();
    schema.insert("nullable".into(), serde_json::Value::Bool(true));
    schema
}

fn source_path_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = crate::validation::image_path_schema();
    schema.insert("nullable".into(), serde_json::Value::Bool(true));
    schema
}

/// Observed state of an Image.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ImageStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Pushed` and `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Full reference in the registry (`registry/repo:tag`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Manifest digest as reported by the registry (`sha256:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Total size of the image's blobs in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Bytes uploaded by the last push (0 when every blob was already there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_pushed: Option<u64>,
}
