//! The JSON list files a serving process keeps in `admin.state_dir` (overrides, drill
//! results). Loading never stops a server: a file that is not a valid list is moved aside and
//! reported, and a directory that cannot be created leaves the store without persistence
//! (writes are then refused with the reason), so a DNS server starts and serves whatever its
//! local state looks like.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// What loading found.
pub struct Loaded<T> {
    pub items: Vec<T>,
    /// What went wrong, for logs, status and metrics.
    pub problem: Option<String>,
    /// False when the directory could not be created: nothing can be kept.
    pub writable: bool,
}

/// Loads `<dir>/<name>` (a JSON list), creating `dir` if needed. `what` names the content in
/// messages ("overrides").
pub fn load<T: DeserializeOwned>(dir: &Path, name: &str, what: &str) -> Loaded<T> {
    if let Err(error) = std::fs::create_dir_all(dir) {
        let problem = format!(
            "cannot create the state directory {} (admin.state_dir): {error}; {what} cannot be kept until it is writable",
            dir.display()
        );
        tracing::error!("{problem}");
        return Loaded {
            items: Vec::new(),
            problem: Some(problem),
            writable: false,
        };
    }
    let file = dir.join(name);
    let bytes = match std::fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Loaded {
                items: Vec::new(),
                problem: None,
                writable: true,
            };
        }
        Err(error) => {
            let problem = format!(
                "cannot read {}: {error}; starting with no {what}",
                file.display()
            );
            tracing::error!("{problem}");
            return Loaded {
                items: Vec::new(),
                problem: Some(problem),
                writable: true,
            };
        }
    };
    match serde_json::from_slice::<Vec<T>>(&bytes) {
        Ok(items) => Loaded {
            items,
            problem: None,
            writable: true,
        },
        Err(error) => {
            let aside = aside_name(&file);
            let moved = std::fs::rename(&file, &aside);
            let problem = match moved {
                Ok(()) => format!(
                    "{} is not a valid {what} file ({error}); moved aside to {}; starting with no {what}",
                    file.display(),
                    aside.display()
                ),
                Err(rename) => format!(
                    "{} is not a valid {what} file ({error}) and cannot be moved aside ({rename}); starting with no {what}",
                    file.display()
                ),
            };
            tracing::error!("{problem}");
            Loaded {
                items: Vec::new(),
                problem: Some(problem),
                writable: true,
            }
        }
    }
}

fn aside_name(file: &Path) -> PathBuf {
    let stamp = crate::clock::unix_ms();
    let mut name = file.as_os_str().to_owned();
    name.push(format!(".corrupt-{stamp}"));
    PathBuf::from(name)
}

/// Whether a server could keep its state in `dir`: it exists and a file can be created in it,
/// or it can be created (its nearest existing ancestor is writable). Nothing is left behind.
pub fn check_writable(dir: &Path) -> Result<(), String> {
    let mut existing = dir;
    while !existing.exists() {
        existing = match existing.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        if existing == Path::new(".") {
            break;
        }
    }
    let probe = existing.join(format!(".vantage-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|error| {
            format!(
                "{} (admin.state_dir) is not writable ({}: {error}); overrides and drill results could not be kept",
                dir.display(),
                existing.display()
            )
        })
}

/// Appends one line to `file` with a single write (O_APPEND), so that lines written at the
/// same time never interleave.
pub fn append_line(file: &Path, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?
        .write_all(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_files_are_moved_aside_and_missing_ones_are_empty() {
        let dir = tempfile::tempdir().expect("dir");
        let loaded: Loaded<u32> = load(dir.path(), "list.json", "numbers");
        assert!(loaded.items.is_empty() && loaded.problem.is_none() && loaded.writable);
        std::fs::write(dir.path().join("list.json"), "[1, 2").expect("write");
        let loaded: Loaded<u32> = load(dir.path(), "list.json", "numbers");
        assert!(loaded.items.is_empty() && loaded.writable);
        assert!(loaded.problem.expect("problem").contains("moved aside"));
        assert!(!dir.path().join("list.json").exists());
        let aside = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("list.json.corrupt-")
            });
        assert!(aside, "the bad file is kept aside");
        std::fs::write(dir.path().join("list.json"), "").expect("empty");
        assert!(
            load::<u32>(dir.path(), "list.json", "numbers")
                .problem
                .is_some()
        );
        std::fs::write(dir.path().join("list.json"), "[3]").expect("good");
        assert_eq!(
            load::<u32>(dir.path(), "list.json", "numbers").items,
            vec![3]
        );
    }

    #[test]
    fn writability_is_checked_without_leaving_anything() {
        let dir = tempfile::tempdir().expect("dir");
        assert!(check_writable(&dir.path().join("a/b")).is_ok());
        assert!(!dir.path().join("a").exists(), "nothing created");
        std::fs::write(dir.path().join("file"), "x").expect("write");
        assert!(check_writable(&dir.path().join("file/state")).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
    }

    #[test]
    fn a_directory_that_cannot_be_created_leaves_the_store_unwritable() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").expect("write");
        let loaded: Loaded<u32> = load(&file.join("state"), "list.json", "numbers");
        assert!(!loaded.writable);
        assert!(loaded.problem.expect("problem").contains("admin.state_dir"));
    }
}
