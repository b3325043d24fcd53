"""Django settings. Every environment variable is read here, through project.env."""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from project import env
from tasks import conf as tasks_conf

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env.get_str("DJANGO_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)  # SQLite, media, Redis data live here

# --- Core -------------------------------------------------------------------

DEBUG = env.get_bool("DJANGO_DEBUG", default=True)
_DEV_SECRET_KEY = "django-insecure-development-only-never-use-this-key-in-production"
SECRET_KEY = env.get_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG=0 "
            "(generate one with `python -c 'import secrets; "
            "print(secrets.token_urlsafe(50))'`)."
        )
    SECRET_KEY = _DEV_SECRET_KEY

ALLOWED_HOSTS = env.get_list(
    "DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS = env.get_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])
# Where clients reach this site: absolute URLs sent outside a request
# (webhook payloads) start with it.
PUBLIC_URL = env.get_str("DJANGO_PUBLIC_URL", "http://127.0.0.1:8000")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    # Before "channels" so that our runworker replaces the stock one.
    "tasks",
    "channels",
    "thumbnails",
    "realtime",
]

MIDDLEWARE = [
    # First, so that its 503 stands for any database outage met below it.
    "project.middleware.DatabaseUnavailableMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "project" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
WSGI_APPLICATION = "project.wsgi.application"
ASGI_APPLICATION = "project.asgi.application"

# --- Database ---------------------------------------------------------------
# SQLite by default: WAL lets readers run beside the writer, the busy timeout
# makes writers queue, and IMMEDIATE transactions take the write lock up front
# (a DEFERRED transaction that reads then writes fails at once with "database
# is locked" when another process writes).
#
# How long a statement waits for a lock another connection holds (SQLite's
# busy timeout, PostgreSQL's lock_timeout), in seconds. Past it the statement
# fails: a request answers 503, a worker keeps what it was writing and tries
# again (tasks.outage).
DB_LOCK_TIMEOUT = env.get_float("DJANGO_DB_LOCK_TIMEOUT", 20.0)

_SQLITE_OPTIONS = {
    "timeout": DB_LOCK_TIMEOUT,
    "transaction_mode": "IMMEDIATE",
    # Checkpoints (which fsync) are left to the reconciler's periodic sweep,
    # off the workers' hot path; 20000 pages (~80 MB) is only a backstop.
    "init_command": (
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
        "PRAGMA wal_autocheckpoint=20000;"
    ),
}
DATABASE_URL = env.get_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["OPTIONS"] = {
        # psycopg 3's pool in every process (web and workers): a thread takes
        # a connection for a request or a task's statements and gives it back,
        # instead of opening one (a few ms on PostgreSQL) or holding one idle.
        "pool": {
            "min_size": 1,
            "max_size": env.get_int("DJANGO_DB_POOL_SIZE", 10),
            # How long a request or a task waits for a connection: while the
            # server is down, how long before a request answers 503.
            "timeout": env.get_float("DJANGO_DB_POOL_TIMEOUT", 5.0),
            # A background reconnect gives up this soon, and the next request
            # starts a new one at once: the pool's own backoff doubles up to
            # this bound, and after a long outage would wait up to half its
            # length before trying again.
            "reconnect_timeout": 2.0,
        },
        "connect_timeout": 5,
        "options": f"-c lock_timeout={round(DB_LOCK_TIMEOUT * 1000)}",
        # A connection cut silently (a firewall, a failed-over host) is found
        # dead in about a minute instead of TCP's quarter of an hour.
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    # Each connection taken from the pool is checked first (one round trip):
    # after a restart of the server the pool's connections are all broken,
    # and unchecked, each would fail one request before being replaced.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = dict(_SQLITE_OPTIONS)
    # A file, not ":memory:", so worker subprocesses see the test database.
    DATABASES["default"]["TEST"] = {
        "NAME": env.get_str("DJANGO_TEST_DATABASE", str(VAR_DIR / "test.sqlite3"))
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in (
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    )
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
MEDIA_URL = "/media/"  # served by thumbnails.media to owners only
# Behind nginx: Django checks access, then answers with X-Accel-Redirect to
# this internal location and nginx sends the file (deploy/nginx.conf).
MEDIA_ACCEL_PREFIX = env.get_str("DJANGO_MEDIA_ACCEL_PREFIX")
MEDIA_ROOT = Path(env.get_str("DJANGO_MEDIA_ROOT", str(VAR_DIR / "media")))

# --- Redis, channel layer, Celery -------------------------------------------
# With REDIS_URL unset, `make run` starts an embedded Redis listening only on
# this unix socket (see project/redis_server.py).

EMBEDDED_REDIS_SOCKET = VAR_DIR / "redis" / "redis.sock"
# One Redis URL, or several (comma-separated): the channel layer shards its
# channels across all of them; the first also carries Celery's broker, the
# reconciler's lock and the worker registry.
REDIS_URLS = env.get_list("REDIS_URL", [f"unix://{EMBEDDED_REDIS_SOCKET}"])
REDIS_URL = REDIS_URLS[0]


def channel_layers_for(
    redis_urls: str | list[str],
    sentinels: list[str] | None = None,
    sentinel_master: str = "",
) -> dict:
    """CHANNEL_LAYERS for one or several Redis URLs, or for a Redis Sentinel
    deployment (``host:port`` of each sentinel and the master's name).

    redis-py 8 defaults to a 5 s socket timeout, shorter than channels-redis'
    blocking receive: without ``socket_timeout: None`` an idle runworker dies
    and idle websockets are closed after ~5 s (channels_redis#422).
    """
    if sentinels:
        hosts = [
            {
                "sentinels": [_host_port(address) for address in sentinels],
                "master_name": sentinel_master,
                "socket_timeout": None,
            }
        ]
    else:
        urls = [redis_urls] if isinstance(redis_urls, str) else list(redis_urls)
        hosts = [{"address": url, "socket_timeout": None} for url in urls]
    return {
        "default": {
            "BACKEND": "realtime.layers.PooledRedisChannelLayer",
            "CONFIG": {
                "hosts": hosts,
                "capacity": env.get_int("CHANNEL_CAPACITY", 1000),
                "expiry": env.get_int("CHANNEL_EXPIRY", 60),
                # Redis connections per process and event loop; commands
                # beyond them wait for one (realtime.layers).
                "pool_size": env.get_int("CHANNEL_LAYER_POOL_SIZE", 100),
            },
        }
    }


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ImproperlyConfigured(f"A sentinel is host:port, not {address!r}.")
    return host, int(port)


def celery_url_for(redis_url: str) -> str:
    """Kombu spells a unix-socket Redis as ``redis+socket://``."""
    if redis_url.startswith("unix://"):
        return "redis+socket://" + redis_url.removeprefix("unix://")
    return redis_url


CHANNEL_LAYERS = channel_layers_for(
    env.get_list("CHANNEL_LAYER_HOSTS", REDIS_URLS),
    sentinels=env.get_list("CHANNEL_LAYER_SENTINELS", []),
    sentinel_master=env.get_str("CHANNEL_LAYER_SENTINEL_MASTER", "mymaster"),
)

CELERY_BROKER_URL = env.get_str("CELERY_BROKER_URL", celery_url_for(REDIS_URL))
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_IMPORTS = ["tasks.celery_tasks", "tasks.schedules"]
CELERY_TASK_DEFAULT_QUEUE = "default"
# Celery's Django fixup closes every database connection before and after each
# task unless told to reuse them: a new SQLite connection per task was most of
# a guaranteed no-op's cost. tasks.celery_tasks checks connections before each
# task instead, as Django does before each request (CONN_MAX_AGE, health checks).
CELERY_DB_REUSE_MAX = 1000
# The reconciler re-sends work of dead workers long before this; it only
# bounds how long Redis keeps an unacknowledged message.
# Ten priority levels (kombu's Redis default has four); tasks.celery_tasks
# maps Django's -100..100 onto them.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": 3600,
    "priority_steps": list(range(10)),
}
# TASKS_SCHEDULE's entries are checked for due ticks this often (seconds);
# a check not run within one interval expires instead of queueing up.
TASKS_SCHEDULE_CHECK_SECONDS = env.get_float("TASKS_SCHEDULE_CHECK_SECONDS", 5.0)
# The job system's own upkeep goes first in the broker (priority 0 is served
# first on Redis), ahead of any backlog of guaranteed jobs on "default".
CELERY_BEAT_SCHEDULE = {
    "reconcile-tasks": {
        "task": "tasks.reconcile",
        "schedule": env.get_float("TASKS_RECONCILE_INTERVAL_SECONDS", 10.0),
        "options": {"priority": 0},
    },
    "run-schedules": {
        "task": "tasks.run_schedules",
        "schedule": TASKS_SCHEDULE_CHECK_SECONDS,
        "options": {"expires": TASKS_SCHEDULE_CHECK_SECONDS, "priority": 0},
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- The job system (django.tasks) ------------------------------------------


def _from_env(name: str) -> float:
    """A job-system timing from the environment, else the job system's default."""
    return env.get_float(name, tasks_conf.DEFAULTS[name])


TASKS = {
    "default": {
        "BACKEND": "tasks.backends.ChannelsBackend",
        "QUEUES": ["default", "thumbnailer"],
    },
    "guaranteed": {
        "BACKEND": "tasks.backends.CeleryBackend",
        "QUEUES": ["default"],
    },
}
# A RUNNING record whose heartbeat is older than this has lost its worker.
TASKS_HEARTBEAT_SECONDS = _from_env("TASKS_HEARTBEAT_SECONDS")
TASKS_STALE_AFTER_SECONDS = _from_env("TASKS_STALE_AFTER_SECONDS")
# A READY Celery record sent longer ago than this, and not run, is sent again
# (Channels records need no re-sending: idle workers claim them).
TASKS_RESEND_AFTER_SECONDS = _from_env("TASKS_RESEND_AFTER_SECONDS")
# An attempt running longer than this is stopped (a task's own ``timeout``
# option wins).
TASKS_DEFAULT_TIMEOUT = _from_env("TASKS_DEFAULT_TIMEOUT")
# `reconcile_tasks --loop` sweeps as often as beat schedules it.
TASKS_RECONCILE_INTERVAL_SECONDS = CELERY_BEAT_SCHEDULE["reconcile-tasks"]["schedule"]
# Retention (tasks.retention): finished records are deleted this long after
# they finished ("7d", "12h", "30m" or seconds), in small batches.
TASKS_RESULT_TTL = env.get_duration("TASKS_RESULT_TTL", "7d")
TASKS_FAILED_TTL = env.get_duration("TASKS_FAILED_TTL", "30d")
# Concurrency limits (tasks.limits) per queue: at most N of the queue's tasks
# RUNNING at once, across every worker and host; a task's own ``concurrency``
# option replaces its queue's. {} : no queue is limited.
TASKS_QUEUE_CONCURRENCY = env.get_json("TASKS_QUEUE_CONCURRENCY", {})
# Periodic tasks (tasks.schedules): name -> {"task": dotted path of a @task,
# "cron": "17 3 * * *" or "every": "1h" (or seconds), optional "args",
# "kwargs", "backend"}. Enqueued at most once per tick across every beat; a
# new entry waits for its first tick. The variable replaces the whole dict.
TASKS_SCHEDULE = env.get_json(
    "TASKS_SCHEDULE",
    {"prune-tasks": {"task": "tasks.retention.prune_expired", "every": "1h"}},
)

# --- Health and metrics -----------------------------------------------------
# /metrics: open in DEBUG; otherwise only with "Authorization: Bearer <token>".
METRICS_TOKEN = env.get_str("METRICS_TOKEN")
# prometheus_client's multi-process mode: every process of this host (web,
# workers, Celery) writes its counters here, and /metrics adds them up. The
# library reads the variable itself, at import: set here before any import.
METRICS_DIR = Path(env.get_str("PROMETHEUS_MULTIPROC_DIR", str(VAR_DIR / "metrics")))
METRICS_DIR.mkdir(parents=True, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(METRICS_DIR)

# --- Thumbnails -------------------------------------------------------------
# Each spec: a name, the long edge in pixels, and the formats to write it in.
THUMBNAIL_SPECS = [
    {"name": "small", "size": 160, "formats": ["JPEG", "WEBP"]},
    {"name": "medium", "size": 640, "formats": ["JPEG", "WEBP"]},
    {"name": "large", "size": 1600, "formats": ["JPEG", "WEBP"]},
]
THUMBNAIL_QUALITY = 85
# File URLs handed out (API, pages, webhooks) are signed and expire after at
# least this many seconds (thumbnails.file_urls); "storage" uses the storage's
# own url() instead, e.g. an S3 storage's presigned URLs.
THUMBNAIL_URL_TTL = env.get_int("THUMBNAIL_URL_TTL", 3600)
THUMBNAIL_FILE_URLS = env.get_choice("THUMBNAIL_FILE_URLS", ["signed", "storage"])
# Formats uploads may have; never opened with any other Pillow plugin.
THUMBNAIL_ALLOWED_FORMATS = env.get_list(
    "THUMBNAIL_ALLOWED_FORMATS", ["JPEG", "PNG", "GIF", "WEBP", "HEIF", "AVIF"]
)
THUMBNAIL_MAX_PIXELS = env.get_int("THUMBNAIL_MAX_PIXELS", 50_000_000)
THUMBNAIL_MAX_UPLOAD_BYTES = env.get_int("THUMBNAIL_MAX_UPLOAD_BYTES", 25 * 1024 * 1024)
# Key for the HMAC-SHA256 signature of webhook calls.
THUMBNAIL_WEBHOOK_SECRET = env.get_str("THUMBNAIL_WEBHOOK_SECRET", SECRET_KEY)
THUMBNAIL_WEBHOOK_TIMEOUT = env.get_float("THUMBNAIL_WEBHOOK_TIMEOUT", 10.0)
# Webhooks to loopback or private addresses are refused (server-side request
# forgery) unless this is on; on by default only in development.
THUMBNAIL_WEBHOOK_ALLOW_PRIVATE = env.get_bool("THUMBNAIL_WEBHOOK_ALLOW_PRIVATE", DEBUG)

# Any Django storage works (e.g. storages.backends.s3.S3Storage with
# django-storages installed and its AWS_* variables set).
STORAGES = {
    "default": {
        "BACKEND": env.get_str(
            "DJANGO_DEFAULT_STORAGE", "django.core.files.storage.FileSystemStorage"
        )
    },
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage",
    },
}
# Files above this are spooled to disk while uploading, not held in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440

# --- REST framework ---------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: an API client without credentials gets 401 with
        # WWW-Authenticate: Token, not a bare 403.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_RATES": {
        "uploads": env.get_str("THUMBNAIL_UPLOAD_RATE", "120/min"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Thumbnails API",
    "DESCRIPTION": "Upload images, follow their thumbnail jobs.",
    "VERSION": "1.0.0",
    # The docs' JavaScript and CSS from our own static files: they work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Websockets -------------------------------------------------------------
# Daphne's message and frame limit (bytes); Makefile/Procfile pass it on.
WEBSOCKET_MAX_MESSAGE_BYTES = env.get_int("WEBSOCKET_MAX_MESSAGE_BYTES", 64 * 1024)
# The echo consumer refuses text longer than this (characters).
ECHO_MAX_CHARS = 4096
# /ws/jobs/ (realtime.consumers): the snapshot sent on connect holds the
# user's unfinished tasks and those finished this many seconds ago or less
# (at most REALTIME_SNAPSHOT_LIMIT, newest first); a socket sending more than
# REALTIME_MAX_FRAMES frames in REALTIME_FRAMES_WINDOW seconds is closed
# (4429); an idle socket gets {"type": "ping"} after REALTIME_PING_SECONDS.
REALTIME_SNAPSHOT_SECONDS = env.get_float("REALTIME_SNAPSHOT_SECONDS", 300.0)
REALTIME_SNAPSHOT_LIMIT = env.get_int("REALTIME_SNAPSHOT_LIMIT", 200)
REALTIME_MAX_FRAMES = env.get_int("REALTIME_MAX_FRAMES", 20)
REALTIME_FRAMES_WINDOW = env.get_float("REALTIME_FRAMES_WINDOW", 10.0)
REALTIME_PING_SECONDS = env.get_float("REALTIME_PING_SECONDS", 25.0)

# --- Security (production) --------------------------------------------------

SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
if not DEBUG:
    SECURE_SSL_REDIRECT = env.get_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.get_int("DJANGO_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    if env.get_bool("DJANGO_BEHIND_PROXY", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Logging ----------------------------------------------------------------

LOG_LEVEL = env.get_str("DJANGO_LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Listed without handlers so that Django's own console handler for
        # "django" (DEBUG only) goes: every line once, through the root's.
        "django": {"level": LOG_LEVEL},
        "django.tasks": {"level": LOG_LEVEL},
        "asyncio": {"level": "WARNING"},
        # The pool logs a warning per failed reconnect while the database is
        # down; each process logs the outage once itself (tasks.outage).
        "psycopg.pool": {"level": "ERROR"},
    },
}
