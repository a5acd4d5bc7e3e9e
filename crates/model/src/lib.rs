//! Plain data shared by every layer of banger: validated VM names, sizes,
//! the VM defaults resolver and the records the store keeps.
//!
//! This crate does no I/O. Whatever needs the host (CPU count, memory) is
//! passed in as [`HostFacts`], so every rule here is testable in isolation.
#![deny(unsafe_code)]

pub mod clock;
mod defaults;
mod name;
mod namegen;
mod objname;
mod records;
mod size;

pub use defaults::{DefaultsOverride, HostFacts, Provenance, Resolved, VmDefaults};
pub use name::{NameError, VmName};
pub use namegen::generate_name;
pub use objname::{MAX_OBJECT_NAME, ObjectNameError, validate_object_name};
pub use records::{
    Artifact, ArtifactRole, BinaryOrigin, ImageFacts, ImageRecord, KernelRecord, ObjectState,
    OciImageConfig, OciLayer, TemplateFile, TemplateRecord, VmRecord, VmState, VmWorkspace,
};
pub use size::{Size, SizeError};
