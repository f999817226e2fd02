//! onnxruntime's rotary embedding and grouped-query attention, as the standard
//! `RotaryEmbedding`, `TensorScatter` and `Attention` ops and the position arithmetic around
//! them.
//!
//! `GroupQueryAttention` is the attention of the LLMs that onnxruntime-genai builds: a causal
//! attention whose K and V are appended to a per-request cache. For batch entry `b` the cache
//! holds `T = seqlens_k[b] + 1` positions after the step, of which `P = max(T − S, 0)` were
//! there before it (`S` the step's length). The new rows go to `[P, P + S)` of the present
//! cache; the rows before come from the past, the rows after are zero; query row `s` sits at
//! position `P + s` and sees the keys up to it (and, with `local_window_size` `W`, after
//! `P + s − W`). The present cache is the past plus `S` rows, as onnxruntime makes it when
//! `total_sequence_length` is that sum.

use super::{f32_scalar, Constants, Expansion};
use crate::ops::{Pending, Source};
use sparkc_ir::op::{AttentionAttrs, Binary, Op, Variadic};
use sparkc_ir::{DType, Tensor};

/// Inputs of `GroupQueryAttention` that select features the expansion does not have.
const UNSUPPORTED_GQA_INPUTS: [(usize, &str); 7] = [
    (10, "attention_bias"),
    (11, "head_sink"),
    (12, "k_scale"),
    (13, "v_scale"),
    (14, "q_norm_weight"),
    (15, "k_norm_weight"),
    (16, "query_seqlens"),
];

/// An i64 constant of `shape`.
fn ints(shape: Vec<usize>, values: &[i64]) -> Result<Source, String> {
    Tensor::from_i64s(shape, values)
        .map(Source::Const)
        .map_err(|e| e.to_string())
}

/// An i64 vector constant.
fn vector(values: &[i64]) -> Result<Source, String> {
    ints(vec![values.len()], values)
}

/// An i64 scalar constant.
fn scalar(value: i64) -> Result<Source, String> {
    ints(Vec::new(), &[value])
}

fn name(value: &str) -> Source {
    Source::Name(value.to_string())
}

