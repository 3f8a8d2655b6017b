//! No field reaches outside its place: `Server.spec.layout` paths that would
//! give the host away (`/`, `/etc`, `..`, Docker volume syntax) are refused at
//! admission, naming the field, and by the playbook runner itself; Image
//! tarball paths outside the operator's image directory (absolute elsewhere,
//! through a symbolic link, relative, with `..`) are refused at admission when
//! the path alone says so and by the operator otherwise, before a byte is read:
//! the Image is Stalled with a message saying where images must be, and the
//! registry receives nothing. Real components: standalone driven by kubectl,
//! Debian's docker-registry, the in-process playbook runner over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use support::lab::{Standalone, condition, registry_writes};
use support::registry::TestRegistry;

fn server(name: &str, layout: Value) -> Value {
    json!({
        "apiVersion": "servermanager.contrail.io/v1alpha1", "kind": "Server",
        "metadata": {"name": name},
        "spec": {"clusterRef": {"name": "lab"}, "host": "127.0.0.1", "roles": ["agent"],
                 "ssh": {"secretRef": {"name": "lab-ssh"}}, "layout": layout}
    })
}

fn image(name: &str, path: &str) -> Value {
    json!({
        "apiVersion": "servermanager.contrail.io/v1alpha1", "kind": "Image",
        "metadata": {"name": name},
        "spec": {"imageId": "confined", "imageType": "agent", "version": name,
                 "source": {"path": path}}
    })
}

/// `kubectl apply` of one object; (accepted, stderr).
fn apply(s: &Standalone, dir: &std::path::Path, obj: &Value) -> (bool, String) {
    let path = dir.join("obj.yaml");
    std::fs::write(&path, serde_yaml::to_string(obj).unwrap()).unwrap();
    let (ok, _, err) = s.kubectl_try(&["apply", "-f", path.to_str().unwrap()]);
    (ok, err)
}

#[test]
fn layout_and_image_paths_stay_in_their_place() {
    let work = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let data = work.path().join("data");
    let images = work.path().join("images");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&images).unwrap();
    let runner_port = support::free_port();
    let s = Standalone::start(
        &data,
        &[
            "--registry".into(),
            registry.addr.clone(),
            "--runner-listen".into(),
            format!("127.0.0.1:{runner_port}"),
            "--image-dir".into(),
            images.display().to_string(),
        ],
    );

    // Layout: each refused at admission, naming the field.
    let cases = [
        ("configDir", "/"),
        ("configDir", "/etc"),
        ("configDir", "//"),
        ("configDir", "/etc/"),
        ("logDir", "/var/log"),
        ("logDir", "/"),
        ("logDir", "/var/log/contrail/../../../etc"),
        ("logDir", "/proc/self"),
        ("dataDir", "/var/lib/contrail:/etc"),
        ("dataDir", "/data,readonly"),
        ("dataDir", "/root"),
        ("dataDir", "/home/ops/.ssh"),
        ("configDir", "etc/contrail"),
    ];
    for (field, value) in cases {
        let (ok, err) = apply(
            &s,
            work.path(),
            &server("bad-layout", json!({ field: value })),
        );
        assert!(!ok, "layout.{field}={value:?} was admitted");
        assert!(
            err.contains(&format!("spec.layout.{field}")),
            "layout.{field}={value:?}: the error names no field: {err}"
        );
    }
    // A dedicated directory below a system one is fine.
    let (ok, err) = apply(
        &s,
        work.path(),
        &server(
            "good-layout",
            json!({"configDir": "/etc/contrail-lab", "logDir": "/var/log/contrail-lab",
                   "dataDir": "/var/lib/contrail-lab"}),
        ),
    );
    assert!(ok, "{err}");

    // The runner refuses the same paths on its own (a client that skipped
    // admission), naming the field, before any SSH.
    let token = std::fs::read_to_string(data.join("runner-token")).unwrap();
    for dir in ["/", "/etc", "/var/log/../../etc", "/x:/etc:rw"] {
        let body = json!({
            "target": {"host": "127.0.0.1", "private_key": "k", "known_hosts": "127.0.0.1 ssh-ed25519 AAAA"},
            "log_dir": dir,
        });
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "-X", "POST"])
            .arg(format!("http://127.0.0.1:{runner_port}/host_logs/list"))
            .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
            .args(["-H", "Content-Type: application/json", "-d"])
            .arg(body.to_string())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.ends_with("\n400"), "log_dir {dir}: {text}");
        assert!(text.contains("log_dir"), "log_dir {dir}: {text}");
    }

    // Image paths the path alone condemns: refused at admission.
    for path in [
        "../../../../etc/shadow",
        "images/a.tar",
        "/srv/images/../../etc/shadow",
        "/srv/images/./a.tar",
    ] {
        let (ok, err) = apply(&s, work.path(), &image("bad-syntax", path));
        assert!(!ok, "source.path {path:?} was admitted");
        assert!(err.contains("spec.source.path"), "{path}: {err}");
    }

    // Paths that need the filesystem to judge: Stalled by the operator.
    let secret = work.path().join("not-an-image");
    std::fs::write(&secret, "a file the operator must not push").unwrap();
    std::os::unix::fs::symlink(&secret, images.join("link.tar")).unwrap();
    let outside = [
        ("outside", secret.display().to_string()),
        ("shadow", "/etc/shadow".to_string()),
        ("symlink", images.join("link.tar").display().to_string()),
    ];
    for (name, path) in &outside {
        let (ok, err) = apply(&s, work.path(), &image(name, path));
        assert!(ok, "{name}: {err}");
    }
    for (name, path) in &outside {
        s.wait_until(
            &format!("Image {name} Stalled"),
            Duration::from_secs(60),
            |s| {
                s.get("image", name)
                    .and_then(|v| condition(&v, "Stalled"))
                    .is_some_and(|c| c["status"] == "True")
            },
        );
        let v = s.get("image", name).unwrap();
        let stalled = condition(&v, "Stalled").unwrap();
        let message = stalled["message"].as_str().unwrap();
        assert!(
            message.contains(&images.display().to_string()),
            "{name} ({path}): the message does not say where images must be: {message}"
        );
        assert!(
            message.contains("outside the image directory"),
            "{name}: {message}"
        );
        assert!(v["status"]["digest"].is_null(), "{v}");
    }
    assert_eq!(
        registry_writes(&registry),
        0,
        "the registry received a write"
    );
}
