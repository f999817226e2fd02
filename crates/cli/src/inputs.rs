//! Model inputs from the command line: `.npy` files, or random values of the declared shapes.

use crate::npy;
use anyhow::{anyhow, bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sparkc_cpu::{Array, Data, Executor, Value};
use sparkc_ir::{DType, ValueType};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where the inputs come from, shared by `run` and `bench`.
#[derive(clap::Args, Clone, Debug)]
pub struct InputArgs {
    /// An input as NAME=FILE.npy (repeat for each input).
    #[arg(long = "input", value_name = "NAME=FILE")]
    pub inputs: Vec<String>,
    /// Fill inputs not given with `--input` with random values of their declared shapes.
    #[arg(long)]
    pub random_inputs: bool,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Size of a symbolic dim, as NAME=SIZE (repeat for each dim).
    #[arg(long = "dim", value_name = "NAME=SIZE")]
    pub dims: Vec<String>,
}

fn split_pair<'a>(text: &'a str, what: &str) -> Result<(&'a str, &'a str)> {
    text.split_once('=')
        .filter(|(name, value)| !name.is_empty() && !value.is_empty())
        .ok_or_else(|| anyhow!("{what} '{text}' is not of the form NAME=VALUE"))
}

/// The model's inputs, one line each, for error messages.
pub fn expected(exec: &Executor) -> String {
    exec.inputs()
        .iter()
        .map(|(name, ty)| format!("  {name}: {ty}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Builds the inputs of `exec` in its order, and checks them against the declared types.
pub fn build(exec: &Executor, args: &InputArgs) -> Result<Vec<Value>> {
    let declared = exec.inputs();
    let mut given: BTreeMap<String, Array> = BTreeMap::new();
    for item in &args.inputs {
        let (name, file) = split_pair(item, "--input")?;
        if !declared.iter().any(|(n, _)| n == name) {
            bail!(
                "the model has no input '{name}'; it takes:\n{}",
                expected(exec)
            );
        }
        let array = npy::read(&PathBuf::from(file)).with_context(|| format!("input '{name}'"))?;
        given.insert(name.to_string(), array);
    }
    let mut dims: BTreeMap<String, usize> = BTreeMap::new();
    for item in &args.dims {
        let (name, size) = split_pair(item, "--dim")?;
        let size = size
            .parse()
            .map_err(|_| anyhow!("--dim {name}: '{size}' is not a size"))?;
        dims.insert(name.to_string(), size);
    }
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut values = Vec::with_capacity(declared.len());
    for (name, ty) in &declared {
        let array = match given.remove(name) {
            Some(array) => array,
            None if args.random_inputs => random(name, ty, &dims, &mut rng)?,
            None => bail!(
                "input '{name}' is not given (use --input {name}=FILE.npy or --random-inputs); the model takes:\n{}",
                expected(exec)
            ),
        };
        values.push(Value::Tensor(array));
    }
    exec.check_inputs(&values).map_err(|e| anyhow!("{e}"))?;
    Ok(values)
}

fn random(
    name: &str,
    ty: &ValueType,
    dims: &BTreeMap<String, usize>,
    rng: &mut StdRng,
) -> Result<Array> {
    let ValueType::Tensor(t) = ty else {
        bail!("input '{name}' is {ty}; random values are made only for tensors");
    };
    let declared = t
        .shape
        .as_ref()
        .ok_or_else(|| anyhow!("input '{name}' has no declared shape; pass it with --input"))?;
    let shape: Vec<usize> = declared
        .iter()
        .map(|d| match d.as_const() {
            Some(c) => Ok(c as usize),
            None => dims.get(&d.to_string()).copied().ok_or_else(|| {
                anyhow!(
                    "dim '{d}' of input '{name}' is symbolic; give its size with --dim {d}=SIZE"
                )
            }),
        })
        .collect::<Result<_>>()?;
    let len = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= 1 << 32)
        .ok_or_else(|| {
            anyhow!("input '{name}' of shape {shape:?} is too large to fill with random values")
        })?;
    let data = match t.dtype {
        DType::Bool => Data::Bool((0..len).map(|_| rng.random::<bool>()).collect()),
        d if d.is_integer() => {
            Data::from_i64s(d, (0..len).map(|_| rng.random_range(0..10)).collect())
        }
        d if d.is_float() => Data::from_f32s(
            d,
            (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
        ),
        d => bail!("input '{name}' has element type {d}, which has no random generator"),
    };
    Ok(Array::new(shape, data))
}
