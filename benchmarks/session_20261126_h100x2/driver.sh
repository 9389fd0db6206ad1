#!/usr/bin/env bash
# The machine session of 2026-11-26 on nvidia-h100-x2, as it ran (each stage is a committed script); started with
#   setsid nohup bash benchmarks/session_20261126_h100x2/driver.sh &   and collected from /tmp/qf-keep:
#   1 issue 17: the tiny grid, one GPU against two (scripts/gpu_multi.sh)
#   2 side by side, disjoint cores: GPU0 issue 20 (sdxl fp8rw, fidelity sd3/sdxl); GPU1 issue 15 (sd3 batch-4 over
#     64 images, all detectors), then issue 20 fidelity flux
#   3 issue 15: flux, sd3, sdxl x bf16 fp8 nf4 int8 x txt2img img2img x 5 detectors, 8 images, -n 2
set -u
cd "$(dirname "$0")/../.."
K=/tmp/qf-keep; mkdir -p "$K"
exec > "$K/driver.log" 2>&1
T0=$(date +%s)
mark() { echo "== $1 at +$(( $(date +%s) - T0 )) s ($(date +%T))"; }
mark start
nvidia-smi > "$K/nvidia-smi.txt" 2>&1; nvidia-smi topo -m >> "$K/nvidia-smi.txt" 2>&1; lscpu > "$K/lscpu.txt"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
python3 -c "import torch, sys; print(torch.__version__, torch.version.cuda, sys.version)" >> "$K/nvidia-smi.txt"
mark installed
OUT=$K/tiny PROFILE=tiny GENERATORS=sd3,sdxl,flux,sd15 PRECISIONS=fp32,bf16,nf4,int8 DETECTORS=npr,r50nodown,clipd \
  N_IMAGES=8 STAGE_TIMEOUT_S=300 scripts/gpu_multi.sh > "$K/tiny.log" 2>&1
mark tiny_done
( export CUDA_VISIBLE_DEVICES=0 QUANTFAKE_STORE=/tmp/qf-b20
  OUT=$K/b20 GENERATORS=sdxl PRECISIONS=bf16,fp8rw COMPILE_CELLS= BUDGET_S=400 \
    taskset -c 0-15 scripts/gpu_backends.sh eager table > "$K/b20_eager.log" 2>&1
  mark b20_eager_done
  OUT=$K/b20 FID_GENERATORS=sd3,sdxl PRECISIONS=bf16,fp8rw timeout -s INT 300 \
    taskset -c 0-15 scripts/gpu_backends.sh fidelity > "$K/b20_fid.log" 2>&1
  mark b20_fid_done ) &
( export CUDA_VISIBLE_DEVICES=1 QUANTFAKE_STORE=/tmp/qf-sd3b4
  OUT=$K/sd3b4 TAG=sd3b4 GENERATORS=sd3 PRECISIONS=bf16 MODES=txt2img N_IMAGES=64 STAGE_TIMEOUT_S=400 \
    EXTRA="--steps 28 --gen-batch-size 4" taskset -c 16-31 scripts/gpu_rehearsal.sh detect > "$K/sd3b4.log" 2>&1
  mark sd3b4_done
  export QUANTFAKE_STORE=/tmp/qf-fidflux
  OUT=$K/b20flux FID_GENERATORS=flux PRECISIONS=bf16,fp8rw timeout -s INT 300 \
    taskset -c 16-31 scripts/gpu_backends.sh fidelity > "$K/b20_fidflux.log" 2>&1
  mark b20_fidflux_done ) &
wait
mark side_by_side_done
OUT=$K/grid TAG=grid QUANTFAKE_STORE=/tmp/qf-grid GENERATORS=flux,sd3,sdxl PRECISIONS=bf16,fp8,nf4,int8 \
  MODES=txt2img,img2img N_IMAGES=8 STAGE_TIMEOUT_S="${GRID_TIMEOUT_S:-840}" \
  EXTRA="-n 2 --dist loadgroup --update-baselines --baselines-dir /tmp/qf-grid-baselines" \
  scripts/gpu_rehearsal.sh detect > "$K/grid.log" 2>&1
mark grid_done
export PYTHONPATH="/tmp/site:$PWD" HF_HUB_OFFLINE=1
python3 -m quantfake.cli report latest > "$K/grid_report.log" 2>&1; echo "report rc=$?" >> "$K/grid_report.log"
cp -r reports/latest* reports/*.html reports/*.md "$K/grid/" 2>/dev/null
for a in benchmarks/rehearsal_flux_h100/*.json; do
  python3 -m quantfake.cli compare "$a" latest --metric all > "$K/grid_compare_$(basename "$a" .json).log" 2>&1
  echo "compare rc=$?" >> "$K/grid_compare_$(basename "$a" .json).log"
done
mark all_done
touch "$K/DONE"
