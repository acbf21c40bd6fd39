//! Where the trainer computes: burn's pure-Rust CPU backend (flex) or wgpu (Vulkan, Metal,
//! DX12; on a machine without a GPU, Mesa's lavapipe runs it on the CPU).
//!
//! Only the loss and its gradients run on the backend: AdamW's moments, the parameters of the
//! inner loop and the outer step stay on the host in f32, in a fixed order. A backend that
//! sums in another order gives other gradients, so a state trained on wgpu is not bit for bit
//! the state a CPU verifier re-computes (see the README's "GPU").

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::str::FromStr;

use burn::tensor::{Device, Tensor, TensorData};

use crate::error::TrainerError;

/// A compute backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Backend {
    /// burn's flex CPU backend: bit-reproducible across processes and thread counts.
    #[default]
    Cpu,
    /// burn-wgpu on the default adapter (a discrete GPU first; `CUBECL_WGPU_DEFAULT_DEVICE`
    /// overrides).
    Wgpu,
}

impl Backend {
    /// Whether this build can run the backend (wgpu needs the `wgpu` cargo feature).
    pub fn is_built(self) -> bool {
        match self {
            Backend::Cpu => true,
            Backend::Wgpu => cfg!(feature = "wgpu"),
        }
    }

    /// The burn device. Only called for a backend that [`Backend::check`] accepted.
    pub(crate) fn device(self) -> Device {
        match self {
            Backend::Cpu => Device::flex(),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
            #[cfg(not(feature = "wgpu"))]
            Backend::Wgpu => unreachable!("check() refuses wgpu in a build without the `wgpu` feature"),
        }
    }

    /// The name used on the command line (`cpu`, `wgpu`).
    pub fn label(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Wgpu => "wgpu",
        }
    }

    /// Brings the device up and runs one small computation on it; an error (not a panic)
    /// where it cannot (no Vulkan driver, no adapter).
    pub fn check(self) -> Result<(), TrainerError> {
        if !self.is_built() {
            return Err(TrainerError::Backend(format!(
                "this build has no {} backend: build with `cargo build --release -p swarm --features wgpu`",
                self.label()
            )));
        }
        let run = || {
            let device = self.device();
            let x = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]), &device);
            x.clone().matmul(x).into_data().try_to_vec::<f32>().ok()
        };
        match catch_unwind(AssertUnwindSafe(run)) {
            Ok(Some(v)) if v == [7.0, 10.0, 15.0, 22.0] => Ok(()),
            Ok(v) => Err(TrainerError::Backend(format!("{}: a 2x2 matmul gave {v:?}", self.label()))),
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "it panicked".into());
                Err(TrainerError::Backend(format!(
                    "{} does not come up ({why}); on Linux install a Vulkan driver (Debian: mesa-vulkan-drivers)",
                    self.label()
                )))
            }
        }
    }
}

impl FromStr for Backend {
    type Err = TrainerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(Backend::Cpu),
            "wgpu" => Ok(Backend::Wgpu),
            other => Err(TrainerError::Backend(format!("unknown device `{other}` (cpu or wgpu)"))),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}
