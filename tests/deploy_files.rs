//! The deploy files start: the Kubernetes manifests validate offline and every
//! config they embed passes `gatehouse config check` against the files its pod
//! would mount; every systemd unit passes `systemd-analyze verify` and its
//! config's paths are the unit's. The checks themselves are
//! deploy/kubernetes/check.py and deploy/systemd/check.py (runnable by hand).

mod harness;

use std::process::Command;

use harness::{repo_path as repo, tools_python as python};

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

fn run_check(script: &str, args: &[String]) {
    let out = Command::new(python())
        .arg(repo(script))
        .args(["--gatehouse", BIN])
        .args(args)
        .output()
        .expect("run the checker");
    assert!(
        out.status.success(),
        "{script} found problems:\n{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn kubernetes_manifests_validate_and_their_configs_check() {
    run_check(
        "deploy/kubernetes/check.py",
        &[
            "--secrets".into(),
            repo("deploy/kubernetes/secrets.example.yaml"),
            repo("deploy/kubernetes/all-in-one.yaml"),
            repo("deploy/kubernetes/distributed.yaml"),
        ],
    );
}

#[test]
fn the_kubernetes_check_catches_a_duplicated_key_and_a_config_that_cannot_start() {
    // The checker must fail on the faults the manifests once had.
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(repo("deploy/kubernetes/all-in-one.yaml")).unwrap();
    let twice = good.replacen(
        "              readOnly: true\n",
        "              readOnly: true\n              readOnly: true\n",
        1,
    );
    let no_evidence = good.replace(
        "signing_key = \"/etc/gatehouse/keys/evidence-signing.pem\"\n",
        "",
    );
    let ephemeral = good.replace(
        "  volumeClaimTemplates:\n    - metadata:\n        name: state\n",
        "        - name: state\n          emptyDir: {}\n  volumeClaimTemplates:\n    - metadata:\n        name: unused\n",
    );
    for (name, text) in [
        ("twice", twice),
        ("no-evidence", no_evidence),
        ("emptydir", ephemeral),
    ] {
        assert_ne!(text, good, "{name}: the fault was not injected");
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        let out = Command::new(python())
            .arg(repo("deploy/kubernetes/check.py"))
            .args(["--gatehouse", BIN, "--secrets"])
            .arg(repo("deploy/kubernetes/secrets.example.yaml"))
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name}: the checker passed it");
    }
}

#[test]
fn systemd_units_verify_and_agree_with_their_configs() {
    let units = std::fs::read_dir(repo("deploy/systemd"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>();
    assert_eq!(units.len(), 4, "{units:?}");
    run_check("deploy/systemd/check.py", &units);
}

#[test]
fn config_check_names_the_line_of_an_unknown_key_and_the_role_requirements() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("g.toml");
    std::fs::write(
        &file,
        "[log]\nlevel = \"info\"\n\n[archiver]\ntopik = \"x\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("line 5") && err.contains("topik"), "{err}");
    // Parses, but an archiver could not start on it: no store, no key.
    std::fs::write(&file, "[nats]\nurl = \"nats://127.0.0.1:4222\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["config", "check", "--role", "archiver"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("signing_key"), "{err}");
    // A decider needs a policy that parses.
    std::fs::write(
        dir.path().join("p.toml"),
        "version = \"1\"\n[[rules]]\nid = \"x\"\nverdict = \"allow\"\nclasses = [\"red\"]\n",
    )
    .unwrap();
    std::fs::write(
        &file,
        format!(
            "[decider]\npolicy = \"{}\"\n",
            dir.path().join("p.toml").display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["config", "check", "--role", "decider"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .args(["config", "check", "--role", "decider", "--skip-files"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
