import copyreg

from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = "Background tasks"

    def ready(self) -> None:
        from tasks import limits, schedules  # noqa: F401 (register their checks)

        restore_standard_pickling()


def restore_standard_pickling() -> None:
    """Undo Twisted's process-wide pickling overrides.

    Daphne imports Twisted (``daphne`` in INSTALLED_APPS imports its server, and
    the ``daphne`` command does so before loading the project), and Twisted's
    ``twisted.persisted.styles``, imported on the way, registers copyreg
    reducers for methods, functions and modules. Its method reducer cannot
    rebuild a classmethod, so unpickling a ``Task`` or ``TaskResult``
    (whose ``__reduce__`` is ``Task._reconstruct``) fails with "type object
    'type' has no attribute '_reconstruct'". Python pickles methods and
    functions itself; nothing Daphne runs pickles through these reducers.
    Called from ``ready()``, after every app (Daphne's first) is imported.
    """
    for cls, reducer in list(copyreg.dispatch_table.items()):
        if getattr(reducer, "__module__", "") == "twisted.persisted.styles":
            del copyreg.dispatch_table[cls]
