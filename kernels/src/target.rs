//! The GPUs kernels are generated for, and the per-target table of tile sizes and limits.

use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// A GPU architecture sparkc emits PTX for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Sm {
    /// GB10, the DGX Spark (the default).
    Sm121a,
    /// Consumer Blackwell (RTX 50xx, RTX PRO).
    Sm120a,
    /// Datacenter Blackwell (B200); `mma.sync` only, no `tcgen05`.
    Sm100a,
    /// Hopper (H100); `mma.sync` only, no `wgmma`.
    Sm90a,
    /// Ampere (A100) and the baseline for every `mma.sync`, `ldmatrix` and `cp.async` form used.
    Sm80,
}

/// Where generated code runs: a GPU, or this machine (for testing a kernel's logic).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Target {
    /// PTX for one GPU architecture.
    Gpu(Sm),
    /// The host CPU, one thread per block; used to test generated IR against the CPU reference.
    Host,
}

/// Limits of one architecture, as written in `docs/codegen.md`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct TargetInfo {
    /// The architecture.
    pub sm: Sm,
    /// Compute capability times ten (121 for 12.1).
    pub compute_capability: u32,
    /// Streaming multiprocessors of the reference part (GB10: 48; RTX 5090: 170; B200: 148; H100 SXM: 132; A100: 108).
    pub sm_count: u32,
    /// 32-bit registers per SM.
    pub registers_per_sm: u32,
    /// Shared memory one block may opt into, in bytes.
    pub max_shared_per_block: u32,
    /// `cp.async` pipeline depth of the tensor-core GEMM (k-slices in flight per block).
    pub mma_stages: u32,
}

impl TargetInfo {
    /// k-slices the tensor-core GEMM multiplies between two barriers: two where the depth is
    /// even, else one (it divides `mma_stages`).
    pub fn mma_step(&self) -> u32 {
        if self.mma_stages % 2 == 0 {
            2
        } else {
            1
        }
    }
}

impl Sm {
    /// Every architecture, the default first.
    pub const ALL: [Sm; 5] = [Sm::Sm121a, Sm::Sm120a, Sm::Sm100a, Sm::Sm90a, Sm::Sm80];

    /// The name ptxas and LLVM use (`sm_121a`).
    pub fn name(self) -> &'static str {
        match self {
            Sm::Sm121a => "sm_121a",
            Sm::Sm120a => "sm_120a",
            Sm::Sm100a => "sm_100a",
            Sm::Sm90a => "sm_90a",
            Sm::Sm80 => "sm_80",
        }
    }

    /// The PTX ISA version LLVM is asked for: the lowest that knows the architecture and every
    /// instruction sparkc emits for it (FP8 `mma.sync` needs 8.4 on Hopper).
    pub fn ptx_features(self) -> &'static str {
        match self {
            Sm::Sm121a => "+ptx88",
            Sm::Sm120a => "+ptx87",
            Sm::Sm100a => "+ptx86",
            Sm::Sm90a => "+ptx84",
            Sm::Sm80 => "+ptx70",
        }
    }

    /// True when `mma.sync` multiplies FP8 (E4M3/E5M2) codes: sm_89 and later.
    pub fn has_fp8_mma(self) -> bool {
        self != Sm::Sm80
    }

    /// True for the sm_120 family (GB10, consumer Blackwell): the `kind::f8f6f4` and
    /// block-scaled `mma.sync` forms.
    pub fn is_sm120_family(self) -> bool {
        matches!(self, Sm::Sm120a | Sm::Sm121a)
    }

    /// Limits of the architecture's reference part.
    pub fn info(self) -> TargetInfo {
        // Shared memory per block: GB10 and consumer Blackwell have 99 KiB (sm_120 family),
        // B200 and H100 227 KiB, A100 163 KiB. A GEMM stage of the 128x128 tile takes 16 KiB:
        // three stages (48 KiB) let two blocks share a 100 KiB sm_120-family SM, four (64 KiB)
        // still fit two or three blocks on the larger SMs and hide more of HBM's latency.
        let (cc, sms, smem, stages) = match self {
            Sm::Sm121a => (121, 48, 99 * 1024, 3),
            Sm::Sm120a => (120, 170, 99 * 1024, 3),
            Sm::Sm100a => (100, 148, 227 * 1024, 4),
            Sm::Sm90a => (90, 132, 227 * 1024, 4),
            Sm::Sm80 => (80, 108, 163 * 1024, 4),
        };
        TargetInfo {
            sm: self,
            compute_capability: cc,
            sm_count: sms,
            registers_per_sm: 65536,
            max_shared_per_block: smem,
            mma_stages: stages,
        }
    }
}

impl fmt::Display for Sm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Sm {
    type Err = String;

    fn from_str(s: &str) -> Result<Sm, String> {
        let wanted = s.trim().to_ascii_lowercase();
        Sm::ALL
            .into_iter()
            .find(|sm| sm.name() == wanted)
            .ok_or_else(|| {
                let names: Vec<&str> = Sm::ALL.iter().map(|sm| sm.name()).collect();
                format!("unknown target `{s}`; known: {}", names.join(", "))
            })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Gpu(sm) => sm.fmt(f),
            Target::Host => f.write_str("host"),
        }
    }
}
