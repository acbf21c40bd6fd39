//! Crash-safe checkpoints of the outer state in one safetensors file.
//!
//! `<dir>/checkpoint.safetensors` holds one `F32` tensor per entry of the parameter layout
//! (named as in [`Trainer::param_layout`](crate::Trainer::param_layout)), the outer
//! momentum as the flat tensor `outer.velocity`, and string metadata:
//!
//! - `format`: `swarm-trainer-checkpoint/1`
//! - `model`: the model name
//! - `round`: the outer round, decimal
//! - `layout`: JSON `[[name, [dims..]], ..]`, the flat order of the parameters
//! - `state_hash`: lowercase hex of [`state_hash`](crate::state_hash)`(params, velocity)`
//! - `checksum`: lowercase hex BLAKE3 over all of the above, so that damage to the header is
//!   caught as well as damage to the data.
//!
//! Saving writes a temporary file in the same directory, fsyncs it, renames it over the old
//! file and fsyncs the directory: a crash leaves either the old or the new checkpoint.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::TrainerError;
use crate::outer::state_hash;

/// File name of the checkpoint inside its directory.
pub const FILE_NAME: &str = "checkpoint.safetensors";
/// Tensor name of the outer optimizer's velocity.
pub const VELOCITY_TENSOR: &str = "outer.velocity";
const FORMAT: &str = "swarm-trainer-checkpoint/1";

/// The state worth keeping across restarts.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The outer round these parameters are the result of.
    pub round: u64,
    /// Flat global parameters (layout order).
    pub params: Vec<f32>,
    /// Outer optimizer velocity.
    pub velocity: Vec<f32>,
    /// Model name.
    pub model: String,
}

/// Path of the checkpoint file in `dir`.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn checksum(model: &str, round: &str, layout: &str, state: &str) -> String {
    let mut h = blake3::Hasher::new();
    for field in [FORMAT, model, round, layout, state] {
        h.update(&(field.len() as u64).to_le_bytes());
        h.update(field.as_bytes());
    }
    hex(h.finalize().as_bytes())
}

/// Writes `ck` to `<dir>/checkpoint.safetensors` atomically (creating `dir` if needed).
///
/// `layout` must describe `ck.params` exactly (sizes summing to its length, unique names).
pub fn save(dir: &Path, layout: &[(String, Vec<usize>)], ck: &Checkpoint) -> Result<(), TrainerError> {
    let total: usize = layout.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    if total != ck.params.len() {
        return Err(TrainerError::ParamLength {
            what: "the checkpoint layout".to_string(),
            expected: total,
            got: ck.params.len(),
        });
    }
    let mut names: Vec<&str> = layout.iter().map(|(n, _)| n.as_str()).collect();
    names.push(VELOCITY_TENSOR);
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(TrainerError::InvalidLayout(format!("duplicate tensor names (or one named `{VELOCITY_TENSOR}`)")));
    }

    let layout_json =
        serde_json::to_string(layout).map_err(|e| TrainerError::InvalidLayout(format!("encoding the layout: {e}")))?;
    let round = ck.round.to_string();
    let state = hex(&state_hash(&ck.params, &ck.velocity));
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("model".to_string(), ck.model.clone()),
        ("round".to_string(), round.clone()),
        ("layout".to_string(), layout_json.clone()),
        ("state_hash".to_string(), state.clone()),
        ("checksum".to_string(), checksum(&ck.model, &round, &layout_json, &state)),
    ]);

    let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(layout.len() + 1);
    let mut offset = 0;
    for (name, shape) in layout {
        let n: usize = shape.iter().product();
        buffers.push((name.clone(), shape.clone(), f32_bytes(&ck.params[offset..offset + n])));
        offset += n;
    }
    buffers.push((VELOCITY_TENSOR.to_string(), vec![ck.velocity.len()], f32_bytes(&ck.velocity)));
    let mut views = Vec::with_capacity(buffers.len());
    for (name, shape, bytes) in &buffers {
        let view = TensorView::new(Dtype::F32, shape.clone(), bytes)
            .map_err(|e| TrainerError::InvalidLayout(format!("tensor `{name}`: {e}")))?;
        views.push((name.as_str(), view));
    }
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| TrainerError::InvalidLayout(format!("serialising: {e}")))?;

    write_atomically(dir, &bytes)
}

fn write_atomically(dir: &Path, bytes: &[u8]) -> Result<(), TrainerError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrainerError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(format!(".{FILE_NAME}.tmp-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let result = (|| {
        let mut file = File::create(&tmp).map_err(io(&tmp))?;
        file.write_all(bytes).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        drop(file);
        let target = path_in(dir);
        fs::rename(&tmp, &target).map_err(io(&target))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    // Make the rename itself durable.
    #[cfg(unix)]
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(())
}

/// Loads `<dir>/checkpoint.safetensors`: `Ok(None)` if there is none, the checkpoint if it is
/// intact, [`TrainerError::CorruptCheckpoint`] if it is torn or does not match its hashes.
pub fn load(dir: &Path) -> Result<Option<Checkpoint>, TrainerError> {
    let path = path_in(dir);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(TrainerError::Io { path, source }),
    };
    parse(&bytes).map(Some).map_err(|reason| TrainerError::CorruptCheckpoint { path, reason })
}

/// Decodes and verifies a checkpoint file's bytes.
fn parse(bytes: &[u8]) -> Result<Checkpoint, String> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| format!("header: {e}"))?;
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| format!("tensors: {e}"))?;
    let meta = header.metadata().as_ref().ok_or_else(|| "no metadata".to_string())?;
    let get = |key: &str| meta.get(key).map(String::as_str).ok_or_else(|| format!("metadata key `{key}` missing"));
    let (format, model, round_s, layout_s, state_s, sum_s) =
        (get("format")?, get("model")?, get("round")?, get("layout")?, get("state_hash")?, get("checksum")?);
    if format != FORMAT {
        return Err(format!("unknown format `{format}`"));
    }
    if checksum(model, round_s, layout_s, state_s) != sum_s {
        return Err("metadata checksum mismatch".to_string());
    }
    let round: u64 = round_s.parse().map_err(|e| format!("bad round `{round_s}`: {e}"))?;
    let layout: Vec<(String, Vec<usize>)> = serde_json::from_str(layout_s).map_err(|e| format!("bad layout: {e}"))?;
    if tensors.len() != layout.len() + 1 {
        return Err(format!("{} tensors stored, layout names {} + velocity", tensors.len(), layout.len()));
    }

    let read = |name: &str, shape: Option<&[usize]>| -> Result<Vec<f32>, String> {
        let view = tensors.tensor(name).map_err(|e| format!("tensor `{name}`: {e}"))?;
        if view.dtype() != Dtype::F32 {
            return Err(format!("tensor `{name}` is {:?}, not F32", view.dtype()));
        }
        match shape {
            Some(s) if view.shape() != s => {
                return Err(format!("tensor `{name}` has shape {:?}, layout says {s:?}", view.shape()));
            }
            None if view.shape().len() != 1 => {
                return Err(format!("tensor `{name}` is not flat: {:?}", view.shape()));
            }
            _ => {}
        }
        Ok(view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    };
    let mut params = Vec::new();
    for (name, shape) in &layout {
        params.extend(read(name, Some(shape))?);
    }
    let velocity = read(VELOCITY_TENSOR, None)?;
    if hex(&state_hash(&params, &velocity)) != state_s {
        return Err("state hash mismatch: parameters or velocity damaged".to_string());
    }
    Ok(Checkpoint { round, params, velocity, model: model.to_string() })
}
