#!/usr/bin/env bash
# Runs the GPU work of issue 9 on the lent GPU machine, in stages that survive across calls while
# the machine stays warm (state under /root/gpu). Not part of CI. Stages:
#   setup   install the carried wheels, unpack Redis, start the CUDA extension builds (background)
#   check   correctness of the engines on SmolLM2 (bench/gpu_check.py)
#   vision  images on the exllamav3 engine, a tiny Qwen2.5-VL against transformers (bench/gpu_vision_check.py)
#   bench   throughput on a random Llama-3.1-8B-shaped model (bench/gpu_engines.py)
#   report  build logs, flash-attn build progress, extensions packed into $OUT
set -u
W=/root/gpu
mkdir -p "$W"
export PYTHONPATH="$W/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/out}
log() { echo "== $(date +%T) $*"; }

wait_for() {  # wait_for FILE SECONDS
  local waited=0
  while [ ! -f "$1" ] && [ "$waited" -lt "$2" ]; do sleep 5; waited=$((waited + 5)); done
  [ -f "$1" ]
}

start_redis() {
  pgrep -f 'redis-server.*6390' >/dev/null && return
  LD_LIBRARY_PATH="$W/redis/usr/lib/x86_64-linux-gnu" "$W/redis/usr/bin/redis-server" --port 6390 \
    --save '' --appendonly no --daemonize yes --logfile "$W/redis.log"
  sleep 1
}

