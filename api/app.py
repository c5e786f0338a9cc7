"""The Flask application factory."""

from __future__ import annotations

import time
import uuid
from typing import Optional

from flask import Flask, Response, g, request

from api import admin, health, metrics, web
from api.errors import register_error_handlers
from api.runtime import Runtime
from api.v1 import blueprint as v1_blueprint
from shared.settings import Settings
from shared.structured_logging import configure_logging, request_id_var


def create_app(settings: Optional[Settings] = None, runtime: Optional[Runtime] = None) -> Flask:
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    app.extensions["llamagate"] = runtime or Runtime(settings)

    app.register_blueprint(v1_blueprint)
    app.register_blueprint(admin.blueprint)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(metrics.blueprint)
    register_error_handlers(app)
    web.init_app(app, app.extensions["llamagate"].settings, api_blueprints=(v1_blueprint, admin.blueprint))

    @app.before_request
    def begin_request() -> None:
        runtime_ = app.extensions["llamagate"]
        if not runtime_.started:
            runtime_.start()
        g.request_id = uuid.uuid4().hex
        g.started_at = time.monotonic()
        request_id_var.set(g.request_id)

    @app.after_request
    def end_request(response: Response) -> Response:
        request_id = getattr(g, "request_id", None)
        if request_id:
            response.headers["x-request-id"] = request_id
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        if endpoint.startswith("/v1/"):
            metrics.REQUESTS.labels(endpoint, str(response.status_code)).inc()
            metrics.REQUEST_SECONDS.labels(endpoint, str(response.is_streamed).lower()).observe(
                time.monotonic() - getattr(g, "started_at", time.monotonic()))
        return response

    return app
