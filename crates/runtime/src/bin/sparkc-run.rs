//! `sparkc-run`: runs `.spark` artifacts with the runtime alone (no compiler linked), the
//! binary to carry to a GPU machine.
//!
//! ```text
//! sparkc-run MODEL.spark... [--device auto|cpu|cuda] [--dim N=2 ...]
//!            [--check [--rtol R] [--atol A] [--min-cosine C]] [--iters 20] [--profile]
//! ```
//!
//! Inputs come from `MODEL/input_0.pb`, `input_1.pb`, … beside the artifact when that folder
//! exists (the ONNX test-data layout, whose `output_N.pb` are then compared too), else they
//! are seeded from the signature, with symbolic dims from `--dim` (2 where not given).
//! `--check` compares every output with the CPU executor and prints one verdict per model: an
//! output passes when every element is within `atol + rtol·|want|` (for a BF16 or FP16
//! output, `rtol` at least one unit in the last place, `atol` at least one at the output's
//! largest magnitude), or, with `--min-cosine`, when its cosine
//! similarity reaches C (quantized models, where one activation rounded to the next FP8 code
//! moves what follows);
//! after a GPU fault that loses the CUDA context the remaining models are listed as not run.
//! `--iters` times repeated runs, on a GPU both as CUDA-graph replays and as plain launches;
//! `--profile` times each kernel with CUDA events.

use sparkc_runtime::{sample_inputs, Artifact, DType, Device, Session, Tensor};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The seed of the sampled inputs, fixed so runs compare.
const SEED: u64 = 0x2545_f491_4f6c_dd1d;

/// The size a symbolic dim gets when `--dim` does not name it.
const DEFAULT_DIM: i64 = 2;

/// Profiled runs per model; each kernel's best time is reported.
const PROFILE_RUNS: usize = 3;

/// Driver errors after which the CUDA context is lost for the rest of the process.
const STICKY_ERRORS: [&str; 7] = [
    "CUDA_ERROR_ILLEGAL_ADDRESS",
    "CUDA_ERROR_LAUNCH_FAILED",
    "CUDA_ERROR_MISALIGNED_ADDRESS",
    "CUDA_ERROR_ILLEGAL_INSTRUCTION",
    "CUDA_ERROR_HARDWARE_STACK_ERROR",
    "CUDA_ERROR_INVALID_PC",
    "CUDA_ERROR_LAUNCH_TIMEOUT",
];

const USAGE: &str = "usage: sparkc-run MODEL.spark... [--device auto|cpu|cuda] [--dim N=2 ...] [--check [--rtol R] [--atol A] [--min-cosine C]] [--iters 20] [--profile]";

struct Options {
    models: Vec<PathBuf>,
    device: Device,
    dims: BTreeMap<String, i64>,
    check: bool,
    rtol: f32,
    atol: f32,
    min_cosine: Option<f64>,
    iters: usize,
    profile: bool,
}

fn parse() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        models: Vec::new(),
        device: Device::Auto,
        dims: BTreeMap::new(),
        check: false,
        rtol: 1e-4,
        atol: 1e-5,
        min_cosine: None,
        iters: 0,
        profile: false,
    };
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        let number = |v: String| {
            v.parse::<f32>()
                .map_err(|_| format!("{a}: {v} is no number"))
        };
        match a.as_str() {
            "--device" => o.device = value()?.parse()?,
            "--dim" => {
                let v = value()?;
                let (name, size) = v.split_once('=').ok_or(format!("--dim {v}: NAME=SIZE"))?;
                let size = size
                    .parse()
                    .map_err(|_| format!("--dim {v}: SIZE is a number"))?;
                o.dims.insert(name.to_string(), size);
            }
            "--check" => o.check = true,
            "--rtol" => o.rtol = number(value()?)?,
            "--atol" => o.atol = number(value()?)?,
            "--min-cosine" => o.min_cosine = Some(f64::from(number(value()?)?)),
            "--profile" => o.profile = true,
            "--iters" => o.iters = value()?.parse().map_err(|_| "--iters takes a number")?,
            flag if flag.starts_with("--") => return Err(format!("unknown flag {flag}")),
            path => o.models.push(path.into()),
        }
    }
    if o.models.is_empty() {
        return Err(USAGE.into());
    }
    Ok(o)
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

/// How one model's check ended.
enum Verdict {
    Pass,
    Fail,
    /// A GPU fault that leaves the CUDA context unusable.
    Lost,
}