for stage in "$@"; do
  case "$stage" in
  setup)
    log setup
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
    python3 -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'
    nvcc --version | tail -2; nproc; free -g | head -2
    python3 -c 'import flash_attn' 2>&1 | tail -1
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$W/site" .whl/*.whl || exit 1
    for part in .gpu-a/*.part?; do [ -f "$part" ] && cp "$part" "$W/"; done
    mkdir -p "$W/redis" && for f in .whl/deb/*.deb; do dpkg -x "$f" "$W/redis"; done
    ln -sf redis-check-rdb "$W/redis/usr/bin/redis-server"
    start_redis; LD_LIBRARY_PATH="$W/redis/usr/lib/x86_64-linux-gnu" "$W/redis/usr/bin/redis-cli" -p 6390 ping
    if [ -f .gpu-ext/ext.tar.xz ]; then
      # Extensions built on an earlier machine of this kind (same torch, CUDA, GPU): importable
      # as prebuilt modules, no rebuild.
      xz -dc .gpu-ext/ext.tar.xz | tar xf - -C "$W" && cp "$W"/torch_extensions/*/*/*.so "$W/site/"
      touch "$W/build-v3.done" "$W/build-v3.ok" "$W/build-v2.done" "$W/build-v2.ok"
      python3 -c 'import exllamav3, exllamav2; from exllamav2 import ext; print("prebuilt extensions import")'
      continue
    fi
    cd "$W"
    setsid nohup bash -c "MAX_JOBS=12 python3 -c 'import exllamav3; print(exllamav3.__file__)' > build-v3.log 2>&1 && touch build-v3.ok; touch build-v3.done" >/dev/null 2>&1 &
    setsid nohup bash -c "MAX_JOBS=4 python3 -c 'import exllamav2; from exllamav2 import ext; print(ext.__file__)' > build-v2.log 2>&1 && touch build-v2.ok; touch build-v2.done" >/dev/null 2>&1 &
    # flash-attn from source (only when its sdist is carried in .whl/fa): how far it gets is the evidence.
    ls "$OLDPWD"/.whl/fa/flash_attn-*.tar.gz >/dev/null 2>&1 && cp "$OLDPWD"/.whl/fa/flash_attn-*.tar.gz . && \
    setsid nohup nice -n 19 bash -c "tar xzf flash_attn-*.tar.gz && cd flash_attn-2.8.3.post2 && date +%s > ../fa.start && FLASH_ATTENTION_FORCE_BUILD=TRUE FLASH_ATTN_CUDA_ARCHS=90 MAX_JOBS=6 python3 setup.py build_ext > ../build-fa.log 2>&1 && touch ../build-fa.ok; touch ../build-fa.done" >/dev/null 2>&1 &
    cd - >/dev/null
    sleep 45
    tail -n 3 "$W"/build-*.log; ls ~/.cache/torch_extensions/*/ 2>/dev/null
    ;;
  stash)  # keep this call's carried model parts on the (warm) machine for a later call
    for part in .gpu-a/*.part? .gpu-b/*.part? .gpu-c/*.part?; do [ -f "$part" ] && cp "$part" "$W/"; done
    ls -la "$W"
    ;;
  check)
    log check
    for part in .gpu-a/*.part? .gpu-b/*.part? .gpu-c/*.part?; do [ -f "$part" ] && cp "$part" "$W/"; done
    if [ ! -f "$W/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
      if [ -f "$W/smollm2.gguf.part1" ] && [ -f "$W/smollm2.gguf.part2" ] && [ -f "$W/smollm2.gguf.part3" ]; then
        cat "$W"/smollm2.gguf.part[123] > "$W/SmolLM2-135M-Instruct.Q4_1.gguf"
      else
        echo "SmolLM2 GGUF not on this machine (cold start?): skipping check"; continue
      fi
    fi
    echo "$(cat .gpu-c/smollm2.gguf.sha256 2>/dev/null)  $W/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c - || true
    wait_for "$W/build-v3.done" 420 || { echo "exllamav3 build still running"; tail -5 "$W/build-v3.log"; }
    wait_for "$W/build-v2.done" 120 || { echo "exllamav2 build still running"; tail -5 "$W/build-v2.log"; }
    tail -n 3 "$W/build-v3.log" "$W/build-v2.log"
    timeout 300 python3 -m bench.gpu_check --gguf "$W/SmolLM2-135M-Instruct.Q4_1.gguf" --work "$W" \
      --out "$OUT/check${CHECK_TAG:-}.json" ${CHECK_ENGINES:+--engines $CHECK_ENGINES} ${CHECK_ARGS:-} 2>&1 | grep -v Warning | tee "$W/check.log" | tail -60
    ;;
  vision)
    log vision
    wait_for "$W/build-v3.done" 420 || { echo "exllamav3 build still running"; continue; }
    timeout 300 python3 -m bench.gpu_vision_check --work "$W" --out "$OUT/vision.json" 2>&1 | grep -v Warning \
      | tee "$W/vision.log" | tail -40
    ;;
  bench)
    log bench
    wait_for "$W/build-v3.done" 420 || { echo "exllamav3 build still running"; continue; }
    start_redis
    timeout 420 python3 -m bench.gpu_engines --work "$W" --redis-url redis://127.0.0.1:6390/0 \
      --out "$OUT/bench.json" ${BENCH_ARGS:-} 2>&1 | tee "$W/bench.log" | tail -40
    ;;
  report)
    log report
    for b in v3 v2 fa; do echo "-- build $b: done=$([ -f $W/build-$b.done ] && echo y || echo n) ok=$([ -f $W/build-$b.ok ] && echo y || echo n)"; tail -4 "$W/build-$b.log" 2>/dev/null; done
    if [ -f "$W/fa.start" ]; then
      echo "flash-attn: $(( $(date +%s) - $(cat $W/fa.start) )) s of building; objects done: $(find $W/flash_attn-2.8.3.post2/build -name '*.o' 2>/dev/null | wc -l) of $(grep -c 'csrc/flash_attn/src/.*\.cu' $W/flash_attn-2.8.3.post2/setup.py) sources"
    fi
    ls -la ~/.cache/torch_extensions/*/*/*.so 2>/dev/null
    (cd ~/.cache && find torch_extensions -name '*.so' | tar cf - -T -) | xz -T16 -3 > "$W/ext.tar.xz" && split -b 15M "$W/ext.tar.xz" "$OUT/ext.tar.xz.part-"
    cat "$W"/build-*.log "$W"/check.log "$W"/vision.log "$W"/bench.log 2>/dev/null | tail -c 4000000 > "$OUT/logs.txt"
    ls -la "$OUT"
    ;;
  esac
done
