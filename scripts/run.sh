#!/usr/bin/env bash
# Starts the Procfile's web, worker and embeddings processes with honcho, waits until LlamaGate is ready,
# and prints the base URL to point the openai SDK at. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
host=${LLAMAGATE_HOST:-127.0.0.1}
port=${PORT:-${LLAMAGATE_PORT:-8000}}

llamagate release >/dev/null
# honcho gives each process a PORT, counting up from -p: the web process gets ours.
honcho start -f Procfile -p "$port" web worker embeddings &
honcho_pid=$!
trap 'kill -TERM $honcho_pid 2>/dev/null; wait $honcho_pid' INT TERM

# Ready once every configured model is served (the worker processes load theirs at their own pace).
models="${LLAMAGATE_WORKER_MODELS:-smollm2-135m-instruct},${LLAMAGATE_EMBEDDINGS_MODELS:-all-minilm-l6-v2}"
all_served() {
  local body
  body=$(curl -fsS "http://$host:$port/readyz" 2>/dev/null) || return 1
  for model in ${models//,/ }; do grep -q "\"$model\"" <<<"$body" || return 1; done
}

for _ in $(seq 1 180); do
  if all_served; then
    printf '\nLlamaGate is ready. Website: http://%s:%s/  Base URL: http://%s:%s/v1\n' "$host" "$port" "$host" "$port"
    printf 'Sign up on the website for an API key (new accounts start with $5 of credit), or from a shell:\n'
    printf '  .venv/bin/llamagate users create you@example.com && .venv/bin/llamagate keys create you@example.com\n'
    printf 'Then: curl http://%s:%s/v1/chat/completions -H "Authorization: Bearer $LLAMAGATE_API_KEY" \\\n' "$host" "$port"
    printf '       -H "Content-Type: application/json" -d '"'"'{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "What is the capital of France?"}]}'"'"'\n'
    printf 'Embeddings: curl http://%s:%s/v1/embeddings -H "Authorization: Bearer $LLAMAGATE_API_KEY" \\\n' "$host" "$port"
    printf '       -H "Content-Type: application/json" -d '"'"'{"model": "all-minilm-l6-v2", "input": "The quick brown fox"}'"'"'\n\n'
    break
  fi
  kill -0 $honcho_pid 2>/dev/null || exit 1
  sleep 1
done
wait $honcho_pid
