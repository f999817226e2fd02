//! Typed access to a node's attributes, with the spec's defaults and type checks.

use onnx_protobuf::{attribute_proto::AttributeType, AttributeProto, NodeProto, TensorProto};

/// The attributes of one node.
pub struct Attrs<'a> {
    node: &'a NodeProto,
}

fn kind(a: &AttributeProto) -> AttributeType {
    match a.type_.enum_value() {
        Ok(AttributeType::UNDEFINED) | Err(_) => {
            // Old exporters leave `type` unset; the field that is filled tells the kind.
            if !a.ints.is_empty() {
                AttributeType::INTS
            } else if !a.floats.is_empty() {
                AttributeType::FLOATS
            } else if !a.strings.is_empty() {
                AttributeType::STRINGS
            } else if a.t.is_some() {
                AttributeType::TENSOR
            } else if a.g.is_some() {
                AttributeType::GRAPH
            } else if !a.s.is_empty() {
                AttributeType::STRING
            } else if a.f != 0.0 {
                AttributeType::FLOAT
            } else {
                AttributeType::INT
            }
        }
        Ok(k) => k,
    }
}

impl<'a> Attrs<'a> {
    /// Wraps a node's attributes.
    pub fn new(node: &'a NodeProto) -> Attrs<'a> {
        Attrs { node }
    }

    fn get(&self, name: &str, want: AttributeType) -> Result<Option<&'a AttributeProto>, String> {
        match self.node.attribute.iter().find(|a| a.name == name) {
            None => Ok(None),
            Some(a) if kind(a) == want => Ok(Some(a)),
            Some(a) => Err(format!(
                "attribute '{name}' must be {}, found {}",
                type_name(want),
                type_name(kind(a))
            )),
        }
    }

    /// True when the attribute is present.
    pub fn has(&self, name: &str) -> bool {
        self.node.attribute.iter().any(|a| a.name == name)
    }

    /// An `int` attribute, or `default`.
    pub fn int(&self, name: &str, default: i64) -> Result<i64, String> {
        Ok(self.get(name, AttributeType::INT)?.map_or(default, |a| a.i))
    }

    /// An `int` attribute read as a flag.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, String> {
        Ok(self.int(name, i64::from(default))? != 0)
    }

    /// An `int` attribute, or `None` when absent.
    pub fn opt_int(&self, name: &str) -> Result<Option<i64>, String> {
        Ok(self.get(name, AttributeType::INT)?.map(|a| a.i))
    }

    /// A required `int` attribute.
    pub fn req_int(&self, name: &str) -> Result<i64, String> {
        self.get(name, AttributeType::INT)?
            .map(|a| a.i)
            .ok_or_else(|| format!("required attribute '{name}' is missing"))
    }

    /// A `float` attribute, or `default`.
    pub fn float(&self, name: &str, default: f32) -> Result<f32, String> {
        Ok(self
            .get(name, AttributeType::FLOAT)?
            .map_or(default, |a| a.f))
    }

    /// An `ints` attribute, empty when absent.
    pub fn ints(&self, name: &str) -> Result<Vec<i64>, String> {
        Ok(self
            .get(name, AttributeType::INTS)?
            .map_or_else(Vec::new, |a| a.ints.clone()))
    }

    /// An `ints` attribute, `None` when absent.
    pub fn opt_ints(&self, name: &str) -> Result<Option<Vec<i64>>, String> {
        Ok(self.get(name, AttributeType::INTS)?.map(|a| a.ints.clone()))
    }

    /// A `floats` attribute, empty when absent.
    pub fn floats(&self, name: &str) -> Result<Vec<f32>, String> {
        Ok(self
            .get(name, AttributeType::FLOATS)?
            .map_or_else(Vec::new, |a| a.floats.clone()))
    }

    /// A `string` attribute, or `default`.
    pub fn string(&self, name: &str, default: &str) -> Result<String, String> {
        match self.get(name, AttributeType::STRING)? {
            None => Ok(default.to_string()),
            Some(a) => String::from_utf8(a.s.clone())
                .map_err(|_| format!("attribute '{name}' is not UTF-8")),
        }
    }

    /// A `strings` attribute, empty when absent.
    pub fn strings(&self, name: &str) -> Result<Vec<String>, String> {
        self.get(name, AttributeType::STRINGS)?
            .map_or(Ok(Vec::new()), |a| {
                a.strings
                    .iter()
                    .map(|s| {
                        String::from_utf8(s.clone())
                            .map_err(|_| format!("attribute '{name}' is not UTF-8"))
                    })
                    .collect()
            })
    }

    /// A `tensor` attribute.
    pub fn tensor(&self, name: &str) -> Result<Option<&'a TensorProto>, String> {
        Ok(self
            .get(name, AttributeType::TENSOR)?
            .and_then(|a| a.t.as_ref()))
    }
}

fn type_name(kind: AttributeType) -> &'static str {
    match kind {
        AttributeType::INT => "an int",
        AttributeType::INTS => "a list of ints",
        AttributeType::FLOAT => "a float",
        AttributeType::FLOATS => "a list of floats",
        AttributeType::STRING => "a string",
        AttributeType::STRINGS => "a list of strings",
        AttributeType::TENSOR => "a tensor",
        AttributeType::TENSORS => "a list of tensors",
        AttributeType::GRAPH => "a graph",
        AttributeType::GRAPHS => "a list of graphs",
        AttributeType::SPARSE_TENSOR | AttributeType::SPARSE_TENSORS => "a sparse tensor",
        AttributeType::TYPE_PROTO | AttributeType::TYPE_PROTOS => "a type",
        AttributeType::UNDEFINED => "undefined",
    }
}
