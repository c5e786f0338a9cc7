"""The `llamagate` command: `web`, `worker`, `embeddings-worker`, `release`, `migrate`, and the account
commands."""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="llamagate", description="LlamaGate, an OpenAI-compatible LLM API.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("web", help="serve the HTTP API (gunicorn with gevent workers)")
    commands.add_parser("worker", help="run an inference worker for LLAMAGATE_WORKER_MODELS")
    commands.add_parser("embeddings-worker", help="run an embeddings worker for LLAMAGATE_EMBEDDINGS_MODELS")
    commands.add_parser("release", help="migrate the database, check the registry, prepare tokenizers "
                                        "(the deploy step)")
    commands.add_parser("migrate", help="bring the database schema up to date")
    from api.accounts.commands import add_commands

    add_commands(commands)
    args = parser.parse_args(argv)

    if args.command == "web":
        os.execv(sys.executable, [sys.executable, "-m", "gunicorn", "-c", "python:api.gunicorn_config",
                                  "api.wsgi:app"])
    elif args.command == "worker":
        from inference_worker.main import run_worker
        from shared.settings import Settings

        run_worker(Settings.from_env())
    elif args.command == "embeddings-worker":
        from embeddings_worker.main import run_embeddings_worker
        from shared.settings import Settings

        run_embeddings_worker(Settings.from_env())
    elif args.command == "release":
        release()
    elif args.command == "migrate":
        migrate()
    else:
        from api.accounts.commands import run_command
        from api.store.db import Database
        from shared.settings import Settings

        sys.exit(run_command(args, Database(Settings.from_env().database_url)))


def migrate() -> None:
    from api.store.db import upgrade
    from shared.settings import Settings

    upgrade(Settings.from_env().database_url)


def release() -> None:
    """Fail the deploy early on a broken registry (or a vision model without an image-token rule);
    convert tokenizers once instead of per process."""
    from shared.image_tokens import image_token_rule
    from shared.registry import ModelRegistry
    from shared.settings import Settings
    from shared.tokenizer_cache import prepare_tokenizer

    migrate()
    settings = Settings.from_env()
    registry = ModelRegistry.load(settings.models_file)
    for spec in registry:
        path = prepare_tokenizer(spec.tokenizer, settings.cache_dir)
        images = f" images={image_token_rule(spec.weights.resolve(), spec.engine).describe()!r}" \
            if spec.supports("vision") else ""
        print(f"{spec.id}: engine={spec.engine} context={spec.context_length} tokenizer={path}{images}")


if __name__ == "__main__":
    main()
