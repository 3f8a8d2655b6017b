//! The value rules shared by the CRD schemas, the admission checks and the
//! runner's request validation; they live in the `sm-runner-api` crate so the
//! runner's wire types can check requests without the operator.

pub use sm_runner_api::validation::*;

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
    fn hosts() {
        let long_label = "a".repeat(64);
        let max_label = "a".repeat(63);
        for ok in [
            "10.84.0.21",
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "localhost",
            "node-1",
            "Node-1.Lab.Example.COM",
            "1a",
            "a1.b2",
            "x.123a",
            "::1",
            "::",
            "fe80::1",
            "2001:db8:0:0:0:0:2:1",
            "2001:DB8::8:800:200C:417A",
            "::ffff:192.0.2.128",
            "1:2:3:4:5:6:1.2.3.4",
            "1::",
            &max_label,
            &format!("{max_label}.{max_label}"),
        ] {
            assert_eq!(host_error(ok), None, "{ok}");
        }
        for bad in [
            "",
            "127.0.0.300",
            "127.0..1",
            "127.0.0.1:2222",
            "-lab.example.com",
            "lab-.example.com",
            "lab.-x.com",
            &long_label,
            &format!("{long_label}.example.com"),
            "127.1",
            "010.0.0.1",
            "0x7f.0.0.1",
            "example.0x1f",
            "example.123",
            "123",
            "1.2.3.4.5",
            "lab_1.example.com",
            "lab.example.com.",
            ".lab",
            "a b",
            "[::1]",
            "fe80::1%eth0",
            "1:2:3:4:5:6:7:8:9",
            "1::2::3",
            "12345::",
            "::1.2.3",
            "-oProxyCommand=x",
            "lab.example.com:22",
            "http://lab",
            "ünïcode.example",
            "a\n",
        ] {
            assert!(host_error(bad).is_some(), "{bad:?}");
        }
        let too_long = vec!["abcdefghi"; 26].join(".");
        assert!(too_long.len() > MAX_HOST_LEN);
        assert!(host_error(&too_long).is_some());
    }

    #[test]
    fn urls() {
        for ok in [
            "http://127.0.0.1:8080/images/controller.tar",
            "https://images.example.com/contrail/controller-5.0.tar.gz",
            "https://images.example.com",
            "http://[::1]:8080/a.tar",
            "https://x.example/a.tar?token=abc&x=%20#frag",
            "http://localhost/a%2Fb.tar",
            "http://h:65535/",
        ] {
            assert_eq!(url_error(ok), None, "{ok}");
        }
        for bad in [
            "http://",
            "https://",
            "http:///a.tar",
            "http://exa mple.com/a.tar",
            "http://example.com/a b.tar",
            "http://example.com/a.tar ",
            "ftp://example.com/a.tar",
            "file:///etc/shadow",
            "/var/lib/images/a.tar",
            "example.com/a.tar",
            "HTTP//example.com",
            "http://user:secret@example.com/a.tar",
            "http://token@example.com/a.tar",
            "http://example.com:99999/a.tar",
            "http://example.com:0/a.tar",
            "http://example.com:/a.tar",
            "http://127.0.0.300/a.tar",
            "http://0x7f.1/a.tar",
            "http://::1/a.tar",
            "http://[::1/a.tar",
            "http://example.com/%zz",
            "http://example.com/\u{e9}.tar",
        ] {
            assert!(url_error(bad).is_some(), "{bad:?}");
        }
        assert!(url_error(&format!("http://a.example/{}", "a".repeat(MAX_URL_LEN))).is_some());
    }

    #[test]
    fn registry_addresses() {
        for ok in [
            "127.0.0.1:5000",
            "localhost:5000",
            "localhost",
            "registry.example.com",
            "registry.example.com:5000/contrail",
            "registry.example.com/a/b-c/d__e",
            "registry:5000",
            "[::1]:5000",
            "[fe80::1]",
            "10.84.0.1/lab",
        ] {
            assert_eq!(registry_address_error(ok), None, "{ok}");
        }
        for bad in [
            "",
            "127.0.0.1:99999",
            "127.0.0.1:0",
            "127.0.0.1:",
            "registry",
            "http://127.0.0.1:5000",
            "https://registry.example.com",
            "registry.example.com/Contrail",
            "registry.example.com/",
            "registry.example.com//a",
            "registry example.com",
            "127.0.0.300:5000",
            "::1:5000",
            "-r.example.com",
            "r.example.com:5000:6000",
            "user@r.example.com",
        ] {
            assert!(registry_address_error(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn object_names() {
        for ok in ["lab", "lab-ssh", "controller-5.0-214", "a", "0", "a.b-c"] {
            assert_eq!(object_name_error(ok), None, "{ok}");
        }
        for bad in [
            "",
            "Lab_Cluster",
            "Lab",
            "lab_1",
            "-lab",
            "lab-",
            "lab.",
            "a..b",
            "a b",
            "lab/x",
        ] {
            assert!(object_name_error(bad).is_some(), "{bad:?}");
        }
        assert!(object_name_error(&"a".repeat(254)).is_some());
    }

    #[test]
    fn users_and_container_prefixes() {
        for ok in ["root", "_ops", "ops.1-x", &"a".repeat(32)] {
            assert_eq!(user_rules().error(ok), None, "{ok}");
        }
        for bad in ["", "Root", "1ops", "-o", "a b", "ops;id", &"a".repeat(33)] {
            assert!(user_rules().error(bad).is_some(), "{bad:?}");
        }
        for ok in ["contrail-", "lab1_", "A.b-"] {
            assert_eq!(container_prefix_rules().error(ok), None, "{ok}");
        }
        for bad in ["", "-x", "_x", ".x", "a b", "a/b", &"a".repeat(49)] {
            assert!(container_prefix_rules().error(bad).is_some(), "{bad:?}");
        }
    }

    /// All CEL rules of `rules`, evaluated as the embedded API server does.
    fn cel_accepts(rules: &StringRules, value: &str) -> bool {
        let schema = rules.schema();
        let list = schema.as_value()["x-kubernetes-validations"]
            .as_array()
            .expect("rules")
            .clone();
        list.iter().all(|r| {
            crate::apiserver::schema::eval_rule(r["rule"].as_str().expect("rule"), &json!(value))
                .expect("the rule evaluates")
        })
    }

    #[test]
    fn the_cel_rules_say_what_the_rust_checks_say() {
        let samples = [
            "10.84.0.21",
            "127.0.0.300",
            "127.0..1",
            "127.0.0.1:2222",
            "::1",
            "::ffff:1.2.3.4",
            "lab.example.com",
            "x.123",
            "0x7f.1",
            "http://",
            "http://127.0.0.1:8080/a.tar",
            "http://user:pw@h.example/a",
            "http://h.example/it's.tar",
            "http://h.example/a b",
            "http://127.0.0.300/",
            "https://[::1]:99999/",
            "127.0.0.1:5000",
            "127.0.0.1:99999",
            "registry",
            "http://r.example",
            "r.example.com:5000/contrail",
            "root",
            "contrail-",
            "",
            "a\\b",
        ];
        let all = [
            host_rules(),
            url_rules(),
            registry_address_rules(),
            user_rules(),
            container_prefix_rules(),
        ];
        for rules in all {
            for value in samples {
                assert_eq!(
                    cel_accepts(rules, value),
                    rules.error(value).is_none(),
                    "{value:?}: {:?}",
                    rules.error(value)
                );
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Strings of the characters addresses are written with: the host
        /// rule accepts one with a `:` exactly when Rust's own parser reads it
        /// as an IPv6 address, and one of digits and dots exactly when it is
        /// an IPv4 address.
        #[test]
        fn the_host_rule_agrees_with_the_address_parsers(
            s in "[0-9a-fA-F:.]{0,41}",
            d in "[0-9.]{0,17}",
            groups in proptest::collection::vec("[0-9a-f]{0,5}|[0-9]{1,3}(\\.[0-9]{1,3}){3}", 1..10),
        ) {
            // Pieces joined by ':' (an empty piece makes a '::'): near-valid
            // addresses of every shape, valid ones among them.
            let joined = groups.join(":");
            for v6 in [s.as_str(), joined.as_str()] {
                if v6.contains(':') {
                    proptest::prop_assert_eq!(host_error(v6).is_none(), v6.parse::<std::net::Ipv6Addr>().is_ok(), "{:?}", v6);
                }
            }
            proptest::prop_assert_eq!(host_error(&d).is_none(), d.parse::<std::net::Ipv4Addr>().is_ok(), "{:?}", d);
        }

        /// Every address Rust writes (compressed, full, IPv4-mapped) is accepted.
        #[test]
        fn written_addresses_are_accepted(bits: u128, v4: u32) {
            let v6 = std::net::Ipv6Addr::from(bits);
            proptest::prop_assert_eq!(host_error(&v6.to_string()), None);
            let full: Vec<String> = v6.segments().iter().map(|s| format!("{s:x}")).collect();
            proptest::prop_assert_eq!(host_error(&full.join(":")), None);
            let v4 = std::net::Ipv4Addr::from(v4);
            proptest::prop_assert_eq!(host_error(&v4.to_string()), None);
            proptest::prop_assert_eq!(host_error(&v4.to_ipv6_mapped().to_string()), None);
            proptest::prop_assert_eq!(host_error(&format!("::ffff:{v4}")), None);
        }

        /// The CEL rules and the Rust checks agree on arbitrary strings.
        #[test]
        fn cel_and_rust_agree(s in "[a-z0-9.:/@\\[\\]%_ -]{0,30}") {
            for rules in [host_rules(), url_rules(), registry_address_rules()] {
                proptest::prop_assert_eq!(cel_accepts(rules, &s), rules.error(&s).is_none(), "{:?}", s);
            }
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
