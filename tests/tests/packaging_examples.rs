//! The example configurations under `packaging/examples/` are what the
//! packages ship: they must load as they are, and every key of the
//! configuration must be documented in them (commented out at its default).

use std::path::{Path, PathBuf};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging/examples")
        .join(name)
}

/// The example with every `# key = value` line turned into `key = value`,
/// written to a temporary file.
fn uncommented(name: &str) -> (tempfile::TempDir, PathBuf) {
    let text = std::fs::read_to_string(example(name)).expect("read example");
    let mut out = String::new();
    for line in text.lines() {
        let line = match line.strip_prefix("# ") {
            Some(rest) if is_assignment(rest) => rest,
            _ => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, out).expect("write uncommented example");
    (dir, path)
}

fn is_assignment(s: &str) -> bool {
    s.split_once(" = ").is_some_and(|(key, _)| {
        !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    })
}

#[test]
fn assignment_detection() {
    assert!(is_assignment("data_dir = \"/x\""));
    assert!(!is_assignment("  runuser -u oneinfra -- oi-coordinator"));
    assert!(!is_assignment("Store (state.db) = x"));
}

#[test]
fn agent_example_loads_and_documents_every_key() {
    let raw = oi_agent::config::RawConfig::load(&example("agent.toml")).unwrap();
    let shipped = raw.validate().expect("agent.toml as shipped is valid");

    let (_dir, path) = uncommented("agent.toml");
    let raw = oi_agent::config::RawConfig::load(&path)
        .expect("every commented key of agent.toml is a real key");
    let shown = format!("{raw:?}");
    assert!(
        !shown.contains("None"),
        "a key of the agent configuration is not documented in agent.toml: {shown}"
    );
    let config = raw.validate().expect("the documented values are valid");
    // the commented values are the defaults (capacity is the machine's own)
    assert_eq!(config.server_name, shipped.server_name);
    assert_eq!(config.ca_path, shipped.ca_path);
    assert_eq!(config.key_path, shipped.key_path);
    assert_eq!(config.state_dir, shipped.state_dir);
    assert_eq!(config.cri_socket, shipped.cri_socket);
    assert_eq!(config.resync, shipped.resync);
}

#[test]
fn coordinator_example_loads_and_documents_every_key() {
    let raw = oi_coordinator::config::RawConfig::load(&example("coordinator.toml")).unwrap();
    raw.validate()
        .expect("coordinator.toml as shipped is valid");

    let (_dir, path) = uncommented("coordinator.toml");
    let raw = oi_coordinator::config::RawConfig::load(&path)
        .expect("every commented key of coordinator.toml is a real key");
    let shown = format!("{raw:?}");
    assert!(
        !shown.contains("None") && !shown.contains("server_names: []"),
        "a key of the coordinator configuration is not documented in coordinator.toml: {shown}"
    );
    let config = raw.validate().expect("the documented values are valid");
    let defaults = oi_coordinator::config::RawConfig::default()
        .validate()
        .unwrap();
    // the commented values are the defaults
    assert_eq!(config.data_dir, defaults.data_dir);
    assert_eq!(config.listen, defaults.listen);
    assert_eq!(config.metrics_listen, defaults.metrics_listen);
    assert_eq!(config.server_names, defaults.server_names);
    assert_eq!(config.heartbeat_interval, defaults.heartbeat_interval);
}
