//! The last placement the agent received, on local disk (JSON, 0600: it
//! holds key material). Written atomically, so a crash leaves the old or
//! the new placement, never a torn one.

use anyhow::{Context, Result};
use oi_proto::model::Placement;
use std::path::Path;

/// The persisted placement, or `None` if the agent never received one.
pub fn load(path: &Path) -> Result<Option<Placement>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let placement = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "parse {}: move it away to start without a persisted placement \
             (the coordinator sends the current one on connect)",
            path.display()
        )
    })?;
    Ok(Some(placement))
}

pub fn save(path: &Path, placement: &Placement) -> Result<()> {
    let bytes = serde_json::to_vec(placement).context("encode placement")?;
    oi_proto::fsutil::write_atomic(path, &bytes, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_absent() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state/placement.json");
        assert!(load(&p).unwrap().is_none());
        let placement = Placement::new("e", 4);
        save(&p, &placement).unwrap();
        assert_eq!(load(&p).unwrap(), Some(placement));
        std::fs::write(&p, b"{not json").unwrap();
        assert!(format!("{:#}", load(&p).unwrap_err()).contains("move it away"));
    }
}
