//! The plan: for each output format, for each tensor, the target type and the rule that
//! chose it. A plan is a value: printed by `--dry-run`, stored in the manifest, tested.

pub mod budget;
pub mod ftype;
pub mod gguf;

pub use ftype::{Ftype, ALL_FTYPES, IQ_FTYPES};
pub use gguf::{
    keep_source_type, plan_gguf, tensor_requires_imatrix, GgufPlan, Overrides, PlanError,
    PlanInput, PlannedTensor, Rules,
};
