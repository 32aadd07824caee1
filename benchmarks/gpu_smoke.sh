#!/usr/bin/env bash
# A few bf16 GRPO steps of the tiny random Qwen2.5-VL on one CUDA GPU, through `critic-data train`
# with the critic-r1 recipe (vLLM off: rollouts by transformers' generate). What it shows: the
# recipe's GPU path (bf16 autocast over fp32 master weights, gradient checkpointing, the KL term,
# checkpoint + resume) runs on CUDA; it says nothing about the 7B models or vLLM.
#
#   bash benchmarks/gpu_smoke.sh OUT_DIR            # on a machine with a GPU and `make install` done
#   EXTRA="--use_cpu --bf16 false" bash benchmarks/gpu_smoke.sh /tmp/smoke   # the same run on CPU
#
# It builds the bundled VLFeedback sample, builds the tiny model, trains 4 steps (checkpoint at 2),
# resumes for 2 more, and writes a report (report.json: steps, losses, rewards, seconds, weights that
# changed, GPU memory) into OUT_DIR.
set -euo pipefail
OUT=${1:-out/gpu-smoke}
PY=${PYTHON:-python3}
EXTRA=${EXTRA:-}
rm -rf "$OUT" && mkdir -p "$OUT"

$PY -m critic_data.cli env | tee "$OUT/env.txt"
$PY -m critic_data.cli build --source vlfeedback --input sample/vlfeedback --out "$OUT/dataset" --seed 0 --num-proc 1
$PY -c "import sys; from tests.tiny_qwen import build_tiny_qwen; build_tiny_qwen(sys.argv[1])" "$OUT/model"

# The recipe as published but for the batch (2 prompts x 8 completions per step), the completion
# length and vLLM; bf16 and gradient checkpointing stay on as the recipe sets them. A random model
# never writes \boxed{}, so the real rewards are all 0 and GRPO's advantages vanish: the tests'
# spread_reward (varies within a group) makes the update non-zero.
COMMON=(--recipe critic-r1 --model_name_or_path "$OUT/model" --dataset_name "$OUT/dataset" --output_dir "$OUT/run"
        --use_vllm false --num_generations 8 --per_device_train_batch_size 8 --gradient_accumulation_steps 2
        --generation_batch_size 16 --max_completion_length 64 --save_steps 2 --logging_steps 1 --report_to none
        --reward_funcs preference format tests.rl.test_train.spread_reward --reward_weights 0.9 0.1 1)
start=$(date +%s.%N)
$PY -m critic_data.cli train "${COMMON[@]}" --max_steps 4 $EXTRA 2>&1 | tee "$OUT/train.log"
middle=$(date +%s.%N)
$PY -m critic_data.cli train "${COMMON[@]}" --max_steps 6 --resume_from_checkpoint "$OUT/run/checkpoint-4" $EXTRA \
  2>&1 | tee "$OUT/resume.log"
end=$(date +%s.%N)

$PY - "$OUT" "$start" "$middle" "$end" <<'EOF'
import json, sys
from pathlib import Path
from safetensors.torch import load_file

out, start, middle, end = Path(sys.argv[1]), *map(float, sys.argv[2:])
state = json.loads((out / "run" / "checkpoint-6" / "trainer_state.json").read_text())
steps = [e for e in state["log_history"] if "loss" in e]
before, after = load_file(out / "model" / "model.safetensors"), load_file(out / "run" / "model.safetensors")
changed = [name for name in before if not before[name].equal(after[name])]
report = {
    "steps": [e["step"] for e in steps],
    "loss": [e["loss"] for e in steps],
    "kl": [e.get("kl") for e in steps],
    "reward_mean": [e.get("reward") for e in steps],
    "reward_std": [e.get("reward_std") for e in steps],
    "preference_reward_mean": [e.get("rewards/preference_reward/mean") for e in steps],
    "format_reward_mean": [e.get("rewards/format_reward/mean") for e in steps],
    "mean_completion_length": [e.get("completions/mean_length") for e in steps],
    "seconds_first_4_steps_incl_startup": round(middle - start, 1),
    "seconds_resume_2_steps_incl_startup": round(end - middle, 1),
    "tensors_changed": f"{len(changed)} of {len(before)}",
    "vision_tensors_changed": sum("visual" in name for name in changed),
    "saved_dtype": str(next(iter(after.values())).dtype),
    # transformers' own resume of a Qwen2.5-VL checkpoint warns "missing keys" and keeps the base weights
    "resume_warned_missing_keys": "missing keys" in (out / "resume.log").read_text(),
}
try:
    import torch
    report["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
except Exception as error:  # report what we can
    report["device"] = repr(error)
(out / "report.json").write_text(json.dumps(report, indent=2))
print(json.dumps(report, indent=2))
EOF
