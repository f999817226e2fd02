//! Integer products read only as floats — `Cast(MatMulInteger(a, b, a_zero, b_zero), to=float)`,
//! as onnxruntime's dynamic quantization writes every linear layer — rewritten as
//! `MatMul(DequantizeLinear(a, 1, a_zero), DequantizeLinear(b, 1, b_zero))`: the form the
//! quantized products fold (`qfold`) and the GPU's integer tensor cores read. The codes minus
//! their zero points are the same integers, so the product is the cast integer product; a
//! product summed in f32 rather than in integers (the CPU, or a GPU without an integer `mma`)
//! rounds only partial sums beyond 2^24.

use crate::edit::{add_tensor_node, fresh_name, has_output, readers, take_place};
use crate::manager::{Pass, PassError};
use sparkc_ir::{DType, Dim, Graph, NodeId, Op, Tensor, TensorType, ValueRef};

/// Rewrites `MatMulInteger` read only through casts to f32 as a product of dequantized codes.
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
            .filter(|&id| matches!(graph.node(id).op, Op::MatMulInteger))
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

/// True when `zero` is one zero point, or one per row of A or column of B of a plain matrix
/// (`None` when a shape is unknown).
fn expressible(graph: &Graph, codes: ValueRef, zero: Option<ValueRef>) -> Option<bool> {
    let Some(z) = zero else {
        return Some(true);
    };
    let rank = graph.value(codes).ty.as_tensor()?.shape.as_ref()?.len();
    let z_shape = static_shape(graph, z)?;
    Some(z_shape.iter().product::<usize>() <= 1 || (rank == 2 && z_shape.len() == 1))
}

/// `DequantizeLinear(codes, 1, zero)`: the codes minus their zero point (one for the tensor,
/// or one per index of `axis`), as f32.
fn centered(
    graph: &mut Graph,
    codes: ValueRef,
    zero: Option<ValueRef>,
    axis: i64,
) -> Option<ValueRef> {
    let zero_shape = match zero {
        Some(z) => static_shape(graph, z)?,
        None => Vec::new(),
    };
    let per_axis = zero_shape.iter().product::<usize>() > 1;
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
        axis: if per_axis { axis } else { 1 },
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

/// Rewrites one `MatMulInteger` whose every reader casts it to f32; `None` when it has another
/// reader, is a graph output, or has zero points it cannot express.
fn rewrite(graph: &mut Graph, id: NodeId) -> Option<()> {
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
    let (a, b) = (inputs.first().copied()??, inputs.get(1).copied()??);
    let zero = |slot: usize| inputs.get(slot).copied().flatten();
    let shape: Vec<Dim> = graph.value(product).ty.as_tensor()?.shape.clone()?;
    let a_rank = graph.value(a).ty.as_tensor()?.shape.as_ref()?.len() as i64;
    let b_rank = graph.value(b).ty.as_tensor()?.shape.as_ref()?.len() as i64;
    // Checked before anything is added, so a refusal leaves the graph as it was.
    if !expressible(graph, a, zero(2))? || !expressible(graph, b, zero(3))? {
        return None;
    }
    let a_centered = centered(graph, a, zero(2), a_rank - 2)?;
    let b_centered = centered(graph, b, zero(3), b_rank - 1)?;
    let name = fresh_name(graph, &format!("{}_as_float", graph.node(id).name));
    let float_product = add_tensor_node(
        graph,
        name,
        Op::MatMul,
        &[Some(a_centered), Some(b_centered)],
        TensorType::new(DType::F32, shape),
    );
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
    use sparkc_ir::{DType, Dim, Graph, Op, Tensor, TensorType, ValueType};

    fn input(g: &mut Graph, name: &str, dtype: DType, dims: &[i64]) -> sparkc_ir::ValueRef {
        let dims = dims.iter().map(|&d| Dim::known(d)).collect();
        g.add_input(name, ValueType::Tensor(TensorType::new(dtype, dims)))
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
        let i8s = |values: Vec<i8>| {
            let bytes: Vec<u8> = values.iter().map(|&v| v as u8).collect();
            bytes::Bytes::from(bytes)
        };
        let codes: Vec<i8> = (0..20).map(|i| ((i * 37 % 255) as u8) as i8).collect();
        let b = g.add_const("b", Tensor::new(DType::I8, vec![5, 4], i8s(codes)).unwrap());
        let per_column = Tensor::new(DType::I8, vec![4], i8s(vec![1, -2, 0, 3])).unwrap();
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
