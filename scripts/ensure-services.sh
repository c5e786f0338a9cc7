#!/usr/bin/env bash
# Makes sure RabbitMQ and Redis answer on their default local ports, starting them if they are
# installed here but stopped. Set LLAMAGATE_BROKER_URL / LLAMAGATE_REDIS_URL to use remote ones
# (then nothing is started).
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_port() { # host port name seconds
  for _ in $(seq 1 "$4"); do port_open "$1" "$2" && return 0; sleep 1; done
  echo "error: $3 is not answering on $1:$2" >&2; return 1
}

if [ -z "${LLAMAGATE_REDIS_URL:-}" ] && ! port_open 127.0.0.1 6379; then
  if command -v redis-server >/dev/null; then
    echo "starting Redis"
    mkdir -p /tmp/llamagate-redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /tmp/llamagate-redis --logfile /tmp/llamagate-redis/redis.log
  else
    echo "error: Redis is not running and redis-server is not installed (apt-get install redis-server)" >&2
    exit 1
  fi
fi

if [ -z "${LLAMAGATE_BROKER_URL:-}" ] && ! port_open 127.0.0.1 5672; then
  if command -v rabbitmq-server >/dev/null; then
    echo "starting RabbitMQ"
    rabbitmq-server -detached
  else
    echo "error: RabbitMQ is not running and rabbitmq-server is not installed (apt-get install rabbitmq-server)" >&2
    exit 1
  fi
fi

[ -n "${LLAMAGATE_REDIS_URL:-}" ] || wait_port 127.0.0.1 6379 Redis 30
[ -n "${LLAMAGATE_BROKER_URL:-}" ] || wait_port 127.0.0.1 5672 RabbitMQ 90
echo "RabbitMQ and Redis are up"
