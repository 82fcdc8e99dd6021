//! The manifests the tests run against are read in place from `../shared/fixtures/` beside the
//! checkout (CI lays `../shared` there), never copied into the repository: some are third-party
//! test data (the `rancher/10-import.testdata.*` files are Rancher's `pkg/systemtemplate/testdata`
//! snapshots), the others were assembled from the code that builds each object. Each file's
//! `# source:` header names its origin; `../shared/fixtures/README.md` says what each one is.
//!
//! `RESTRICTOR_SHARED_DIR` names the `shared` directory when it is not beside the checkout (a git
//! worktree elsewhere). Without it a test prints why it is skipped and passes; under `CI` it fails.
//!
//! Plain `std` only: `src/` unit tests include this file by `#[path]` as well.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The fixture groups: what Rancher applies, and what a vcluster's API server sends and stores.
pub const GROUPS: [&str; 2] = ["rancher", "vcluster"];

/// `../shared` beside the checkout, or `RESTRICTOR_SHARED_DIR`.
pub fn shared_dir() -> PathBuf {
    match std::env::var_os("RESTRICTOR_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
    }
}

/// The fixtures directory, or `None` once the calling test has said it is skipped (it should
/// return). Under `CI` a missing directory fails the test instead.
pub fn shared_fixtures() -> Option<PathBuf> {
    let dir = shared_dir().join("fixtures");
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} not found, but CI is set: CI lays ../shared beside the checkout",
        dir.display()
    );
    eprintln!(
        "skipped: ../shared/fixtures not found beside the checkout (CI provides it; \
         RESTRICTOR_SHARED_DIR names another place): looked in {}",
        dir.display()
    );
    None
}

/// One fixture by its path below `fixtures/` (`rancher/…yaml`), or `None` when skipped.
pub fn shared_fixture(relative: &str) -> Option<PathBuf> {
    let path = shared_fixtures()?.join(relative);
    assert!(path.is_file(), "fixture {} is missing", path.display());
    Some(path)
}

/// The text of one fixture, or `None` when skipped.
pub fn shared_fixture_text(relative: &str) -> Option<String> {
    let path = shared_fixture(relative)?;
    Some(
        std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("reading {}: {error}", path.display())),
    )
}

/// Every `.yaml` fixture of `GROUPS`, sorted by path, or `None` when skipped.
pub fn shared_fixture_files() -> Option<Vec<PathBuf>> {
    let root = shared_fixtures()?;
    let mut files = Vec::new();
    for group in GROUPS {
        let dir = root.join(group);
        for entry in std::fs::read_dir(&dir)
            .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
        {
            let path = entry
                .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
                .path();
            if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", root.display());
    Some(files)
}

/// `group/file.yaml` of a fixture path, to name it in messages.
pub fn fixture_name(path: &Path) -> String {
    let file = path.file_name().unwrap_or_default().to_string_lossy();
    match path.parent().and_then(Path::file_name) {
        Some(group) => format!("{}/{file}", group.to_string_lossy()),
        None => file.into_owned(),
    }
}
