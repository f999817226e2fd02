//! Integer products read only as floats — `Cast(MatMulInteger(a, b, a_zero, b_zero), to=float)`
//! and `Cast(ConvInteger(x, w, x_zero, w_zero), to=float)`, as onnxruntime's dynamic
//! quantization writes every linear layer and convolution — rewritten as the float product of
//! `DequantizeLinear(codes, 1, zero)` operands: the form the quantized products fold (`qfold`)
//! and the GPU's integer tensor cores read. The codes minus their zero points are the same
//! integers, so the product is the cast integer product; one summed in f32 rather than in
//! integers (the CPU, or a GPU without an integer `mma`) rounds only partial sums beyond 2^24.
//!
//! The requantizing products of ONNX's QOperator form, `QLinearMatMul` and `QLinearConv`, become
//! `QuantizeLinear(product(DequantizeLinear(a), DequantizeLinear(b)) + bias)` the same way, their
//! int32 bias dequantized by the product of the operands' scales: QDQ form, which `qfold` folds
//! into one integer product with the requantization in its epilogue.

use crate::edit::{add_tensor_node, fresh_name, has_output, readers, take_place, Builder};
use crate::manager::{Pass, PassError};
use sparkc_ir::op::Binary;
use sparkc_ir::{DType, Dim, Graph, NodeId, Op, Tensor, TensorType, ValueRef};

/// Rewrites `MatMulInteger` and `ConvInteger` read only through casts to f32, and
/// `QLinearMatMul` and `QLinearConv`, as products of dequantized codes.
pub struct IntegerProducts;

