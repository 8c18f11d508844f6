#!/bin/sh
# A lent GPU's texture runs (docs/TRAINING.md, "On a lent GPU"): two fine-tunes of the faithful restorer side
# by side on one GPU, MIN minutes each, from the repo root of the device machine:
#   gan    the GAN recipe of MODEL_CARD.md's runs + the sub-pixel phase loss
#   noise  the shipped texture restorer's recipe (MODEL_CARD.md, "Noise inputs"): body noise + the texture
#          statistics loss (to the photo) + the phase loss; its live snapshots from MIN/3 on are averaged here
# carry/ (git-ignored, named in the call's carry) holds photos/ (the training photos), re_first_conv.safetensors
# (hitok.models.rrdbnet.save_first_conv of Real-ESRGAN x4plus) and whl/ (wheels the device lacks: platformdirs).
# $OUT receives each run's continuation file (live + EMA weights, fp32, ~10 MB), metrics.csv and log, and
# noise_swa.safetensors (the averaged live weights: what `hitok train attach --texture-from` should take).
set -eu
PYTHON=${PYTHON:-python3}; MIN=${MIN:-8}; DEVICE=${DEVICE:-cuda}; WORKERS=${WORKERS:-7}; BATCH=${BATCH:-32}
PKG=/tmp/hitok_pkg; RUNS=/tmp/hitok_runs
if ls carry/whl/*.whl >/dev/null 2>&1; then
    $PYTHON -m pip install -q --no-index --no-deps --upgrade --target /tmp/site carry/whl/*.whl
    export PYTHONPATH=/tmp/site
fi
rm -rf "$PKG" "$RUNS" && mkdir -p "$PKG/hitok" "$RUNS"   # the installed layout, without installing
cp -r hitok/* "$PKG/hitok/" && cp -r models "$PKG/hitok/models" && cp -r train "$PKG/hitok/train"
cp -r bench "$PKG/hitok/bench" && cp -r hitok_cli "$PKG/hitok/cli"
export PYTHONPATH="$PKG${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
run() {  # name, then its own options
    name=$1; shift
    $PYTHON -c "from hitok.cli.entry import main; main()" train restorer --data carry/photos --out "$RUNS/$name" \
        --init train/continuation.safetensors --minutes "$MIN" --save-every 2 --device "$DEVICE" \
        --workers "$WORKERS" --batch-size "$BATCH" --clean-share 0.75 "$@" > "$OUT/$name.log" 2>&1
    cp "$RUNS/$name/continuation.safetensors" "$OUT/$name.safetensors"
    cp "$RUNS/$name/metrics.csv" "$OUT/$name.metrics.csv"
}
run gan --adv-weight 0.2 --ldl-weight 10 --d-learning-rate 4e-4 --d-betas 0 0.9 --shift 8 --phase-weight 200 \
    --learning-rate 2e-4 &
gan=$!
run noise --stats-weight 40 --phase-weight 200 --stats-model carry/re_first_conv.safetensors --learning-rate 1e-4 \
    --body-noise --noise-scale 0.05 &
noise=$!
wait $gan; gan_rc=$?; wait $noise; noise_rc=$?   # both waited for: one failing must not cut the other's files
if [ $noise_rc -eq 0 ]; then
    $PYTHON -c "import sys; from hitok.train.restorer import average_live_snapshots as a; \
print('averaged', a(sys.argv[1], sys.argv[2], float(sys.argv[3]) / 3), 'live snapshots')" \
        "$RUNS/noise" "$OUT/noise_swa.safetensors" "$MIN" || noise_rc=$?
fi
exit $((gan_rc | noise_rc))
