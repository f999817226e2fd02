//! Compile-time benchmark: the standard pipeline on every whole model of the test set, timed
//! against importing the same model in the same process, with the figures `docs/passes.md`
//! records (nodes, kernels and intermediate traffic before and after).
//!
//! Needs the generated test data (`bash scripts/test.sh` makes it). Run with
//! `cargo bench -p sparkc-passes`.

use sparkc_passes::stats::stats;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const RUNS: usize = 5;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn models(root: &Path) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    let light = root.join("light");
    if let Ok(entries) = std::fs::read_dir(&light) {
        let mut names: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
            .collect();
        names.sort();
        for path in names {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            found.push((name, path));
        }
    }
    let generated = [
        "bert_encoder",
        "bert_deep32",
        "gpt_decoder",
        "gpt_decode_step",
        "einsum_encoder",
        "lstm_tagger",
        "mobilenet",
    ];
    for name in generated {
        let path = root.join("models").join(name).join("model.onnx");
        if path.exists() {
            found.push((name.to_string(), path));
        }
    }
    found
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/generated");
    let models = models(&root);
    if models.is_empty() {
        eprintln!(
            "no models under {}: run `bash scripts/test.sh` first",
            root.display()
        );
        return;
    }
    println!("| model | nodes | kernels | intermediate traffic (MiB) | import ms | optimize ms | optimize / import |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (name, path) in models {
        let mut imports = Vec::new();
        let mut optimizes = Vec::new();
        let mut figures = None;
        for _ in 0..RUNS {
            let start = Instant::now();
            let mut model = match sparkc_onnx::load(&path) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("{name}: {e}");
                    break;
                }
            };
            imports.push(start.elapsed());
            let before = stats(&model.graph);
            let start = Instant::now();
            let result = sparkc_passes::standard().and_then(|mut p| p.run(&mut model.graph));
            optimizes.push(start.elapsed());
            if let Err(e) = result {
                eprintln!("{name}: {e}");
                break;
            }
            figures = Some((before, stats(&model.graph)));
        }
        let Some((before, after)) = figures else {
            continue;
        };
        let (import, optimize) = (median(imports), median(optimizes));
        println!(
            "| {name} | {} → {} | {} → {} | {:.2} → {:.2} | {:.1} | {:.1} | {:.2} |",
            before.nodes,
            after.nodes,
            before.kernels,
            after.kernels,
            before.intermediate_bytes / 1048576.0,
            after.intermediate_bytes / 1048576.0,
            import.as_secs_f64() * 1e3,
            optimize.as_secs_f64() * 1e3,
            optimize.as_secs_f64() / import.as_secs_f64()
        );
    }
}
