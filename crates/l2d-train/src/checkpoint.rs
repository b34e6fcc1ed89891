//! Checkpoints: everything a run needs to continue exactly where it stopped.
//!
//! ```text
//! RUN/checkpoints/
//!   step-00000200/
//!     adapter.safetensors     the diffusion path (l2d-models' adapter format)
//!     optimizer.safetensors   AdamW moments by parameter name, the update count
//!     state.json              step, data position, counters, seed, data fingerprint
//!   step-00000300/ ...
//!   latest                    the name of the newest complete checkpoint
//! ```
//!
//! A checkpoint is written into a temporary folder that is renamed into place once complete,
//! then `latest` is replaced (temporary file + rename): a run killed at any moment leaves the
//! previous checkpoint intact and `latest` pointing at a complete one. Only the newest
//! `keep_last` checkpoints are kept.
//!
//! The random state is not stored as generator bytes: every random draw of a step is keyed by
//! the seed and the step (and micro-batch) number, and the data order by the seed and the
//! epoch, so the step number and the data position restore them exactly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, TensorData};
use l2d_models::decoder::CausalLm;
use serde::{Deserialize, Serialize};

use crate::data::DataPosition;
use crate::error::{Result, TrainError};
use crate::objective::Objective;
use crate::optim::AdamW;

/// The folder of checkpoints inside a run folder.
pub const CHECKPOINTS: &str = "checkpoints";
/// The file naming the newest checkpoint.
pub const LATEST: &str = "latest";
/// The `format` of optimizer files.
pub const OPTIMIZER_FORMAT: &str = "l2d-optimizer";

/// The run state saved with a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Format version.
    pub version: u32,
    /// Optimizer steps completed.
    pub step: usize,
    /// The run's planned total steps when saved.
    pub total_steps: usize,
    /// The data position after the last consumed micro-batch.
    pub position: DataPosition,
    /// Micro-batches skipped for a non-finite loss or gradient so far.
    pub nonfinite: usize,
    /// The run seed (keys every random draw with the step number).
    pub seed: u64,
    /// A hash of the encoded training examples, to refuse resuming on other data.
    pub data_fingerprint: String,
    /// Sequences per micro-batch.
    pub micro_batch_size: usize,
    /// Micro-batches per step.
    pub accumulation_steps: usize,
}

/// The name of step `step`'s checkpoint folder.
pub fn checkpoint_name(step: usize) -> String {
    format!("step-{step:08}")
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> TrainError + 'a {
    move |e| TrainError::io(action, path, e)
}

/// Writes bytes to `path` through a temporary file in the same folder and a rename.
///
/// # Errors
/// [`TrainError::Io`] naming the file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    l2d_models::weights::write_atomically(path, bytes).map_err(|e| TrainError::io("write", path, e))
}

/// Serialises the optimizer state (f32 moments by name, the update count in the metadata).
fn optimizer_bytes(adam: &AdamW, path: &Path) -> Result<Vec<u8>> {
    let (tensors, steps) = adam.to_tensors();
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), OPTIMIZER_FORMAT.to_string());
    meta.insert("steps".to_string(), steps.to_string());
    l2d_models::weights::serialize_f32(tensors, meta).map_err(|e| TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Reads an optimizer file into `adam` (tensors on `device`).
fn load_optimizer(adam: &mut AdamW, path: &Path, device: &Device) -> Result<()> {
    let bad = |reason: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(io("read", path))?;
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(OPTIMIZER_FORMAT) {
        return Err(bad("not an l2d optimizer file".into()));
    }
    let steps: u64 = meta
        .get("steps")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no update count in the metadata".into()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(bad(format!("`{name}` is not f32")));
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        tensors.push((name, TensorData::new(values, view.shape().to_vec())));
    }
    adam.load_tensors(tensors, steps, device, path)
}

