//! Choosing the candle device from `--device cpu|cuda|auto`.

use candle_core::Device;

use crate::{Error, Result};

/// Which device to run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// The CPU.
    Cpu,
    /// The first CUDA GPU (needs a build with `--features cuda`).
    Cuda,
    /// CUDA when this build has it and a GPU is present, else the CPU.
    Auto,
}

/// The device for `choice`, or a sentence saying why it cannot be had.
pub fn select(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
        DeviceChoice::Cuda if !candle_core::utils::cuda_is_available() => Err(Error::Input(
            "--device cuda needs a chargru built with CUDA: rebuild with `cargo build --release --features cuda`, or use --device cpu".into(),
        )),
        DeviceChoice::Cuda => Device::new_cuda(0).map_err(|e| {
            Error::Input(format!(
                "--device cuda: cannot open CUDA device 0 ({e}); check the driver with nvidia-smi, or use --device cpu"
            ))
        }),
    }
}
