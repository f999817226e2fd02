//! ONNX tensors and types to IR tensors and types: every data encoding, external data included.

use crate::error::{ImportError, Result};
use bytes::Bytes;
use onnx_protobuf::{tensor_proto::DataLocation, TensorProto, TypeProto};
use sparkc_ir::{DType, Dim, Tensor, TensorType, ValueType};
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

/// Largest size accepted for one dimension (2^32).
pub const MAX_DIM: i64 = 1 << 32;
/// Largest element count accepted for one tensor (2^36, more than the 128 GB of a DGX Spark holds as bytes).
pub const MAX_ELEMENTS: u64 = 1 << 36;

/// Maps an ONNX `TensorProto.DataType` code to an IR dtype.
pub fn dtype_from_onnx(code: i32) -> Result<DType, String> {
    Ok(match code {
        1 => DType::F32,
        2 => DType::U8,
        3 => DType::I8,
        4 => DType::U16,
        5 => DType::I16,
        6 => DType::I32,
        7 => DType::I64,
        9 => DType::Bool,
        10 => DType::F16,
        11 => DType::F64,
        12 => DType::U32,
        13 => DType::U64,
        16 => DType::BF16,
        17 => DType::F8E4M3FN,
        18 => DType::F8E4M3FNUZ,
        19 => DType::F8E5M2,
        20 => DType::F8E5M2FNUZ,
        21 => DType::U4,
        22 => DType::I4,
        23 => DType::F4E2M1,
        24 => DType::F8E8M0,
        8 => return Err("string tensors are not supported".into()),
        14 | 15 => return Err("complex tensors are not supported".into()),
        25 => DType::U2,
        26 => DType::I2,
        0 => return Err("the element type is undefined (0)".into()),
        other => return Err(format!("unknown element type code {other}")),
    })
}

/// Maps an IR dtype to its ONNX `TensorProto.DataType` code.
pub fn dtype_to_onnx(dtype: DType) -> i32 {
    (1..=26)
        .find(|&code| dtype_from_onnx(code) == Ok(dtype))
        .unwrap_or(0)
}

/// Checks a declared dim and converts it.
pub fn checked_dim(value: i64) -> Result<i64, String> {
    if value < 0 {
        return Err(format!("dimension {value} is negative"));
    }
    if value > MAX_DIM {
        return Err(format!(
            "dimension {value} exceeds the supported maximum of {MAX_DIM}"
        ));
    }
    Ok(value)
}

/// Converts an ONNX type; unnamed unknown dims become symbols named after the value and axis.
pub fn value_type(name: &str, ty: &TypeProto) -> Result<ValueType, String> {
    use onnx_protobuf::type_proto::Value;
    match &ty.value {
        Some(Value::TensorType(t)) => {
            let dtype = dtype_from_onnx(t.elem_type)?;
            let shape = match t.shape.as_ref() {
                None => None,
                Some(shape) => Some(
                    shape
                        .dim
                        .iter()
                        .enumerate()
                        .map(|(axis, d)| {
                            use onnx_protobuf::tensor_shape_proto::dimension::Value as D;
                            Ok(match &d.value {
                                Some(D::DimValue(v)) => Dim::known(checked_dim(*v)?),
                                Some(D::DimParam(p)) if !p.is_empty() => Dim::sym(p),
                                _ => Dim::sym(&format!("{name}:{axis}")),
                            })
                        })
                        .collect::<Result<Vec<_>, String>>()?,
                ),
            };
            Ok(ValueType::Tensor(TensorType { dtype, shape }))
        }
        Some(Value::SequenceType(s)) => Ok(ValueType::Sequence(Box::new(value_type(
            name,
            &s.elem_type,
        )?))),
        Some(Value::OptionalType(o)) => Ok(ValueType::Optional(Box::new(value_type(
            name,
            &o.elem_type,
        )?))),
        Some(_) => Err("map and sparse tensor values are not supported".into()),
        None => Err("the value has no type".into()),
    }
}

/// Memory maps of external data files, one per file, shared by every tensor stored in it.
#[derive(Default)]
pub struct ExternalFiles {
    base: Option<PathBuf>,
    maps: HashMap<PathBuf, Bytes>,
    section: Option<(String, Bytes)>,
}

impl ExternalFiles {
    /// External data is resolved relative to `base`, the model's folder (`None`: not allowed).
    pub fn new(base: Option<PathBuf>) -> ExternalFiles {
        ExternalFiles {
            base,
            maps: HashMap::new(),
            section: None,
        }
    }

    /// External data only from `section`, an in-memory blob its tensors name as `location`.
    pub fn section(location: &str, section: Bytes) -> ExternalFiles {
        ExternalFiles {
            section: Some((location.to_string(), section)),
            ..ExternalFiles::default()
        }
    }

