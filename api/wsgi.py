"""The WSGI entry point gunicorn loads: `api.wsgi:app`."""

from api.app import create_app

app = create_app()
