"""Typed errors a user can cause. Every message says what was wrong and what to do about it."""


class OCIEngineError(Exception):
    """Base class of every error oci-engine raises on purpose."""


class ModelNotFoundError(OCIEngineError, FileNotFoundError):
    """A model name, file or directory that does not exist."""


class ModelFormatError(OCIEngineError, ValueError):
    """A model file that is malformed, truncated, or does not match its config."""


class UnsupportedModelError(OCIEngineError, ValueError):
    """An architecture, tensor type or feature this runtime does not implement."""


class PullError(OCIEngineError, RuntimeError):
    """Fetching a model into the local cache failed."""


class TokenizerError(OCIEngineError, ValueError):
    """A tokenizer or chat template that cannot be loaded or rendered."""


class ContextLengthError(OCIEngineError, ValueError):
    """A prompt (plus requested tokens) longer than the model's context or the KV pool."""


class InvalidRequestError(OCIEngineError, ValueError):
    """Bad sampling parameters or a malformed request."""


class BackendError(OCIEngineError, RuntimeError):
    """A compute backend that is unknown or unavailable on this machine."""


class EvalDataError(OCIEngineError, ValueError):
    """A benchmark data or samples file that is missing or not in the expected format."""


class SandboxError(OCIEngineError, RuntimeError):
    """The code sandbox could not do what was asked (helper failed to start, session gone)."""


class SessionClosedError(SandboxError):
    """A sandbox session that was closed or expired was used again."""


class TooManySessionsError(SandboxError):
    """More live sandbox sessions than the Sandbox's max_sessions."""
