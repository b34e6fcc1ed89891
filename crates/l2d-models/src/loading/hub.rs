//! Finding a model folder: a path, or an entry of the local Hugging Face cache. Never the
//! network.

use std::path::{Path, PathBuf};

/// A model could not be found locally.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Neither a folder of that name nor a cache entry exists.
    #[error(
        "model `{repo}` not found: it is not a folder, and no snapshot exists in {}; \
         download it first (e.g. `huggingface-cli download {repo}`)",
        list(.searched)
    )]
    NotFound {
        /// The name or path asked for.
        repo: String,
        /// Every location looked at.
        searched: Vec<PathBuf>,
    },
    /// A cache entry exists but the revision cannot be chosen.
    #[error("model `{repo}` in `{cache}`: {reason}")]
    Ambiguous {
        /// The repository id.
        repo: String,
        /// The cache entry (`models--org--name`).
        cache: PathBuf,
        /// Why.
        reason: String,
    },
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| format!("`{}`", p.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The Hugging Face hub cache folders in priority order: `$HF_HUB_CACHE`, `$HF_HOME/hub`,
/// `$XDG_CACHE_HOME/huggingface/hub`, `~/.cache/huggingface/hub` (existing or not).
pub fn default_cache_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = var("HF_HUB_CACHE") {
        roots.push(p);
    }
    if let Some(p) = var("HF_HOME") {
        roots.push(p.join("hub"));
    }
    if let Some(p) = var("XDG_CACHE_HOME") {
        roots.push(p.join("huggingface").join("hub"));
    }
    if let Some(p) = var("HOME") {
        roots.push(p.join(".cache").join("huggingface").join("hub"));
    }
    roots.dedup();
    roots
}

/// Resolves `name_or_path` to a model folder with [`default_cache_roots`].
pub fn resolve_model_dir(name_or_path: &str) -> Result<PathBuf, ResolveError> {
    resolve_model_dir_in(name_or_path, &default_cache_roots())
}

/// Resolves `name_or_path` to a model folder: an existing folder is returned as is; else
/// `org/name` is looked up as `<root>/models--org--name/snapshots/<rev>/` in each cache root,
/// `<rev>` being the commit in `refs/main` (or the only snapshot when `refs/main` is absent).
pub fn resolve_model_dir_in(
    name_or_path: &str,
    roots: &[PathBuf],
) -> Result<PathBuf, ResolveError> {
    let as_path = Path::new(name_or_path);
    if as_path.is_dir() {
        return Ok(as_path.to_path_buf());
    }
    let mut searched = vec![as_path.to_path_buf()];
    let looks_like_repo = !name_or_path.is_empty()
        && name_or_path.split('/').count() <= 2
        && !name_or_path
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..");
    if looks_like_repo {
        let entry = format!("models--{}", name_or_path.replace('/', "--"));
        for root in roots {
            let repo_dir = root.join(&entry);
            searched.push(repo_dir.clone());
            if let Some(snapshot) = snapshot_of(name_or_path, &repo_dir)? {
                return Ok(snapshot);
            }
        }
    }
    Err(ResolveError::NotFound {
        repo: name_or_path.to_string(),
        searched,
    })
}

fn snapshot_of(repo: &str, repo_dir: &Path) -> Result<Option<PathBuf>, ResolveError> {
    let snapshots = repo_dir.join("snapshots");
    if !snapshots.is_dir() {
        return Ok(None);
    }
    let ambiguous = |reason: String| ResolveError::Ambiguous {
        repo: repo.to_string(),
        cache: repo_dir.to_path_buf(),
        reason,
    };
    if let Ok(commit) = std::fs::read_to_string(repo_dir.join("refs").join("main")) {
        let dir = snapshots.join(commit.trim());
        return if dir.is_dir() {
            Ok(Some(dir))
        } else {
            Err(ambiguous(format!(
                "refs/main names {} but `{}` does not exist",
                commit.trim(),
                dir.display()
            )))
        };
    }
    let mut revs: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .map_err(|e| ambiguous(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    match revs.len() {
        0 => Ok(None),
        1 => Ok(revs.pop()),
        n => {
            revs.sort();
            Err(ambiguous(format!(
                "no refs/main and {n} snapshots: {}",
                list(&revs)
            )))
        }
    }
}