impl Expansion<'_> {
    /// A node of `op` reading `inputs` into a fresh value, which it returns.
    fn node(&mut self, suffix: &str, op: Op, inputs: Vec<Source>) -> String {
        let value = self.value(suffix);
        self.push(suffix, op, inputs, &value);
        value
    }

    fn binary(&mut self, suffix: &str, op: Binary, a: Source, b: Source) -> String {
        self.node(suffix, Op::Binary(op), vec![a, b])
    }

    /// `x` reshaped to `shape` (0 copies a dim, -1 is inferred).
    fn reshape(&mut self, suffix: &str, x: &str, shape: &[i64]) -> Result<String, String> {
        let op = Op::Reshape { allowzero: false };
        Ok(self.node(suffix, op, vec![name(x), vector(shape)?]))
    }

    fn transpose(&mut self, suffix: &str, x: &str, perm: &[i64]) -> String {
        let op = Op::Transpose {
            perm: perm.to_vec(),
        };
        self.node(suffix, op, vec![name(x)])
    }

    /// Dim `axis` of `x` as an i64 scalar (`axis` itself a value when given by name).
    fn dim_of(&mut self, suffix: &str, x: &str, axis: Source) -> String {
        let shape = self.node(
            &format!("{suffix}_shape"),
            Op::Shape {
                start: 0,
                end: None,
            },
            vec![name(x)],
        );
        self.node(suffix, Op::Gather { axis: 0 }, vec![name(&shape), axis])
    }

    /// `0, 1, …, length − 1` (i64).
    fn iota(&mut self, suffix: &str, length: &str) -> Result<String, String> {
        let inputs = vec![scalar(0)?, name(length), scalar(1)?];
        Ok(self.node(suffix, Op::Range, inputs))
    }

    /// `Cast` of `x` to `to`.
    fn cast(&mut self, suffix: &str, x: Source, to: DType) -> String {
        let op = Op::Cast {
            to,
            saturate: true,
            round_mode: "up".into(),
        };
        self.node(suffix, op, vec![x])
    }

    /// `RotaryEmbedding` (`input, position_ids, cos_cache, sin_cache`): the standard op, its
    /// inputs reordered. `position_ids` is `[batch, sequence]`, or one offset for every row,
    /// which the expansion spreads to `offset + s`.
    pub(super) fn rotary_embedding(mut self) -> Result<Vec<Pending>, String> {
        self.only_outputs(1)?;
        if self.flag("is_packed_batching")? {
            return Err("is_packed_batching = 1 is not supported".into());
        }
        let (x, ids) = (self.required(0)?, self.required(1)?);
        let (cos, sin) = (self.required(2)?, self.required(3)?);
        // [batch, sequence] are dims 0 and rank − 2 of a 3-D [B, S, D] or 4-D [B, N, S, H] x.
        let shape = self.node(
            "x_shape",
            Op::Shape {
                start: 0,
                end: None,
            },
            vec![name(&x)],
        );
        let rank = self.node("rank", Op::Size, vec![name(&shape)]);
        let seq_axis = self.binary("seq_axis", Binary::Sub, name(&rank), scalar(2)?);
        let seq_len = self.node(
            "seq_len",
            Op::Gather { axis: 0 },
            vec![name(&shape), name(&seq_axis)],
        );
        let seq_axis_1d = self.node(
            "seq_axis_1d",
            Op::Unsqueeze,
            vec![name(&seq_axis), vector(&[0])?],
        );
        let axes = self.node(
            "batch_seq_axes",
            Op::Concat { axis: 0 },
            vec![vector(&[0])?, name(&seq_axis_1d)],
        );
        let batch_seq = self.node(
            "batch_seq",
            Op::Gather { axis: 0 },
            vec![name(&shape), name(&axes)],
        );
        // One id is an offset: position offset + s. Otherwise the ids are the positions (a
        // single id of a one-row batch gets s = 0 added, which changes nothing).
        let count = self.node("id_count", Op::Size, vec![name(&ids)]);
        let single = self.binary("single_id", Binary::Equal, name(&count), scalar(1)?);
        let single = self.cast("single_id_i64", name(&single), DType::I64);
        let steps = self.iota("steps", &seq_len)?;
        let offsets = self.binary("offsets", Binary::Mul, name(&steps), name(&single));
        let ids = self.cast("ids_i64", name(&ids), DType::I64);
        let positions = self.binary("positions", Binary::Add, name(&ids), name(&offsets));
        let positions = self.node(
            "positions_bs",
            Op::Expand,
            vec![name(&positions), name(&batch_seq)],
        );
        let op = Op::RotaryEmbedding {
            interleaved: self.flag("interleaved")?,
            num_heads: self.int("num_heads").unwrap_or(0),
            rotary_embedding_dim: self.int("rotary_embedding_dim").unwrap_or(0),
        };
        let output = self.output.clone();
        let inputs = vec![name(&x), name(&cos), name(&sin), name(&positions)];
        self.push("rotate", op, inputs, &output);
        Ok(self.pending)
    }

    /// `GroupQueryAttention` (`query, key?, value?, past_key?, past_value?, seqlens_k,
    /// total_sequence_length, cos_cache?, sin_cache?, position_ids?`): outputs `output`,
    /// `present_key` and `present_value` (see the module's description).
    pub(super) fn group_query_attention(
        mut self,
        constants: &Constants<'_>,
    ) -> Result<Vec<Pending>, String> {
        self.only_outputs(3)?;
        for (slot, input) in UNSUPPORTED_GQA_INPUTS {
            if self.input(slot).is_some() {
                return Err(format!("input {slot} ({input}) is not supported"));
            }
        }
        for flag in ["smooth_softmax", "sliding_window_cache"] {
            if self.flag(flag)? {
                return Err(format!("{flag} = 1 is not supported"));
            }
        }
        if self.int("kv_cache_bit_width").unwrap_or(0) != 0 {
            return Err("a quantized KV cache (kv_cache_bit_width) is not supported".into());
        }
        for quant in ["k_quant_type", "v_quant_type"] {
            if let Some(a) = self.attribute(quant) {
                if a.s != b"NONE" {
                    let kind = String::from_utf8_lossy(&a.s).into_owned();
                    return Err(format!(
                        "{quant} = '{kind}' is not supported (a float cache)"
                    ));
                }
            }
        }
        if self.int("qk_output").unwrap_or(0) != 0 {
            return Err("qk_output is not supported".into());
        }
        if self.int("causal") == Some(0) {
            return Err("causal = 0 (bidirectional attention) is not supported".into());
        }
        let heads = self.int("num_heads").unwrap_or(0);
        let kv_heads = self.int("kv_num_heads").unwrap_or(0);
        if heads < 1 || kv_heads < 1 || heads % kv_heads != 0 {
            return Err(format!(
                "num_heads {heads} must be a positive multiple of kv_num_heads {kv_heads}"
            ));
        }
        let window = self.int("local_window_size").unwrap_or(-1);
        let query = self.required(0)?;
        let seqlens = self.required(5)?;
        if self.input(3).is_some() != self.input(4).is_some() {
            return Err("past_key and past_value must be given together".into());
        }

        let (q, k, v) = self.heads_first(&query, heads, kv_heads)?;
        // Positions: the cache holds T = seqlens_k + 1 after the step, P = max(T − S, 0) before.
        let seq_len = self.dim_of("seq_len", &query, scalar(1)?);
        let seqlens = self.cast("seqlens", name(&seqlens), DType::I64);
        let total = self.binary("total", Binary::Add, name(&seqlens), scalar(1)?);
        let unclamped = self.binary("past_unclamped", Binary::Sub, name(&total), name(&seq_len));
        let past_len = self.node(
            "past_len",
            Op::Variadic(Variadic::Max),
            vec![name(&unclamped), scalar(0)?],
        );
        let steps = self.iota("steps", &seq_len)?;
        let (q, k) = if self.flag("do_rotary")? {
            self.rotate(q, k, &past_len, &steps, constants)?
        } else {
            (q, k)
        };
        // The present caches' positions: the past's and the step's.
        let positions = match self.input(3) {
            Some(past) => {
                let past_rows = self.dim_of("past_rows", &past, scalar(2)?);
                let rows = self.binary("cache_rows", Binary::Add, name(&past_rows), name(&seq_len));
                self.iota("cache_positions", &rows)?
            }
            None => steps.clone(),
        };
        let kept = self.kept_rows(&positions, &past_len, &seq_len, &query)?;
        let present_key = self.present(3, k, &past_len, &kept, 1)?;
        let present_value = self.present(4, v, &past_len, &kept, 2)?;
        let allowed = self.causal_mask(&past_len, &steps, &positions, window)?;
        let scale = self.float("scale", 0.0);
        let attrs = AttentionAttrs {
            is_causal: false,
            kv_num_heads: 0,
            q_num_heads: 0,
            qk_matmul_output_mode: 0,
            scale: (scale != 0.0).then_some(scale),
            softcap: self.float("softcap", 0.0),
            softmax_precision: None,
            left_window_size: -1,
            right_window_size: -1,
        };
        let inputs = vec![
            name(&q),
            name(&present_key),
            name(&present_value),
            name(&allowed),
        ];
        let attended = self.node("attention", Op::Attention(attrs), inputs);
        let rows = self.transpose("rows", &attended, &[0, 2, 1, 3]);
        let output = self.output.clone();
        let inputs = vec![name(&rows), vector(&[0, 0, -1])?];
        self.push("output", Op::Reshape { allowzero: false }, inputs, &output);
        Ok(self.pending)
    }

    /// Q, K and V of `[batch, heads, sequence, head]`, from separate inputs or packed in
    /// `query` when `key` and `value` are omitted.
    fn heads_first(
        &mut self,
        query: &str,
        heads: i64,
        kv_heads: i64,
    ) -> Result<(String, String, String), String> {
        let (q, k, v) = match (self.input(1), self.input(2)) {
            (Some(key), Some(value)) => (
                self.reshape("q_split", query, &[0, 0, heads, -1])?,
                self.reshape("k_split", &key, &[0, 0, kv_heads, -1])?,
                self.reshape("v_split", &value, &[0, 0, kv_heads, -1])?,
            ),
            (None, None) => {
                let packed = self.reshape("qkv", query, &[0, 0, heads + 2 * kv_heads, -1])?;
                let parts = ["q_split", "k_split", "v_split"].map(|s| self.value(s));
                self.pending.push(Pending {
                    name: format!("{}::split", self.name),
                    op: Op::Split {
                        axis: 2,
                        num_outputs: 0,
                    },
                    inputs: vec![name(&packed), vector(&[heads, kv_heads, kv_heads])?],
                    outputs: parts.to_vec(),
                });
                let [q, k, v] = parts;
                (q, k, v)
            }
            _ => return Err("key and value must be given together".into()),
        };
        let perm = [0, 2, 1, 3];
        Ok((
            self.transpose("q", &q, &perm),
            self.transpose("k", &k, &perm),
            self.transpose("v", &v, &perm),
        ))
    }

    /// Q and K rotated at their positions: `position_ids` when given, else `P + s`.
    fn rotate(
        &mut self,
        q: String,
        k: String,
        past_len: &str,
        steps: &str,
        constants: &Constants<'_>,
    ) -> Result<(String, String), String> {
        let (cos, sin) = match (self.input(7), self.input(8)) {
            (Some(cos), Some(sin)) => (cos, sin),
            _ => return Err("do_rotary = 1 needs cos_cache and sin_cache".into()),
        };
        let positions = match self.input(9) {
            Some(ids) => ids,
            None => {
                let past = self.reshape("past_column", past_len, &[-1, 1])?;
                self.binary("positions", Binary::Add, name(&past), name(steps))
            }
        };
        // The cache's width is half the rotated part of each head (all of it when unknown).
        let rotary_embedding_dim = constants(&cos)
            .and_then(|t| t.shape.get(1).map(|&w| 2 * w as i64))
            .unwrap_or(0);
        let op = Op::RotaryEmbedding {
            interleaved: self.flag("rotary_interleaved")?,
            num_heads: 0,
            rotary_embedding_dim,
        };
        let rotate = |this: &mut Self, suffix: &str, x: String| {
            let inputs = vec![name(&x), name(&cos), name(&sin), name(&positions)];
            this.node(suffix, op.clone(), inputs)
        };
        let q = rotate(self, "q_rotated", q);
        let k = rotate(self, "k_rotated", k);
        Ok((q, k))
    }

    /// `[batch, 1, L, 1]`: true for the present cache's rows before `P + S`, with the zero
    /// of `like`'s type the rows after take.
    fn kept_rows(
        &mut self,
        positions: &str,
        past_len: &str,
        seq_len: &str,
        like: &str,
    ) -> Result<(String, String), String> {
        let rows = self.reshape("row_index", positions, &[1, 1, -1, 1])?;
        let end = self.binary("end", Binary::Add, name(past_len), name(seq_len));
        let end = self.reshape("end_4d", &end, &[-1, 1, 1, 1])?;
        let kept = self.binary("kept", Binary::Less, name(&rows), name(&end));
        let zero = self.node(
            "zero",
            Op::CastLike {
                saturate: true,
                round_mode: "up".into(),
            },
            vec![Source::Const(f32_scalar(0.0)?), name(like)],
        );
        Ok((kept, zero))
    }

    /// The present cache of input `past_slot` into output `output_slot`: the past's first `P`
    /// rows, the step's `S` rows, zeros after them (`kept` from [`Self::kept_rows`]).
    fn present(
        &mut self,
        past_slot: usize,
        new: String,
        past_len: &str,
        (kept, zero): &(String, String),
        output_slot: usize,
    ) -> Result<String, String> {
        let which = if output_slot == 1 { "key" } else { "value" };
        let present = self
            .output_at(output_slot)
            .unwrap_or_else(|| self.value(&format!("present_{which}")));
        let Some(past) = self.input(past_slot) else {
            let identity = Op::Unary(sparkc_ir::op::Unary::Identity);
            self.push(
                &format!("present_{which}"),
                identity,
                vec![name(&new)],
                &present,
            );
            return Ok(present);
        };
        let appended = self.node(
            &format!("{which}_appended"),
            Op::Concat { axis: 2 },
            vec![name(&past), name(&new)],
        );
        let scattered = self.node(
            &format!("{which}_written"),
            Op::TensorScatter {
                axis: 2,
                mode: "linear".into(),
            },
            vec![name(&appended), name(&new), name(past_len)],
        );
        let inputs = vec![name(kept), name(&scattered), name(zero)];
        self.push(&format!("present_{which}"), Op::Where, inputs, &present);
        Ok(present)
    }

    /// `[batch, 1, S, L]`: true where query row `s` may see key `j` of the present cache.
    fn causal_mask(
        &mut self,
        past_len: &str,
        steps: &str,
        positions: &str,
        window: i64,
    ) -> Result<String, String> {
        let past = self.reshape("past_4d", past_len, &[-1, 1, 1, 1])?;
        let steps = self.reshape("steps_4d", steps, &[1, 1, -1, 1])?;
        let query_at = self.binary("query_at", Binary::Add, name(&past), name(&steps));
        let keys = self.reshape("keys_4d", positions, &[1, 1, 1, -1])?;
        let causal = self.binary("causal", Binary::LessOrEqual, name(&keys), name(&query_at));
        if window <= 0 {
            return Ok(causal);
        }
        let first = self.binary(
            "window_start",
            Binary::Sub,
            name(&query_at),
            scalar(window)?,
        );
        let recent = self.binary("recent", Binary::Greater, name(&keys), name(&first));
        Ok(self.binary("allowed", Binary::And, name(&causal), name(&recent)))
    }
}
