"""Errors for bad input: each names the file, the line, the field and a short stable reason code.

`str(err)` reads like a compiler message, e.g.
`data/train.jsonl:12: key 'utt7': field 'audio': missing_file: /x/y.wav does not exist`.
"""
from __future__ import annotations

# Stable reason codes (tools and tests match on these, so never rename one).
REASONS = {
    "missing_file": "the audio (or manifest) file does not exist",
    "empty_audio": "the audio file has zero bytes",
    "not_audio": "the bytes are not in an audio format that libsndfile reads",
    "truncated": "the file ends before the data its header announces",
    "zero_length": "the audio (or the selected segment) has no samples",
    "nan_inf": "the decoded samples contain NaN or infinity",
    "too_long": "the audio is longer than the allowed maximum",
    "bad_segment": "offset/end select samples outside the file",
    "malformed_json": "the line is not one valid JSON object",
    "missing_field": "a required field is absent or empty",
    "bad_type": "a field has the wrong type",
    "bad_value": "a field has the right type but an impossible value",
    "unknown_task": "the task is not one of usam.tasks.TASKS",
    "duplicate_key": "the sample key was already used",
    "unreadable": "the file exists but cannot be read",
}


class DataError(ValueError):
    """Bad input data. Attributes: reason (a key of REASONS), message, file, line, field, key."""

    def __init__(self, reason: str, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None, key: str | None = None):
        if reason not in REASONS:
            raise ValueError(f"unknown DataError reason {reason!r}; known: {', '.join(REASONS)}")
        self.reason = reason
        self.message = message
        self.file = None if file is None else str(file)
        self.line = line
        self.field = field
        self.key = key
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = []
        if self.file is not None:
            parts.append(self.file if self.line is None else f"{self.file}:{self.line}")
        if self.key is not None:
            parts.append(f"key {self.key!r}")
        if self.field is not None:
            parts.append(f"field {self.field!r}")
        parts.append(self.reason)
        parts.append(self.message)
        return ": ".join(parts)

    def with_context(self, *, file: str | None = None, line: int | None = None, field: str | None = None,
                     key: str | None = None) -> "DataError":
        """A copy with the given location filled in (given values replace the current ones)."""
        return DataError(self.reason, self.message,
                         file=self.file if file is None else file,
                         line=self.line if line is None else line,
                         field=self.field if field is None else field,
                         key=self.key if key is None else key)

    def as_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "key": self.key, "field": self.field,
                "reason": self.reason, "message": self.message}

    # Exceptions cross process boundaries (DataLoader workers): rebuild from the fields, not from args.
    def __reduce__(self):
        return (_rebuild, (self.reason, self.message, self.file, self.line, self.field, self.key))


def _rebuild(reason, message, file, line, field, key):
    return DataError(reason, message, file=file, line=line, field=field, key=key)
