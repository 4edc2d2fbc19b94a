//! The `oi` binary as scripts see it: process exit codes and one-line
//! errors on stderr. (The commands themselves are tested in-process in
//! `tests/tests/api_cli.rs`.)

use oi_coordinator::api::write_admin_config;
use oi_coordinator::link_pki::LinkCa;
use std::process::{Command, Output};

fn oi(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oi"))
        .args(args)
        .env_remove("OI_CONFIG")
        .output()
        .expect("run oi")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_and_usage_errors() {
    let help = oi(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("Exit codes:") && text.contains("8  not authorized"),
        "{text}"
    );

    let bad = oi(&["cluster", "frobnicate"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
}

#[test]
fn failures_exit_with_their_code_and_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.conf");
    let out = oi(&["--config", missing.to_str().unwrap(), "cluster", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: ") && err.lines().count() == 1,
        "{err}"
    );
    assert!(err.contains("missing.conf"), "{err}");

    // Valid credentials, but nothing listens on port 1: unreachable (6).
    let ca = LinkCa::generate().unwrap();
    let conf = dir.path().join("admin.conf");
    let admin = ca.issue_admin("admin").unwrap();
    write_admin_config(
        &conf,
        "https://127.0.0.1:1",
        "localhost",
        ca.cert_pem(),
        &admin,
    )
    .unwrap();
    let out = oi(&["--config", conf.to_str().unwrap(), "cluster", "get", "x"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: cannot reach the coordinator"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
