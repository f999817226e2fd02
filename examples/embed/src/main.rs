//! Embedding the sparkc runtime: load a `.spark` artifact, run it on the best device, print
//! the outputs. The application links the runtime only (no LLVM, no optimizer).
//!
//! ```text
//! sparkc compile examples/models/tiny_cnn.onnx -o tiny_cnn.spark
//! cargo run -p sparkc-embed-example -- tiny_cnn.spark
//! ```

use sparkc_runtime::{Artifact, Device, Session, Tensor};
use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: sparkc-embed-example MODEL.spark")?;
    let artifact = Artifact::open(path.as_ref())?;
    let session = Session::new(&artifact, Device::Auto)?;
    println!("device: {}", session.device());
    // Every input gets 0.5s in its declared shape, symbolic dims at 1 (tiny_cnn: one image).
    let mut inputs = Vec::new();
    for spec in session.inputs() {
        let shape: Vec<usize> = spec
            .shape
            .iter()
            .map(|d| sparkc_runtime::static_size(d).unwrap_or(1) as usize)
            .collect();
        let count = shape.iter().product();
        inputs.push((
            spec.name.as_str(),
            Tensor::from_f32(shape, &vec![0.5; count]),
        ));
    }
    for (name, tensor) in session.run(&inputs)? {
        let values = tensor.to_f32();
        println!(
            "{name}: {:?} first {:?}",
            tensor.shape(),
            &values[..values.len().min(4)]
        );
    }
    Ok(())
}