impl Pass for IntegerProducts {
    fn name(&self) -> &'static str {
        "integer-products"
    }

    fn run(&mut self, graph: &mut Graph) -> Result<String, PassError> {
        let (mut rewritten, mut requantized) = (0, 0);
        let products: Vec<NodeId> = graph
            .topo_order()?
            .into_iter()
            .filter(|&id| {
                let op = &graph.node(id).op;
                float_form(op).is_some() || requantizing_form(op).is_some()
            })
            .collect();
        for id in products {
            if float_form(&graph.node(id).op).is_some() {
                rewritten += usize::from(rewrite(graph, id).is_some());
            } else if requantizing_form(&graph.node(id).op).is_some() {
                requantized += usize::from(rewrite_requantizing(graph, id).is_some());
            }
        }
        if requantized > 0 {
            sparkc_ir::infer_graph(graph)?;
        }
        Ok(format!(
            "{rewritten} integer products read as floats and {requantized} QLinear products became products of dequantized codes"
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

/// The axis along which every present parameter (a scale, a zero point) of `codes` gives one
/// value per index (`Some(None)`: each has one value for the whole tensor), or `None` when they
/// vary in a way `how` does not allow, disagree, or have unknown shapes.
fn parameter_axis(
    graph: &Graph,
    codes: ValueRef,
    parameters: &[Option<ValueRef>],
    how: Zero,
) -> Option<Option<i64>> {
    let rank = graph.value(codes).ty.as_tensor()?.shape.as_ref()?.len();
    let mut axes = Vec::with_capacity(parameters.len());
    for &p in parameters.iter().flatten() {
        let shape = static_shape(graph, p)?;
        let axis = if shape.iter().product::<usize>() <= 1 {
            None
        } else {
            match how {
                Zero::PerMatrixAxis(axis) if rank == 2 && shape.len() == 1 => Some(axis),
                Zero::PerChannel if shape.len() == 1 => Some(0),
                _ => return None,
            }
        };
        axes.push(axis);
    }
    match axes.split_first() {
        None => Some(None),
        Some((first, rest)) => rest.iter().all(|a| a == first).then_some(*first),
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
    let op = dequantize_along(axis);
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
        parameter_axis(graph, operands[0], &[zero_points[0]], zeros[0])?,
        parameter_axis(graph, operands[1], &[zero_points[1]], zeros[1])?,
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

/// The float product a requantizing product becomes, and how the scales and zero points of
/// its two operands and its output may vary.
fn requantizing_form(op: &Op) -> Option<(Op, [Zero; 3])> {
    let per_row = Zero::PerMatrixAxis(0);
    match op {
        Op::QLinearMatMul => Some((Op::MatMul, [per_row, Zero::PerMatrixAxis(1), per_row])),
        Op::QLinearConv(attrs) => Some((
            Op::Conv(attrs.clone()),
            [Zero::Single, Zero::PerChannel, Zero::Single],
        )),
        _ => None,
    }
}

/// `DequantizeLinear` with one scale (and zero point) per index of `axis`, or one for all.
fn dequantize_along(axis: Option<i64>) -> Op {
    Op::DequantizeLinear {
        axis: axis.unwrap_or(1),
        block_size: 0,
        output_dtype: None,
    }
}

/// Rewrites one `QLinearMatMul` or `QLinearConv` as the quantized f32 product of its
/// dequantized operands; `None` (the graph unchanged) when a scale is not a float or a scale or
/// zero point varies in a way `DequantizeLinear` cannot express.
fn rewrite_requantizing(graph: &mut Graph, id: NodeId) -> Option<()> {
    let (op, hows) = requantizing_form(&graph.node(id).op)?;
    let inputs = graph.inputs_of(id);
    let at = |slot: usize| inputs.get(slot).copied().flatten();
    let output = ValueRef {
        node: id,
        output: 0,
    };
    let out_dtype = graph.value(output).ty.as_tensor()?.dtype;
    // (codes, scale, zero) of A, B and the output.
    let triples = [
        (at(0)?, at(1)?, at(2)),
        (at(3)?, at(4)?, at(5)),
        (output, at(6)?, at(7)),
    ];
    let float_scales = triples.iter().all(|&(_, s, _)| {
        graph
            .value(s)
            .ty
            .as_tensor()
            .is_some_and(|t| matches!(t.dtype, DType::F32 | DType::F16 | DType::BF16))
    });
    if !float_scales {
        return None;
    }
    let mut axes = [None; 3];
    for (k, &(codes, scale, zero)) in triples.iter().enumerate() {
        axes[k] = parameter_axis(graph, codes, &[Some(scale), zero], hows[k])?;
    }
    let bias = at(8);
    let base = graph.node(id).name.clone();
    let mut b = Builder {
        graph,
        base,
        dtype: DType::F32,
        rule: "integer-products",
    };
    // Narrower scales are widened, so the product and its requantization run in f32.
    let mut triples = triples;
    for (k, suffix) in [(0, "a_scale"), (1, "b_scale"), (2, "y_scale")] {
        let scale = triples[k].1;
        if b.graph.value(scale).ty.as_tensor().map(|t| t.dtype) != Some(DType::F32) {
            let widen = Op::Cast {
                to: DType::F32,
                saturate: true,
                round_mode: "up".into(),
            };
            triples[k].1 = b.add(widen, suffix, &[Some(scale)]);
        }
    }
    let mut operands = Vec::with_capacity(3);
    for (k, suffix) in [(0, "a_dequantized"), (1, "b_dequantized")] {
        let (codes, scale, zero) = triples[k];
        let op = dequantize_along(axes[k]);
        operands.push(Some(b.add(op, suffix, &[Some(codes), Some(scale), zero])));
    }
    if let Some(bias) = bias {
        // The int32 bias counts units of x_scale × w_scale (one per output channel).
        let scales = [Some(triples[0].1), Some(triples[1].1)];
        let scale = b.add(Op::Binary(Binary::Mul), "bias_scale", &scales);
        let op = dequantize_along(axes[1]);
        operands.push(Some(b.add(op, "bias", &[Some(bias), Some(scale), None])));
    }
    let product = b.add(op, "float", &operands);
    let (_, y_scale, y_zero) = triples[2];
    let quantize = Op::QuantizeLinear {
        axis: axes[2].unwrap_or(1),
        block_size: 0,
        // Without a zero point to take it from, the codes keep the product's output type.
        output_dtype: y_zero.is_none().then_some(out_dtype),
        saturate: true,
    };
    let requantized = b.add_as(
        out_dtype,
        quantize,
        "requantized",
        &[Some(product), Some(y_scale), y_zero],
    );
    take_place(graph, output, requantized);
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
        let values: Vec<f64> = values.into_iter().map(f64::from).collect();
        int_tensor(DType::I8, shape, &values)
    }

    /// A tensor of 8- or 32-bit integers.
    fn int_tensor(dtype: DType, shape: Vec<usize>, values: &[f64]) -> Tensor {
        let bytes: Vec<u8> = match dtype {
            DType::I32 => values
                .iter()
                .flat_map(|&v| (v as i32).to_le_bytes())
                .collect(),
            _ => values.iter().map(|&v| v as i64 as u8).collect(),
        };
        Tensor::new(dtype, shape, bytes::Bytes::from(bytes)).expect("a whole tensor")
    }

    /// A 3×3 convolution with strides (2, 1) and `pads`.
    fn conv_3x3(pads: Vec<i64>) -> ConvAttrs {
        ConvAttrs {
            auto_pad: AutoPad::NotSet,
            dilations: vec![],
            group: 1,
            kernel_shape: vec![3, 3],
            pads,
            strides: vec![2, 1],
            layout: Layout::Nchw,
        }
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
        let attrs = conv_3x3(vec![1, 0, 1, 2]);
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

    fn f32s(g: &mut Graph, name: &str, shape: Vec<usize>, values: &[f64]) -> sparkc_ir::ValueRef {
        let t = Tensor::from_f64s(DType::F32, shape, values).expect("a whole tensor");
        g.add_const(name, t)
    }

    /// A constant of 8- or 32-bit integers.
    fn codes(
        g: &mut Graph,
        name: &str,
        dtype: DType,
        shape: Vec<usize>,
        values: &[f64],
    ) -> sparkc_ir::ValueRef {
        g.add_const(name, int_tensor(dtype, shape, values))
    }

    #[test]
    fn qlinear_matmul_becomes_a_requantized_product_of_dequantized_codes() {
        let mut g = Graph::new("g");
        let a = input(&mut g, "a", DType::U8, &[3, 5]);
        let a_scale = f32s(&mut g, "a_scale", vec![], &[0.021]);
        let a_zero = codes(&mut g, "a_zero", DType::U8, vec![], &[113.0]);
        let weights: Vec<f64> = (0..20)
            .map(|i| f64::from((i * 37 % 255) as u8 as i8))
            .collect();
        let b = codes(&mut g, "b", DType::I8, vec![5, 4], &weights);
        let b_scale = f32s(&mut g, "b_scale", vec![4], &[0.003, 0.0041, 0.0029, 0.0052]);
        let b_zero = codes(&mut g, "b_zero", DType::I8, vec![4], &[0.0, 3.0, -2.0, 0.0]);
        let y_scale = f32s(&mut g, "y_scale", vec![], &[0.047]);
        let y_zero = codes(&mut g, "y_zero", DType::U8, vec![], &[131.0]);
        let inputs = [a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero].map(Some);
        let y = push(&mut g, Op::QLinearMatMul, &inputs);
        g.outputs.push(y);
        let after = run_checked(&mut IntegerProducts, &g);
        assert_eq!(
            ops(&after),
            [
                "DequantizeLinear",
                "DequantizeLinear",
                "MatMul",
                "QuantizeLinear"
            ]
        );
        assert_eq!(after.value(after.outputs[0]).name, g.value(y).name);
    }

    #[test]
    fn qlinear_conv_with_a_bias_becomes_a_requantized_convolution() {
        let mut g = Graph::new("g");
        let x = input(&mut g, "x", DType::U8, &[1, 2, 6, 5]);
        let x_scale = f32s(&mut g, "x_scale", vec![], &[0.018]);
        let x_zero = codes(&mut g, "x_zero", DType::U8, vec![], &[97.0]);
        let weights: Vec<f64> = (0..54)
            .map(|i| f64::from((i * 53 % 255) as u8 as i8))
            .collect();
        let w = codes(&mut g, "w", DType::I8, vec![3, 2, 3, 3], &weights);
        let w_scale = f32s(&mut g, "w_scale", vec![3], &[0.002, 0.0035, 0.0011]);
        let w_zero = codes(&mut g, "w_zero", DType::I8, vec![3], &[0.0; 3]);
        let y_scale = f32s(&mut g, "y_scale", vec![], &[0.09]);
        let y_zero = codes(&mut g, "y_zero", DType::U8, vec![], &[120.0]);
        let bias = codes(
            &mut g,
            "bias",
            DType::I32,
            vec![3],
            &[1500.0, -9000.0, 123.0],
        );
        let attrs = conv_3x3(vec![1, 1, 1, 1]);
        let inputs = [
            x, x_scale, x_zero, w, w_scale, w_zero, y_scale, y_zero, bias,
        ]
        .map(Some);
        let y = push(&mut g, Op::QLinearConv(attrs), &inputs);
        g.outputs.push(y);
        let after = run_checked(&mut IntegerProducts, &g);
        assert_eq!(
            ops(&after),
            [
                "Conv",
                "DequantizeLinear",
                "DequantizeLinear",
                "DequantizeLinear",
                "Mul",
                "QuantizeLinear"
            ]
        );
    }

    #[test]
    fn a_qlinear_matmul_scaled_per_row_of_a_batch_stays() {
        let mut g = Graph::new("g");
        let a = input(&mut g, "a", DType::U8, &[2, 3, 5]);
        let a_scale = f32s(&mut g, "a_scale", vec![3], &[0.02, 0.03, 0.01]);
        let a_zero = codes(&mut g, "a_zero", DType::U8, vec![3], &[1.0, 2.0, 3.0]);
        let b = input(&mut g, "b", DType::U8, &[5, 4]);
        let scale = f32s(&mut g, "scale", vec![], &[0.05]);
        let zero = codes(&mut g, "zero", DType::U8, vec![], &[128.0]);
        let inputs = [a, a_scale, a_zero, b, scale, zero, scale, zero].map(Some);
        let y = push(&mut g, Op::QLinearMatMul, &inputs);
        g.outputs.push(y);
        let mut after = g.clone();
        crate::Pass::run(&mut IntegerProducts, &mut after).expect("the pass runs");
        assert_eq!(ops(&after), ["QLinearMatMul"]);
    }
}
