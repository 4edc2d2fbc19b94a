//! Releasing components held from an earlier epoch: the explicit operator
//! action that decides what a coordinator started on another store (an
//! empty or an older one) may remove. `oi-agent release-held` records a
//! request next to the persisted placement; the agent applies it when it
//! starts, before it supervises anything, so a release is one restart of
//! the agent (which restarts no container) and never a side effect.
//!
//! A released component is removed like any unplaced one: its pod stops
//! and its directory is moved aside (`retired/`), not deleted.

use anyhow::{Context, Result};
use oi_proto::model::Placement;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What the operator asked to release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Release {
    All,
    Ids(Vec<String>),
}

pub fn request_path(state_path: &Path) -> PathBuf {
    state_path.with_file_name("release-held.json")
}

/// Records a release request (replacing an earlier, unapplied one).
pub fn request(state_path: &Path, release: &Release) -> Result<()> {
    let bytes = serde_json::to_vec(release).context("encode release request")?;
    oi_proto::fsutil::write_atomic(&request_path(state_path), &bytes, 0o600)
}

/// Applies a pending request to the persisted placement: persists the
/// placement without the released components, then drops the request.
/// Returns the placement to run and the ids released.
pub fn apply_pending(
    state_path: &Path,
    held: Option<Placement>,
) -> Result<(Option<Placement>, Vec<String>)> {
    let path = request_path(state_path);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((held, vec![])),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let release: Release = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "parse {}: remove it, then run `oi-agent release-held` again",
            path.display()
        )
    })?;
    let Some(p) = held else {
        std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
        return Ok((None, vec![]));
    };
    let ids: Vec<String> = match release {
        Release::All => p.held.keys().cloned().collect(),
        Release::Ids(ids) => ids.into_iter().filter(|i| p.held.contains_key(i)).collect(),
    };
    let next = p.succeed(p.clone(), &ids);
    if next != p {
        crate::state_file::save(state_path, &next)?;
    }
    std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
    Ok((Some(next), ids))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oi_proto::model::Component;

    #[test]
    fn a_request_releases_only_held_components_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("placement.json");
        let mut p = Placement::new("e2", 1);
        p.components.insert(
            "placed".into(),
            Component {
                id: "placed".into(),
                ..Default::default()
            },
        );
        for id in ["x/etcd-0", "y/etcd-0"] {
            p.held.insert(
                id.into(),
                Component {
                    id: id.into(),
                    ..Default::default()
                },
            );
        }
        crate::state_file::save(&state, &p).unwrap();
        // No request: unchanged.
        let (got, ids) = apply_pending(&state, Some(p.clone())).unwrap();
        assert_eq!(got.as_ref(), Some(&p));
        assert!(ids.is_empty());

        request(
            &state,
            &Release::Ids(vec!["x/etcd-0".into(), "placed".into()]),
        )
        .unwrap();
        let (got, ids) = apply_pending(&state, Some(p.clone())).unwrap();
        assert_eq!(ids, ["x/etcd-0"], "only held ids are released");
        let got = got.unwrap();
        assert_eq!(got.held.keys().collect::<Vec<_>>(), ["y/etcd-0"]);
        assert!(got.components.contains_key("placed"));
        assert_eq!(crate::state_file::load(&state).unwrap(), Some(got.clone()));
        assert!(!request_path(&state).exists(), "the request is used once");

        request(&state, &Release::All).unwrap();
        let (got, ids) = apply_pending(&state, Some(got)).unwrap();
        assert_eq!(ids, ["y/etcd-0"]);
        assert!(got.unwrap().held.is_empty());
    }
}
