//! Integer products read only as floats — `Cast(MatMulInteger(a, b, a_zero, b_zero), to=float)`
//! and `Cast(ConvInteger(x, w, x_zero, w_zero), to=float)`, as onnxruntime's dynamic
//! quantization writes every linear layer and convolution — rewritten as the float product of
//! `DequantizeLinear(codes, 1, zero)` operands: the form the quantized products fold (`qfold`)
//! and the GPU's integer tensor cores read. The codes minus their zero points are the same
//! integers, so the product is the cast integer product; one summed in f32 rather than in
//! integers (the CPU, or a GPU without an integer `mma`) rounds only partial sums beyond 2^24.

use crate::edit::{add_tensor_node, fresh_name, has_output, readers, take_place};
use crate::manager::{Pass, PassError};
use sparkc_ir::{DType, Dim, Graph, NodeId, Op, Tensor, TensorType, ValueRef};

/// Rewrites `MatMulInteger` and `ConvInteger` read only through casts to f32 as products of
/// dequantized codes.
pub struct IntegerProducts;

impl Pass for IntegerProducts {
    fn name(&self) -> &'static str {
        "integer-products"
    }

    fn run(&mut self, graph: &mut Graph) -> Result<String, PassError> {
        let mut rewritten = 0;
        let products: Vec<NodeId> = graph
            .topo_order()?
            .into_iter()
            .filter(|&id| float_form(&graph.node(id).op).is_some())
            .collect();
        for id in products {
            if rewrite(graph, id).is_some() {
                rewritten += 1;
            }
        }
        Ok(format!(
            "{rewritten} integer products read as floats became products of dequantized codes"
        ))
    }
}

/// How a zero point may vary over its operand.
#[derive(Clone, Copy)]
enum Zero {
    /// One for the whole operand.
    Single,
    /// One for the whole operand, or one per index of `axis` of a plain matrix.
    PerMatrixAxis(i64),
    /// One for the whole operand, or one per index of axis 0 (a convolution's output channel).
    PerChannel,
}

/// The float product an integer product becomes, and how each operand's zero point may vary.
fn float_form(op: &Op) -> Option<(Op, [Zero; 2])> {
    match op {
        Op::MatMulInteger => Some((Op::MatMul, [Zero::PerMatrixAxis(0), Zero::PerMatrixAxis(1)])),
        Op::ConvInteger(attrs) => Some((Op::Conv(attrs.clone()), [Zero::Single, Zero::PerChannel])),
        _ => None,
    }
}

/// The static shape of `v`, if it has one.
fn static_shape(graph: &Graph, v: ValueRef) -> Option<Vec<usize>> {
    graph
        .value(v)
        .ty
        .as_tensor()?
        .shape
        .as_ref()?
        .iter()
        .map(|d| d.as_const().and_then(|d| usize::try_from(d).ok()))
        .collect()
}

/// The axis along which `zero` gives one zero point per index (`Some(None)`: one for the whole
/// operand), or `None` when it varies in a way `how` does not allow or its shape is unknown.
fn zero_axis(
    graph: &Graph,
    codes: ValueRef,
    zero: Option<ValueRef>,
    how: Zero,
) -> Option<Option<i64>> {
    let Some(z) = zero else {
        return Some(None);
    };
    let rank = graph.value(codes).ty.as_tensor()?.shape.as_ref()?.len();
    let z_shape = static_shape(graph, z)?;
    if z_shape.iter().product::<usize>() <= 1 {
        return Some(None);
    }
    match how {
        Zero::PerMatrixAxis(axis) if rank == 2 && z_shape.len() == 1 => Some(Some(axis)),
        Zero::PerChannel if z_shape.len() == 1 => Some(Some(0)),
        _ => None,
    }
}

/// `DequantizeLinear(codes, 1, zero)`: the codes minus their zero point (one for the tensor,
/// or one per index of `axis`), as f32.
fn centered(
    graph: &mut Graph,
    codes: ValueRef,
    zero: Option<ValueRef>,
    axis: Option<i64>,
) -> Option<ValueRef> {
    let zero_shape = match zero {
        Some(z) => static_shape(graph, z)?,
        None => Vec::new(),
    };
    let shape = graph.value(codes).ty.as_tensor()?.shape.clone()?;
    let ones = vec![1.0; zero_shape.iter().product()];
    let scale = Tensor::from_f64s(DType::F32, zero_shape, &ones).ok()?;
    let codes_name = graph.value(codes).name.clone();
    let scale = graph.add_const(
        &fresh_name(graph, &format!("{codes_name}_unit_scale")),
        scale,
    );
    let name = fresh_name(graph, &format!("{codes_name}_centered"));
    let op = Op::DequantizeLinear {
        axis: axis.unwrap_or(1),
        block_size: 0,
        output_dtype: None,
    };
    Some(add_tensor_node(
        graph,
        name,
        op,
        &[Some(codes), Some(scale), zero],
        TensorType::new(DType::F32, shape),
    ))
}

