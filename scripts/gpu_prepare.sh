#!/usr/bin/env bash
# Prepares the GPU check on this machine (it needs no GPU): builds `sparkc-run` (the runtime
# alone, no LLVM) and compiles every artifact the check runs into one folder to carry to the
# GPU machine, where `bash scripts/gpu_check.sh` runs them. Needs scripts/test.sh's generated
# material (the ONNX node tests and the whole models).
#
#   bash scripts/gpu_prepare.sh [FOLDER (default gpu)] [TARGET (default sm_90a: H100, H200)]
set -euo pipefail
cd "$(dirname "$0")/.."
bundle="${1:-gpu}"
target="${2:-sm_90a}"
generated=tests/data/generated
cargo build --release --quiet -p sparkc-runtime -p sparkc-cli --bins
sparkc=target/release/sparkc
dest=target/gpu-check
rm -rf "$dest" "$bundle"
mkdir -p "$dest"/{node,models,quant,check,bench} "$bundle"
cp target/release/sparkc-run "$dest/"
python3 scripts/gpu_models.py --out "$dest/onnx"

# Artifacts above this size stay behind: what travels to the GPU machine is limited.
max_bytes=$((6 << 20))

# compile NAME MODEL.onnx DATA_DIR|- [sparkc compile flags...]: one artifact, its test data
# (input_N.pb, output_N.pb) in a folder beside it; a model that does not compile is logged.
compile() {
    local out="$1" model="$2" data="$3"
    local refused
    refused="$dest/$(basename "$(dirname "$out")")_$(basename "$out").refused"
    shift 3
    if "$sparkc" compile "$model" -o "$out.spark" "$@" >/dev/null 2>"$out.err"; then
        rm -f "$out.err"
        if [ "$(stat -c %s "$out.spark")" -gt "${MAX_BYTES:-$max_bytes}" ]; then
            rm "$out.spark"
            echo "too large to carry" >"$refused"
            return
        fi
        if [ "$data" != - ]; then
            mkdir -p "$out"
            cp "$data"/input_*.pb "$out/" 2>/dev/null || true
            [ "${COPY_OUTPUTS:-1}" = 0 ] || cp "$data"/output_*.pb "$out/" 2>/dev/null || true
        fi
    else
        mv "$out.err" "$refused"
    fi
}
export -f compile
export sparkc dest target max_bytes

# Every ONNX node test with a GPU kernel for each of its nodes, exact FP32 products.
python3 -c "import json; print('\n'.join(json.load(open('$generated/manifest.json'))['node']))" |
    xargs -P "$(nproc)" -I{} bash -c \
        'compile "$dest/node/{}" "'"$generated"'/node/{}/model.onnx" "'"$generated"'/node/{}/test_data_set_0" --target "$target" --precision fp32'

# Whole models (onnxruntime's optimized and contributed-op models among them): the default (TF32
# products) for the target and for sm_80, exact FP32, and the CNNs with channels-last
# convolutions.
whole=()
for f in "$generated"/light/light_*.onnx; do whole+=("$(basename "$f" .onnx)=$f=-"); done
for name in $(python3 -c "import json; print(' '.join(json.load(open('$generated/models/manifest.json'))['models']))"); do
    whole+=("$name=$generated/models/$name/model.onnx=$generated/models/$name")
done
for name in $(python3 -c "import json; print(' '.join(json.load(open('$generated/models/manifest.json'))['contrib']))"); do
    whole+=("$name=$generated/models/contrib/$name/model.onnx=$generated/models/contrib/$name")
done
whole+=("tiny_cnn=examples/models/tiny_cnn.onnx=-")
for entry in "${whole[@]}"; do
    IFS='=' read -r name model data <<<"$entry"
    compile "$dest/models/$name" "$model" "$data" --target "$target"
    MAX_BYTES=$((2 << 20)) compile "$dest/models/$name.sm_80" "$model" "$data" --target sm_80
    MAX_BYTES=$((2 << 20)) compile "$dest/models/$name.fp32" "$model" "$data" --target "$target" --precision fp32
    case "$name" in
    mobilenet | tiny_cnn | light_*)
        MAX_BYTES=$((2 << 20)) compile "$dest/models/$name.nhwc" "$model" "$data" --target "$target" --layout nhwc
        ;;
    esac
done

# Quantized models: each format on the transformers and the CNN, and onnxruntime's QDQ models.
for name in bert_encoder gpt_decoder mobilenet; do
    for format in bf16 fp16 fp8 int8 nvfp4 mxfp4; do
        COPY_OUTPUTS=0 compile "$dest/quant/$name.$format" "$generated/models/$name/model.onnx" \
            "$generated/models/$name" --target "$target" --quantize "$format"
    done
done
for name in $(python3 -c "import json; print(' '.join(json.load(open('$generated/models/manifest.json'))['qdq']))"); do
    compile "$dest/quant/qdq_$name" "$generated/models/qdq/$name/model.onnx" "$generated/models/qdq/$name" --target "$target"
done

# Products on odd shapes, on the target and on sm_80; the 4096-cubed benchmarks.
for f in "$dest"/onnx/check/*.onnx; do
    name=$(basename "$f" .onnx)
    compile "$dest/check/$name" "$f" - --target "$target"
    compile "$dest/check/$name.sm_80" "$f" - --target sm_80
    compile "$dest/check/$name.fp32" "$f" - --target "$target" --precision fp32
    case "$name" in
    conv_*) compile "$dest/check/$name.nhwc" "$f" - --target "$target" --layout nhwc ;;
    esac
done
for f in "$dest"/onnx/bench/*.onnx; do
    MAX_BYTES=$((32 << 20)) compile "$dest/bench/$(basename "$f" .onnx)" "$f" - --target "$target"
done
compile "$dest/bench/gemm_bf16.sm_80" "$dest/onnx/bench/gemm_bf16.onnx" - --target sm_80
compile "$dest/bench/gemm_fp32.fp32" "$dest/onnx/bench/gemm_fp32.onnx" - --target "$target" --precision fp32
rm -rf "$dest/onnx"
# The generated models as ONNX with their inputs, for onnxruntime's latency beside sparkc's.
for name in bert_encoder gpt_decoder mobilenet; do
    mkdir -p "$dest/ort/$name"
    cp "$generated/models/$name"/{model.onnx,input_*.npy} "$dest/ort/$name/"
done
mkdir -p "$dest/refused"
mv "$dest"/*.refused "$dest/refused/" 2>/dev/null || true
for sub in node models quant check bench; do
    echo "$sub: $(ls "$dest/$sub"/*.spark | wc -l) artifacts"
done
echo "left behind (no GPU kernel, not compilable, or too large to carry): $(ls "$dest/refused" | wc -l)"
tar -C "$dest" -cf - . | xz -6 -T0 >"$bundle/bundle.tar.xz"
echo "$(du -sh "$dest" | cut -f1) packed into $(du -sh "$bundle/bundle.tar.xz" | cut -f1): $bundle/bundle.tar.xz"
