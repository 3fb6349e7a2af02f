#!/usr/bin/env bash
# The GPU checks of mlff-ins, in one run on a machine with an NVIDIA GPU (the development
# machine's `device` tool: wheels carried in .whl/, results written to $OUT). On an ordinary GPU
# machine with the package installed, run it with OUT=some/folder and no .whl/.
#   1. the CUDA tests (model forces on cuda equal cpu; correlate on cuda equals cpu; md --device;
#      predictor training on cuda equals cpu)
#   2. python -m mlff_ins.bench md on cuda with the shipped Si reference model (512 to 32768 atoms)
#   3. python -m mlff_ins.bench spectra on cuda (dynasor on the machine's CPU cores beside it)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
{
  nvidia-smi -L
  python3 -c "import torch, nequip, phonopy; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'nequip', nequip.__version__)"
  echo "== CUDA tests"
  timeout 240 python3 -m pytest -p no:cacheprovider -o addopts="" -q -ra \
    tests/test_model.py::test_cuda_matches_cpu tests/test_spectra_physics.py::test_cuda_equals_cpu \
    tests/test_md.py::test_md_device_auto_and_structures_it_cannot_run \
    tests/test_predictor.py::test_training_on_cuda_equals_cpu_and_saves_cpu_weights
  echo "== bench md (cuda)"
  timeout 200 python3 -m mlff_ins.bench md --model mlff_ins/resources/si/reference_model \
    --device cuda --reps 4,8,16 --atom-steps 200000 --steps 20 --repeats 2
  echo "== bench spectra (cuda)"
  timeout 120 python3 -m mlff_ins.bench spectra --device cuda --no-scaling
} 2>&1 | tee "$OUT/gpu_check.log"
