//! Where sled's files are in the store directory. A store starts with them in the directory
//! itself; its first compaction writes a fresh database into a *generation* directory
//! (`sled.1`, then `sled.2`, …) and names it in the file `CURRENT` (written aside, synced and
//! renamed into place: the moment a compaction takes effect). Everything else in the
//! directory — the admin socket, the durable mark, the damage record — stays where it is.
//!
//! A generation that `CURRENT` does not name (a compaction cut off before it took effect, or
//! one replaced) and, once there is a `CURRENT`, sled's files from before the first
//! compaction are unused, and removed.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

const CURRENT: &str = "CURRENT";
const GENERATION: &str = "sled.";
/// sled's own files, where a store keeps them before its first compaction.
const SLED_FILES: [&str; 3] = ["conf", "db", "blobs"];

/// The generation `CURRENT` names, if any.
fn current(path: &Path) -> std::io::Result<Option<String>> {
    match fs::read_to_string(path.join(CURRENT)) {
        Ok(name) => {
            let name = name.trim();
            let valid = name
                .strip_prefix(GENERATION)
                .is_some_and(|n| n.parse::<u64>().is_ok());
            if !valid {
                return Err(std::io::Error::other(format!(
                    "{} names no generation of the store: {name:?}",
                    path.join(CURRENT).display()
                )));
            }
            Ok(Some(name.to_owned()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The directory holding sled's files. A generation `CURRENT` names that is not there is an
/// error (sled would open an empty store in its place).
pub(crate) fn sled_dir(path: &Path) -> std::io::Result<PathBuf> {
    Ok(match current(path)? {
        Some(name) if path.join(&name).join("db").is_file() => path.join(name),
        Some(name) => {
            return Err(std::io::Error::other(format!(
                "{} names {name}, which holds no data file: the store's database is missing",
                path.join(CURRENT).display()
            )))
        }
        None => path.to_owned(),
    })
}

/// The generation a compaction writes next: its name and directory.
pub(crate) fn next_generation(path: &Path) -> std::io::Result<(String, PathBuf)> {
    let number = current(path)?
        .and_then(|name| name[GENERATION.len()..].parse::<u64>().ok())
        .unwrap_or(0);
    let name = format!("{GENERATION}{}", number + 1);
    let dir = path.join(&name);
    Ok((name, dir))
}

/// Makes `generation` (complete and synced) the store's database: the moment a compaction
/// takes effect, for this process and whoever opens the store next.
pub(crate) fn set_current(path: &Path, generation: &str) -> std::io::Result<()> {
    let aside = path.join(format!("{CURRENT}.new"));
    let mut file = fs::File::create(&aside)?;
    file.write_all(format!("{generation}\n").as_bytes())?;
    file.sync_all()?;
    fs::rename(&aside, path.join(CURRENT))?;
    fs::File::open(path)?.sync_all()
}

/// The entries of the store directory that hold no part of the store in use.
pub(crate) fn unused(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    // Nothing is unused while what is in use is in doubt.
    sled_dir(path)?;
    let Some(current) = current(path)? else {
        // Before the first compaction: a generation can only be one cut off.
        return generations(path, None);
    };
    let mut unused = generations(path, Some(&current))?;
    for entry in fs::read_dir(path)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if SLED_FILES.contains(&name.as_ref()) || name.starts_with("snap.") {
            unused.push(path.join(name.as_ref()));
        }
    }
    Ok(unused)
}

fn generations(path: &Path, except: Option<&str>) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(path)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(GENERATION) && Some(name.as_ref()) != except {
            found.push(path.join(name.as_ref()));
        }
    }
    Ok(found)
}

/// Removes what [`unused`] lists.
pub(crate) fn remove_unused(path: &Path) -> std::io::Result<usize> {
    let unused = unused(path)?;
    for entry in &unused {
        match entry.is_dir() {
            true => fs::remove_dir_all(entry)?,
            false => fs::remove_file(entry)?,
        }
    }
    Ok(unused.len())
}