fn main() -> ExitCode {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (mut passed, mut failed) = (0, 0);
    for (i, model) in o.models.iter().enumerate() {
        let outcome = catch_unwind(AssertUnwindSafe(|| run(&o, model)));
        let verdict = match outcome {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(e)) => {
                println!("FAIL {}: {e}", model.display());
                if STICKY_ERRORS.iter().any(|s| e.contains(s)) {
                    Verdict::Lost
                } else {
                    Verdict::Fail
                }
            }
            Err(_) => {
                println!("FAIL {}: panicked", model.display());
                Verdict::Fail
            }
        };
        match verdict {
            Verdict::Pass => passed += 1,
            Verdict::Fail => failed += 1,
            Verdict::Lost => {
                failed += 1;
                for rest in &o.models[i + 1..] {
                    println!("SKIP {}: not run, the GPU context was lost", rest.display());
                }
                println!(
                    "{passed} passed, {failed} failed, {} not run",
                    o.models.len() - i - 1
                );
                return ExitCode::from(3);
            }
        }
    }
    if o.models.len() > 1 {
        println!("{passed} passed, {failed} failed");
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The inputs and expected outputs of `MODEL/input_N.pb` and `MODEL/output_N.pb` beside the
/// artifact; `None` when that folder does not exist.
type TestData = (Vec<(String, Tensor)>, Vec<Tensor>);

fn test_data(model: &Path, session: &Session) -> Result<Option<TestData>, String> {
    let dir = model.with_extension("");
    if !dir.join("input_0.pb").is_file() && !dir.join("output_0.pb").is_file() {
        return Ok(None);
    }
    let read = |file: PathBuf| -> Result<Tensor, String> {
        let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        sparkc_onnx::tensor_from_bytes(&bytes)
            .map(Tensor::from)
            .map_err(|e| format!("{}: {e}", file.display()))
    };
    let inputs = session
        .inputs()
        .iter()
        .enumerate()
        .map(|(i, spec)| Ok((spec.name.clone(), read(dir.join(format!("input_{i}.pb")))?)))
        .collect::<Result<_, String>>()?;
    let expected = (0..session.outputs().len())
        .map(|i| dir.join(format!("output_{i}.pb")))
        .take_while(|f| f.is_file())
        .map(read)
        .collect::<Result<_, String>>()?;
    Ok(Some((inputs, expected)))
}

/// How far `got` is from `want`: the largest absolute difference, the cosine similarity, and
/// whether every element is within `atol + rtol * |want|` (NaNs and infinities must agree).
fn compare(got: &Tensor, want: &Tensor, rtol: f32, atol: f32) -> (f32, f64, bool) {
    if got.shape() != want.shape() {
        return (f32::INFINITY, 0.0, false);
    }
    let (g, w) = (got.to_f32(), want.to_f32());
    // A BF16 or FP16 output may differ by one unit in the last place of its own value, and by
    // one at the tensor's largest magnitude (a sum of rounded terms, such as attention's
    // probabilities rounded to BF16 for the tensor cores, errs on that scale).
    let largest = w
        .iter()
        .filter(|v| v.is_finite())
        .fold(0f32, |m, v| m.max(v.abs()));
    let (rtol, atol) = match got.dtype() {
        DType::BF16 => (rtol.max(2f32.powi(-7)), atol.max(largest * 2f32.powi(-8))),
        DType::F16 => (rtol.max(2f32.powi(-10)), atol.max(largest * 2f32.powi(-11))),
        _ => (rtol, atol),
    };
    let (mut worst, mut close) = (0f32, true);
    let (mut dot, mut ng, mut nw) = (0f64, 0f64, 0f64);
    for (&a, &b) in g.iter().zip(&w) {
        let (fa, fb) = (f64::from(a), f64::from(b));
        if a.is_finite() {
            ng += fa * fa;
        }
        if b.is_finite() {
            nw += fb * fb;
        }
        if !a.is_finite() || !b.is_finite() {
            close &= (a.is_nan() && b.is_nan()) || a == b;
            continue;
        }
        dot += fa * fb;
        let d = (a - b).abs();
        worst = worst.max(d);
        close &= d <= atol + rtol * b.abs();
    }
    let (ng, nw) = (ng.sqrt(), nw.sqrt());
    let cosine = if ng == 0.0 && nw == 0.0 {
        1.0
    } else {
        dot / (ng * nw).max(1e-30)
    };
    (worst, cosine, close)
}

fn run(o: &Options, model: &Path) -> Result<Verdict, String> {
    let opened = Instant::now();
    let artifact = Artifact::open(model).map_err(|e| e.to_string())?;
    let session = Session::new(&artifact, o.device).map_err(|e| e.to_string())?;
    let data = test_data(model, &session)?;
    let (named, expected) = match data {
        Some((inputs, expected)) => (inputs, expected),
        None => {
            let mut dims = o.dims.clone();
            for spec in session.inputs() {
                for d in &spec.shape {
                    for f in d.terms.iter().flat_map(|t| t.factors.iter()) {
                        if !f.symbol.is_empty() {
                            dims.entry(f.symbol.clone()).or_insert(DEFAULT_DIM);
                        }
                    }
                }
            }
            (sample_inputs(session.inputs(), &dims, SEED)?, Vec::new())
        }
    };
    let named: Vec<(&str, Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let start = Instant::now();
    let outputs = session.run(&named).map_err(|e| e.to_string())?;
    let first = start.elapsed();
    let mut verdict = Verdict::Pass;
    if o.check {
        let cpu = Session::new(&artifact, Device::Cpu).map_err(|e| e.to_string())?;
        let reference = cpu.run(&named);
        let mut lines = Vec::new();
        let mut ok = true;
        for (i, (name, got)) in outputs.iter().enumerate() {
            let mut line = format!("  {name} {:?}:", got.shape());
            match &reference {
                Ok(reference) => {
                    let (worst, cosine, close) = compare(got, &reference[i].1, o.rtol, o.atol);
                    ok &= close || o.min_cosine.is_some_and(|c| cosine >= c);
                    line += &format!(" cpu max|diff| {worst:.3e} cosine {cosine:.6}");
                }
                Err(e) => line += &format!(" the CPU executor refuses these inputs ({e})"),
            }
            if let Some(want) = expected.get(i) {
                let (worst, _, close) = compare(got, want, o.rtol, o.atol);
                ok &= close || reference.is_ok();
                let verdict = if close { "ok" } else { "differs" };
                line += &format!("; onnx reference {verdict} (max|diff| {worst:.3e})");
            } else if reference.is_err() {
                ok = false;
            }
            lines.push(line);
        }
        if !ok {
            verdict = Verdict::Fail;
        }
        let tag = if ok { "PASS" } else { "FAIL" };
        println!(
            "{tag} {}: {} ({:.2} s with the CPU reference)",
            model.display(),
            session.device(),
            opened.elapsed().as_secs_f64()
        );
        for line in lines {
            println!("{line}");
        }
    } else {
        println!("{}: device {}", model.display(), session.device());
    }
    if o.iters > 0 {
        let time = |label: &str| -> Result<(), String> {
            let mut samples = Vec::with_capacity(o.iters);
            for _ in 0..o.iters {
                let t = Instant::now();
                session.run(&named).map_err(|e| e.to_string())?;
                samples.push(t.elapsed());
            }
            println!(
                "  {label}: median {:.3} ms over {} runs",
                median(samples),
                o.iters
            );
            Ok(())
        };
        println!(
            "  first run {:.3} ms (plans the arena, captures the graph on a GPU)",
            first.as_secs_f64() * 1e3
        );
        time("runs")?;
        if session.device().starts_with("cuda") {
            session.set_cuda_graphs(false);
            time("plain launches, no graph")?;
            session.set_cuda_graphs(true);
        }
    }
    if o.profile {
        let values: Vec<sparkc_cpu::Value> = named
            .iter()
            .map(|(_, t)| sparkc_cpu::Value::Tensor(sparkc_cpu::Array::from_tensor(t.as_ir())))
            .collect();
        let mut best: Option<Vec<sparkc_runtime::KernelTiming>> = None;
        for _ in 0..PROFILE_RUNS {
            let Some(kernels) = session
                .profile_kernels(values.clone())
                .map_err(|e| e.to_string())?
            else {
                break;
            };
            best = Some(match best {
                None => kernels,
                Some(b) => b
                    .into_iter()
                    .zip(kernels)
                    .map(|(a, k)| if k.ms < a.ms { k } else { a })
                    .collect(),
            });
        }
        match best {
            None => println!("  --profile times kernels on a GPU only"),
            Some(mut kernels) => {
                let total: f32 = kernels.iter().map(|k| k.ms).sum();
                kernels.sort_by(|a, b| b.ms.total_cmp(&a.ms));
                println!(
                    "  {} kernels, {total:.3} ms in all (each the best of {PROFILE_RUNS} runs):",
                    kernels.len()
                );
                for k in kernels.iter().take(25) {
                    println!(
                        "    {:>8.4} ms {:>5.1}%  {:<28} {}",
                        k.ms,
                        100.0 * k.ms / total.max(1e-12),
                        k.node,
                        k.variant
                    );
                }
            }
        }
    }
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BF16 tensor of values BF16 holds exactly (their f32 bits' high halves).
    fn bf16(values: &[f32]) -> Tensor {
        let bytes = values
            .iter()
            .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
            .collect();
        Tensor::new(DType::BF16, vec![values.len()], bytes).expect("a tensor")
    }

    #[test]
    fn half_precision_outputs_get_their_own_last_place() {
        let want = bf16(&[1.0, 0.25]);
        // One unit in the last place at 1.0 passes at a tight tolerance.
        assert!(compare(&bf16(&[1.0078125, 0.25]), &want, 1e-3, 1e-5).2);
        // So does one unit at the largest magnitude, on a smaller element.
        assert!(compare(&bf16(&[1.0, 0.25390625]), &want, 1e-3, 1e-5).2);
        // Three units at 1.0 do not.
        assert!(!compare(&bf16(&[1.0234375, 0.25]), &want, 1e-3, 1e-5).2);
        // FP32 outputs keep the tolerance asked for.
        let f32_want = Tensor::from_f32(vec![2], &[1.0, 0.25]);
        let f32_got = Tensor::from_f32(vec![2], &[1.0078125, 0.25]);
        assert!(!compare(&f32_got, &f32_want, 1e-3, 1e-5).2);
    }
}