/// Rewrites one integer product whose every reader casts it to f32; `None` when it has another
/// reader, is a graph output, or has zero points a `DequantizeLinear` cannot express.
fn rewrite(graph: &mut Graph, id: NodeId) -> Option<()> {
    let (op, zeros) = float_form(&graph.node(id).op)?;
    let product = ValueRef {
        node: id,
        output: 0,
    };
    let casts = readers(graph, product);
    let all_casts = casts
        .iter()
        .all(|&(reader, _)| matches!(graph.node(reader).op, Op::Cast { to: DType::F32, .. }));
    if casts.is_empty() || !all_casts || has_output(graph, id) {
        return None;
    }
    let inputs = graph.inputs_of(id);
    let operands = [inputs.first().copied()??, inputs.get(1).copied()??];
    let zero_points = [2, 3].map(|slot| inputs.get(slot).copied().flatten());
    let shape: Vec<Dim> = graph.value(product).ty.as_tensor()?.shape.clone()?;
    // Decided before anything is added, so a refusal leaves the graph as it was.
    let axes = [
        zero_axis(graph, operands[0], zero_points[0], zeros[0])?,
        zero_axis(graph, operands[1], zero_points[1], zeros[1])?,
    ];
    let mut floats = Vec::with_capacity(2);
    for k in 0..2 {
        floats.push(Some(centered(graph, operands[k], zero_points[k], axes[k])?));
    }
    let name = fresh_name(graph, &format!("{}_as_float", graph.node(id).name));
    let float_product =
        add_tensor_node(graph, name, op, &floats, TensorType::new(DType::F32, shape));
    for (cast, _) in casts {
        let cast_out = ValueRef {
            node: cast,
            output: 0,
        };
        take_place(graph, cast_out, float_product);
        graph.dag.remove_node(cast);
    }
    graph.dag.remove_node(id);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::IntegerProducts;
    use crate::testing::{ops, push, run_checked};
    use sparkc_ir::op::{AutoPad, ConvAttrs, Layout};
    use sparkc_ir::{DType, Dim, Graph, Op, Tensor, TensorType, ValueType};

    fn input(g: &mut Graph, name: &str, dtype: DType, dims: &[i64]) -> sparkc_ir::ValueRef {
        let dims = dims.iter().map(|&d| Dim::known(d)).collect();
        g.add_input(name, ValueType::Tensor(TensorType::new(dtype, dims)))
    }

    fn i8_tensor(shape: Vec<usize>, values: Vec<i8>) -> Tensor {
        let bytes: Vec<u8> = values.iter().map(|&v| v as u8).collect();
        Tensor::new(DType::I8, shape, bytes::Bytes::from(bytes)).expect("a whole tensor")
    }

    fn cast_to_f32() -> Op {
        Op::Cast {
            to: DType::F32,
            saturate: true,
            round_mode: "up".into(),
        }
    }

    #[test]
    fn cast_integer_products_become_products_of_centered_codes() {
        let mut g = Graph::new("g");
        let a = input(&mut g, "a", DType::U8, &[3, 5]);
        let a_zero = input(&mut g, "a_zero", DType::U8, &[]);
        let codes: Vec<i8> = (0..20).map(|i| ((i * 37 % 255) as u8) as i8).collect();
        let b = g.add_const("b", i8_tensor(vec![5, 4], codes));
        let per_column = i8_tensor(vec![4], vec![1, -2, 0, 3]);
        let b_zero = g.add_const("b_zero", per_column);
        let product = push(
            &mut g,
            Op::MatMulInteger,
            &[Some(a), Some(b), Some(a_zero), Some(b_zero)],
        );
        let float = push(&mut g, cast_to_f32(), &[Some(product)]);
        g.outputs.push(float);
        let after = run_checked(&mut IntegerProducts, &g);
        assert_eq!(
            ops(&after),
            ["DequantizeLinear", "DequantizeLinear", "MatMul"]
        );
    }

    #[test]
    fn cast_integer_convolutions_become_convolutions_of_centered_codes() {
        let mut g = Graph::new("g");
        let x = input(&mut g, "x", DType::U8, &[1, 2, 5, 5]);
        let x_zero = input(&mut g, "x_zero", DType::U8, &[]);
        let codes: Vec<i8> = (0..54).map(|i| ((i * 53 % 255) as u8) as i8).collect();
        let w = g.add_const("w", i8_tensor(vec![3, 2, 3, 3], codes));
        let per_channel = i8_tensor(vec![3], vec![2, 0, -5]);
        let w_zero = g.add_const("w_zero", per_channel);
        let attrs = ConvAttrs {
            auto_pad: AutoPad::NotSet,
            dilations: vec![],
            group: 1,
            kernel_shape: vec![3, 3],
            pads: vec![1, 0, 1, 2],
            strides: vec![2, 1],
            layout: Layout::Nchw,
        };
        let product = push(
            &mut g,
            Op::ConvInteger(attrs),
            &[Some(x), Some(w), Some(x_zero), Some(w_zero)],
        );
        let float = push(&mut g, cast_to_f32(), &[Some(product)]);
        g.outputs.push(float);
        let after = run_checked(&mut IntegerProducts, &g);
        assert_eq!(
            ops(&after),
            ["Conv", "DequantizeLinear", "DequantizeLinear"]
        );
    }

    #[test]
    fn an_integer_product_read_as_integers_stays() {
        let mut g = Graph::new("g");
        let a = input(&mut g, "a", DType::U8, &[3, 5]);
        let b = input(&mut g, "b", DType::I8, &[5, 4]);
        let product = push(&mut g, Op::MatMulInteger, &[Some(a), Some(b)]);
        let float = push(&mut g, cast_to_f32(), &[Some(product)]);
        g.outputs.push(float);
        g.outputs.push(product);
        let after = run_checked(&mut IntegerProducts, &g);
        assert_eq!(ops(&after), ["Cast", "MatMulInteger"]);
    }
}
