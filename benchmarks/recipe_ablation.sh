#!/usr/bin/env bash
# Issue 13: which part of the training pipeline costs generalisation? One short leave-ISIC-2017-out
# run of the shipped recipe (configs/ablation/loso_short_base.yaml) and one per lever changed
# alone, two runs at a time with one torch thread and one loader worker each (2 CPU cores), then
# every bundle scored on all of isic2017/ next to its in-domain validation:
#
#     bash benchmarks/recipe_ablation.sh            # trains into runs/ablation/<variant>
#     ABLATION_ONLY="base lr_3e-4" bash benchmarks/recipe_ablation.sh
#
# Finished runs (a bundle in their folder) are not trained again.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${ABLATION_OUT:-runs/ablation}
DATA=(--data ../shared/data/isic9 --data ../shared/data/ham10000 --data ../shared/data/ham10000_more)

declare -A LEVERS=(
  [base]=""
  [base_seed1]="seed=1"
  [lr_3e-4]="optim.lr=3e-4"
  [light_augmentation]="augmentation.crop_scale_min=1.0 augmentation.affine=0 augmentation.colour_jitter=0 augmentation.artefact_probability=0"
  [light_regularisation]="model.kwargs.dropout=0.2 model.kwargs.drop_connect_rate=0 optim.weight_decay=1e-4"
  [sqrt_sampler]="balance.sampler_power=0.5"
  [shades_of_gray]="model.colour_constancy=shades_of_gray"
)
QUEUES=("base light_augmentation sqrt_sampler" "lr_3e-4 light_regularisation shades_of_gray base_seed1")
ONLY=${ABLATION_ONLY:-}

train() {
  local name=$1 sets=() kv
  [[ -n $ONLY && " $ONLY " != *" $name "* ]] && return 0
  [[ -f $OUT/$name/bundle/bundle.json ]] && { echo "$name: done already"; return 0; }
  for kv in ${LEVERS[$name]}; do sets+=(--set "$kv"); done
  mkdir -p "$OUT"
  echo "$(date -u +%FT%TZ) start $name: ${LEVERS[$name]:-(shipped recipe)}" | tee -a "$OUT/COMMANDS.md"
  OMP_NUM_THREADS=1 melanoscan train "${DATA[@]}" --out "$OUT/$name" \
    --config configs/ablation/loso_short_base.yaml --set data.num_workers=1 "${sets[@]}" \
    > "$OUT/$name.log" 2>&1 || echo "$name failed: see $OUT/$name.log"
  echo "$(date -u +%FT%TZ) end $name" | tee -a "$OUT/COMMANDS.md"
}

run_queue() { local name; for name in $1; do train "$name"; done; }

pids=()
for queue in "${QUEUES[@]}"; do run_queue "$queue" & pids+=($!); done
wait "${pids[@]}"

models=()
for name in "${!LEVERS[@]}"; do
  [[ -f $OUT/$name/bundle/bundle.json ]] && models+=(--model "ablation-$name=$OUT/$name/bundle")
done
python benchmarks/leave_one_out.py "${models[@]}"
