"""oci_engine.sandbox: a seccomp-restricted fork executor. Imports nothing of the runtime, never torch."""