    fn resolve(&self, location: &str) -> Result<PathBuf, String> {
        let base = self.base.as_ref().ok_or(
            "external data needs the model's folder, but the model was not loaded from a file",
        )?;
        let relative = Path::new(location);
        if relative.is_absolute() {
            return Err(format!("external data path '{location}' is absolute; it must be relative to the model's folder"));
        }
        if relative.components().any(|c| {
            matches!(
                c,
                Component::ParentDir | Component::Prefix(_) | Component::RootDir
            )
        }) {
            return Err(format!(
                "external data path '{location}' escapes the model's folder"
            ));
        }
        let path = base.join(relative);
        let canonical = path
            .canonicalize()
            .map_err(|e| format!("external data file '{}': {e}", path.display()))?;
        let canonical_base = base
            .canonicalize()
            .map_err(|e| format!("model folder '{}': {e}", base.display()))?;
        if !canonical.starts_with(&canonical_base) {
            return Err(format!(
                "external data path '{location}' leads outside the model's folder"
            ));
        }
        Ok(canonical)
    }

    fn bytes(&mut self, location: &str) -> Result<Bytes, String> {
        if let Some((name, section)) = &self.section {
            if name == location {
                return Ok(section.clone());
            }
            return Err(format!(
                "external data location '{location}' is not the embedded section '{name}'"
            ));
        }
        let path = self.resolve(location)?;
        if let Some(bytes) = self.maps.get(&path) {
            return Ok(bytes.clone());
        }
        let file = std::fs::File::open(&path)
            .map_err(|e| format!("external data file '{}': {e}", path.display()))?;
        // SAFETY: the map is read-only; a file changed underneath a running import is the user's
        // own race, as with any memory-mapped model loader.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| format!("cannot map '{}': {e}", path.display()))?;
        let bytes = Bytes::from_owner(map);
        self.maps.insert(path, bytes.clone());
        Ok(bytes)
    }
}

fn le_bytes<T: Copy, const N: usize>(values: &[T], to: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|&v| to(v)).collect()
}

/// Converts a `TensorProto`, taking its raw bytes without copying and mapping external data.
pub fn tensor_from_proto(
    proto: &mut TensorProto,
    external: &mut ExternalFiles,
) -> Result<Tensor, String> {
    let dtype = dtype_from_onnx(proto.data_type)?;
    let mut shape = Vec::with_capacity(proto.dims.len());
    let mut count: u64 = 1;
    for &d in &proto.dims {
        let d = checked_dim(d)?;
        count = count.saturating_mul(d as u64);
        shape.push(d as usize);
    }
    if count > MAX_ELEMENTS {
        return Err(format!(
            "{count} elements exceed the supported maximum of {MAX_ELEMENTS}"
        ));
    }
    let count = count as usize;
    let expected = dtype.storage_bytes(count).ok_or("tensor too large")?;
    let external_location = proto.data_location.enum_value() == Ok(DataLocation::EXTERNAL);
    let data: Bytes = if external_location {
        let entry = |key: &str| {
            proto
                .external_data
                .iter()
                .find(|e| e.key == key)
                .map(|e| e.value.clone())
        };
        let location = entry("location").ok_or("external data has no 'location'")?;
        let parse = |key: &str| -> Result<Option<usize>, String> {
            entry(key)
                .map(|v| {
                    v.parse::<usize>()
                        .map_err(|_| format!("external data '{key}' is not a number: '{v}'"))
                })
                .transpose()
        };
        let offset = parse("offset")?.unwrap_or(0);
        let file = external.bytes(&location)?;
        let length = parse("length")?.unwrap_or(file.len().saturating_sub(offset));
        let end = offset
            .checked_add(length)
            .filter(|&end| end <= file.len())
            .ok_or_else(|| {
                format!(
                "external data range {offset}..{} lies beyond the end of '{location}' ({} bytes)",
                offset.saturating_add(length),
                file.len()
            )
            })?;
        file.slice(offset..end)
    } else if !proto.raw_data.is_empty() {
        Bytes::from(std::mem::take(&mut proto.raw_data))
    } else {
        let data = match dtype {
            DType::F32 => le_bytes(&proto.float_data, f32::to_le_bytes),
            DType::F64 => le_bytes(&proto.double_data, f64::to_le_bytes),
            DType::I64 => le_bytes(&proto.int64_data, i64::to_le_bytes),
            DType::U64 => le_bytes(&proto.uint64_data, u64::to_le_bytes),
            DType::U32 => le_bytes(&proto.uint64_data, |v| (v as u32).to_le_bytes()),
            DType::I32 => le_bytes(&proto.int32_data, i32::to_le_bytes),
            DType::I16 | DType::U16 | DType::F16 | DType::BF16 => {
                le_bytes(&proto.int32_data, |v| (v as u16).to_le_bytes())
            }
            // 8-bit types hold one value, packed 4-bit types one byte of two values, per int32.
            _ => proto.int32_data.iter().map(|&v| v as u8).collect(),
        };
        Bytes::from(data)
    };
    if data.len() != expected {
        return Err(format!(
            "{dtype}{shape:?} needs {expected} bytes of data, found {}",
            data.len()
        ));
    }
    Tensor::new(dtype, shape, data).map_err(|e| e.to_string())
}

/// Converts a standalone `TensorProto` (a test's input or output file).
pub fn tensor_from_bytes(bytes: &[u8]) -> Result<Tensor> {
    use protobuf::Message;
    let mut proto = TensorProto::parse_from_bytes(bytes)
        .map_err(|e| ImportError::Model(format!("not a TensorProto: {e}")))?;
    let name = proto.name.clone();
    tensor_from_proto(&mut proto, &mut ExternalFiles::new(None)).map_err(|message| {
        ImportError::Value {
            what: "tensor",
            name,
            message,
        }
    })
}
