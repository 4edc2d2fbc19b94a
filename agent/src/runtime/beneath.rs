//! Writing a component's files without leaving its directory. Component
//! directories are mounted into containers, some of them writable (etcd's
//! data), so what runs there can plant symlinks; the agent runs as root.
//! Every path is walked one name at a time from an open directory with
//! `O_NOFOLLOW`, so no symlink is ever followed (the effect of `openat2`'s
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, on any kernel), and temporary
//! files are created with `O_EXCL` under random names.

use anyhow::{bail, Context, Result};
use rustix::fs::{Mode, OFlags};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Component, Path};

/// The names of `rel`, refusing anything but plain names (no `..`, no
/// root, no `.`).
fn names(rel: &Path) -> Result<Vec<&std::ffi::OsStr>> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n),
            _ => bail!("{} is not a plain relative path", rel.display()),
        }
    }
    Ok(out)
}

fn open_dir(parent: &OwnedFd, name: &std::ffi::OsStr, shown: &Path) -> Result<OwnedFd> {
    rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| {
        format!(
            "open directory {} (a symlink there is refused)",
            shown.display()
        )
    })
}

/// Opens `root` (which the agent owns) and then each directory of `rel`
/// beneath it, creating missing ones with mode 0700.
pub fn dir_beneath(root: &Path, rel: &Path) -> Result<OwnedFd> {
    let mut fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("open directory {}", root.display()))?;
    let mut shown = root.to_path_buf();
    for name in names(rel)? {
        shown.push(name);
        match rustix::fs::mkdirat(&fd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e).with_context(|| format!("create {}", shown.display())),
        }
        fd = open_dir(&fd, name, &shown)?;
    }
    Ok(fd)
}

/// Writes `content` to `rel` beneath `root` atomically: a new temporary
/// file (O_EXCL, random name) in the same directory, fsync, rename over the
/// name, fsync the directory. Neither the directories nor the file are
/// reached through a symlink.
pub fn write_beneath(root: &Path, rel: &Path, content: &[u8], mode: u32) -> Result<()> {
    let name = rel
        .file_name()
        .with_context(|| format!("{} has no file name", rel.display()))?;
    let parent = rel.parent().unwrap_or(Path::new(""));
    let dir = dir_beneath(root, parent)?;
    let shown = root.join(rel);
    let (tmp, file) = (0..16)
        .find_map(|_| {
            let tmp = format!(
                ".{}.tmp-{:016x}",
                name.to_string_lossy(),
                rand::random::<u64>()
            );
            match rustix::fs::openat(
                &dir,
                tmp.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(mode),
            ) {
                Ok(fd) => Some(Ok((tmp, fd))),
                Err(rustix::io::Errno::EXIST) => None,
                Err(e) => Some(Err(e)),
            }
        })
        .unwrap_or(Err(rustix::io::Errno::EXIST))
        .with_context(|| format!("create a temporary file for {}", shown.display()))?;
    let result = (|| {
        // The umask may have narrowed the mode given to open().
        rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
            .with_context(|| format!("chmod {}", shown.display()))?;
        let mut f = std::fs::File::from(file);
        f.write_all(content)
            .with_context(|| format!("write {}", shown.display()))?;
        f.sync_all()
            .with_context(|| format!("fsync {}", shown.display()))?;
        rustix::fs::renameat(&dir, tmp.as_str(), &dir, name)
            .with_context(|| format!("rename into {}", shown.display()))?;
        rustix::fs::fsync(&dir).with_context(|| format!("fsync directory of {}", shown.display()))
    })();
    if result.is_err() {
        let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), rustix::fs::AtFlags::empty());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_beneath_and_refuses_symlinks_and_escapes() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        write_beneath(root.path(), Path::new("a/b/c.conf"), b"one", 0o640).unwrap();
        let written = root.path().join("a/b/c.conf");
        assert_eq!(std::fs::read(&written).unwrap(), b"one");
        assert_eq!(
            std::fs::metadata(&written).unwrap().permissions().mode() & 0o777,
            0o640
        );
        write_beneath(root.path(), Path::new("a/b/c.conf"), b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&written).unwrap(), b"two");

        // A directory replaced by a symlink (as a container could) is not
        // followed: nothing is written outside.
        std::os::unix::fs::symlink(outside.path(), root.path().join("evil")).unwrap();
        let err = write_beneath(root.path(), Path::new("evil/x"), b"x", 0o600).unwrap_err();
        assert!(format!("{err:#}").contains("symlink"), "{err:#}");
        assert!(!outside.path().join("x").exists());
        // A file replaced by a symlink is replaced, not written through.
        let target = outside.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, root.path().join("a/link")).unwrap();
        write_beneath(root.path(), Path::new("a/link"), b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert!(!std::fs::symlink_metadata(root.path().join("a/link"))
            .unwrap()
            .file_type()
            .is_symlink());
        // Escapes are refused before anything is touched.
        for bad in ["../x", "/etc/x", "a/../../x", "./x"] {
            assert!(
                write_beneath(root.path(), Path::new(bad), b"x", 0o600).is_err(),
                "{bad}"
            );
        }
        // No temporary file is left behind.
        let left: Vec<_> = std::fs::read_dir(root.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("c.conf")]);
    }
}
