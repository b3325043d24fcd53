"""A filesystem storage whose deletes fail the first N times (across
processes: the count lives in a file), to test retried cleanup."""

import os
from pathlib import Path

from django.core.files.storage import FileSystemStorage


class FlakyStorage(FileSystemStorage):
    def delete(self, name):
        state = Path(os.environ["FLAKY_STORAGE_STATE"])
        failures = int(os.environ.get("FLAKY_STORAGE_FAILURES", "2"))
        seen = int(state.read_text() or 0) if state.exists() else 0
        if seen < failures:
            state.write_text(str(seen + 1))
            raise OSError(f"storage unavailable (simulated failure {seen + 1})")
        super().delete(name)
