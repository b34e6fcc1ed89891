//! Errors of the diffusion path.

use std::path::PathBuf;

use crate::l2d_config::L2dConfigError;
use crate::loading::LoadError;
use crate::weights::WeightError;

/// Every failure of the diffusion path: building, running, saving or loading it. Each variant
/// names the tensor, field or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum DiffusionError {
    /// The L2D configuration is invalid or unsupported.
    #[error(transparent)]
    Config(#[from] L2dConfigError),
    /// A tensor given to a forward has the wrong shape.
    #[error("{tensor} has shape {got:?}, expected {expected}")]
    Shape {
        /// Which input.
        tensor: &'static str,
        /// The shape required, in words.
        expected: String,
        /// The shape given.
        got: Vec<usize>,
    },
    /// The diffusion path was built for another base model.
    #[error(
        "the diffusion path does not fit this base model: {field} is {path} in the path, {base} in the base"
    )]
    BaseMismatch {
        /// The size that differs (e.g. `hidden_size`).
        field: &'static str,
        /// The value the path was built for.
        path: String,
        /// The base model's value.
        base: String,
    },
    /// Class labels given to a path without guidance classes, or a label out of range.
    #[error("class labels: {0}")]
    ClassLabels(String),
    /// Full trainable copies are initialised from the base weights, which were not given.
    #[error(
        "separate_flow_params_with_lora = false makes full copies of the base projections: build the path with the base model (DiffusionPath::init)"
    )]
    FullCopyNeedsBase,
    /// An invalid argument (a temperature, a timestep, a missing random generator, ...).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The argument.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// An error of `l2d-core` (x1 estimation, schedules).
    #[error(transparent)]
    Core(#[from] l2d_core::Error),
    /// An error of `l2d-guidance`.
    #[error(transparent)]
    Guidance(#[from] l2d_guidance::Error),
    /// An ODE solve failed.
    #[error(transparent)]
    Solver(#[from] l2d_solvers::SolverError),
    /// Reading weights failed.
    #[error(transparent)]
    Weight(#[from] WeightError),
    /// Loading a base model failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// An adapter file lacks a tensor the configuration needs.
    #[error("tensor `{name}` is missing from `{path}`")]
    MissingTensor {
        /// Reference key name.
        name: String,
        /// The file.
        path: PathBuf,
    },
    /// A tensor of an adapter file has the wrong shape.
    #[error("tensor `{name}` in `{path}` has shape {found:?}, expected {expected:?}")]
    TensorShape {
        /// Reference key name.
        name: String,
        /// The file.
        path: PathBuf,
        /// The shape the configuration implies (reference layout).
        expected: Vec<usize>,
        /// The shape stored.
        found: Vec<usize>,
    },
    /// An adapter file holds tensors that are neither diffusion-path nor base parameters.
    #[error("unexpected tensors in `{path}`: {}", names.join(", "))]
    UnexpectedTensors {
        /// Their names.
        names: Vec<String>,
        /// The file.
        path: PathBuf,
    },
    /// An adapter file without the L2D configuration in its metadata, and none was given.
    #[error(
        "`{path}` carries no L2D configuration in its metadata: pass one (e.g. the reference's l2d_config.json)"
    )]
    MissingConfig {
        /// The file.
        path: PathBuf,
    },
    /// The adapter's metadata cannot be read.
    #[error("bad adapter metadata in `{path}`: {reason}")]
    Metadata {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The adapter was trained on other base weights.
    #[error(
        "`{path}` was trained on base weights with fingerprint {adapter}, this base has {base}; load with `force` to use it anyway"
    )]
    FingerprintMismatch {
        /// The file.
        path: PathBuf,
        /// The fingerprint recorded in the adapter.
        adapter: String,
        /// The fingerprint of the base given.
        base: String,
    },
    /// Writing a file failed.
    #[error("cannot write `{path}`: {reason}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}
