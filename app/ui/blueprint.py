"""The console's blueprint and its login rate limiter, shared by the page modules."""

from __future__ import annotations

from flask import Blueprint
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

bp = Blueprint(
    "ui",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/assets",
)

# Only the login and setup forms are limited (no default limits): the storage is Redis when
# REDIS_URL is set, so the count holds across server processes, else this process's memory.
limiter = Limiter(key_func=get_remote_address, default_limits=[])