/// Saves a checkpoint of step `state.step` under `run_dir/checkpoints/`, atomically, points
/// `latest` at it and deletes all but the newest `keep_last`. Returns its folder.
///
/// # Errors
/// [`TrainError::Io`] / [`TrainError::Checkpoint`] naming the file.
pub fn save_checkpoint<O: Objective>(
    run_dir: &Path,
    adapter: &O,
    base: &CausalLm,
    adam: &AdamW,
    state: &TrainState,
    keep_last: usize,
) -> Result<PathBuf> {
    let root = run_dir.join(CHECKPOINTS);
    std::fs::create_dir_all(&root).map_err(io("create", &root))?;
    let name = checkpoint_name(state.step);
    let tmp = root.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io("remove", &tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io("create", &tmp))?;
    adapter.save(&tmp.join("adapter.safetensors"), base)?;
    let optimizer = tmp.join("optimizer.safetensors");
    write_atomically(&optimizer, &optimizer_bytes(adam, &optimizer)?)?;
    let state_path = tmp.join("state.json");
    let json = serde_json::to_vec_pretty(state).map_err(|e| TrainError::Checkpoint {
        path: state_path.clone(),
        reason: e.to_string(),
    })?;
    write_atomically(&state_path, &json)?;
    let dir = root.join(&name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io("remove", &dir))?;
    }
    std::fs::rename(&tmp, &dir).map_err(io("rename", &tmp))?;
    write_atomically(&root.join(LATEST), name.as_bytes())?;
    prune(&root, keep_last, &name)?;
    Ok(dir)
}

/// Deletes checkpoint folders beyond the newest `keep_last` (never `current`) and leftovers
/// of interrupted writes. A folder is first renamed out of the `step-*` names (atomically),
/// then deleted: a kill in the middle leaves a `.trash-*` leftover that the next prune or run
/// removes, never a half-deleted `step-*` that looks like a checkpoint.
fn prune(root: &Path, keep_last: usize, current: &str) -> Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .map_err(io("read", root))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-"))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(keep_last.max(1));
    for n in names.into_iter().take(excess) {
        if n != current {
            let p = root.join(&n);
            let trash = root.join(format!(".trash-{n}.tmp-{}", std::process::id()));
            std::fs::rename(&p, &trash).map_err(io("rename", &p))?;
            std::fs::remove_dir_all(&trash).map_err(io("remove", &trash))?;
        }
    }
    remove_leftovers(root)
}

/// Removes what interrupted checkpoint writes and prunes leave in `root` (a run's
/// `checkpoints/` folder): hidden `.*.tmp-*` files and folders (temporary checkpoints, a
/// temporary `latest`, folders being deleted). Nothing else is touched.
///
/// # Errors
/// [`TrainError::Io`] naming the entry that could not be removed.
pub fn remove_leftovers(root: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(());
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with('.') && name.contains(".tmp-")) {
            continue;
        }
        let p = entry.path();
        let removed = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        removed.map_err(io("remove", &p))?;
    }
    Ok(())
}

/// The newest complete checkpoint of a run folder, if any.
///
/// # Errors
/// [`TrainError::Checkpoint`] if `latest` names a missing folder.
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<PathBuf>> {
    let latest = run_dir.join(CHECKPOINTS).join(LATEST);
    if !latest.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&latest).map_err(io("read", &latest))?;
    let dir = run_dir.join(CHECKPOINTS).join(name.trim());
    if !dir.join("state.json").exists() {
        return Err(TrainError::Checkpoint {
            path: dir,
            reason: format!("`{}` names an incomplete checkpoint", latest.display()),
        });
    }
    Ok(Some(dir))
}

/// A loaded checkpoint.
#[derive(Debug)]
pub struct Checkpoint<O> {
    /// The adapter (f32, on the base's device).
    pub adapter: O,
    /// The optimizer with its state.
    pub adam: AdamW,
    /// The run state.
    pub state: TrainState,
}

/// Loads a checkpoint folder for `base`; the optimizer gets `adam`'s hyper-parameters.
///
/// # Errors
/// [`TrainError::Checkpoint`] / [`TrainError::Io`] naming the file.
pub fn load_checkpoint<O: Objective>(
    dir: &Path,
    base: &CausalLm,
    adam: AdamW,
) -> Result<Checkpoint<O>> {
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path).map_err(io("read", &state_path))?;
    let state: TrainState = serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path: state_path.clone(),
        reason: e.to_string(),
    })?;
    let adapter = O::load(&dir.join("adapter.safetensors"), base)?;
    let mut adam = adam;
    load_optimizer(
        &mut adam,
        &dir.join("optimizer.safetensors"),
        &base.device(),
    )?;
    Ok(Checkpoint {
        adapter,
        adam,
        state,
    })
}
