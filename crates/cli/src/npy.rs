//! NumPy `.npy` files to and from runtime arrays, through the `npyz` crate.

use anyhow::{bail, Context, Result};
use half::f16;
use npyz::{TypeChar, WriterBuilder};
use sparkc_cpu::{Array, Data};
use std::io::{BufReader, BufWriter};
use std::path::Path;

/// Reads a C-ordered `.npy` file of a numeric or bool dtype.
pub fn read(path: &Path) -> Result<Array> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let npy = npyz::NpyFile::new(BufReader::new(file))
        .with_context(|| format!("{} is not a .npy file", path.display()))?;
    if npy.order() == npyz::Order::Fortran {
        bail!(
            "{} is in Fortran order; save it with numpy.ascontiguousarray",
            path.display()
        );
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let npyz::DType::Plain(ts) = npy.dtype() else {
        bail!(
            "{} holds a structured dtype; only plain numeric and bool arrays are read",
            path.display()
        );
    };
    let read_error = || format!("cannot read the data of {}", path.display());
    let data = match (ts.type_char(), ts.size_field()) {
        (TypeChar::Float, 4) => Data::F32(npy.into_vec().with_context(read_error)?),
        (TypeChar::Float, 8) => Data::F64(npy.into_vec().with_context(read_error)?),
        (TypeChar::Float, 2) => Data::F16(npy.into_vec::<f16>().with_context(read_error)?),
        (TypeChar::Int, 1) => Data::I8(npy.into_vec().with_context(read_error)?),
        (TypeChar::Int, 2) => Data::I16(npy.into_vec().with_context(read_error)?),
        (TypeChar::Int, 4) => Data::I32(npy.into_vec().with_context(read_error)?),
        (TypeChar::Int, 8) => Data::I64(npy.into_vec().with_context(read_error)?),
        (TypeChar::Uint, 1) => Data::U8(npy.into_vec().with_context(read_error)?),
        (TypeChar::Uint, 2) => Data::U16(npy.into_vec().with_context(read_error)?),
        (TypeChar::Uint, 4) => Data::U32(npy.into_vec().with_context(read_error)?),
        (TypeChar::Uint, 8) => Data::U64(npy.into_vec().with_context(read_error)?),
        (TypeChar::Bool, 1) => Data::Bool(npy.into_vec().with_context(read_error)?),
        _ => bail!(
            "{} has dtype {ts}, which sparkc does not read",
            path.display()
        ),
    };
    if data.len() != shape.iter().product::<usize>() {
        bail!(
            "{} holds {} values for shape {shape:?}",
            path.display(),
            data.len()
        );
    }
    Ok(Array::new(shape, data))
}

fn write_as<T: npyz::AutoSerialize>(
    path: &Path,
    shape: &[u64],
    values: impl IntoIterator<Item = T>,
) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(BufWriter::new(file))
        .begin_nd()?;
    writer.extend(values)?;
    writer.finish()?;
    Ok(())
}

/// Writes an array as `.npy` (bf16 and the 8/4/2-bit types as float32, which numpy lacks).
pub fn write(path: &Path, array: &Array) -> Result<()> {
    let shape: Vec<u64> = array.shape.iter().map(|&d| d as u64).collect();
    match &array.data {
        Data::F32(v) => write_as(path, &shape, v.iter().copied()),
        Data::F64(v) => write_as(path, &shape, v.iter().copied()),
        Data::F16(v) => write_as(path, &shape, v.iter().copied()),
        Data::I8(v) => write_as(path, &shape, v.iter().copied()),
        Data::I16(v) => write_as(path, &shape, v.iter().copied()),
        Data::I32(v) => write_as(path, &shape, v.iter().copied()),
        Data::I64(v) => write_as(path, &shape, v.iter().copied()),
        Data::U8(v) => write_as(path, &shape, v.iter().copied()),
        Data::U16(v) => write_as(path, &shape, v.iter().copied()),
        Data::U32(v) => write_as(path, &shape, v.iter().copied()),
        Data::U64(v) => write_as(path, &shape, v.iter().copied()),
        Data::Bool(v) => write_as(path, &shape, v.iter().copied()),
        other => write_as(path, &shape, other.to_f32s()),
    }
}
