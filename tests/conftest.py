"""Suite-wide setup."""

# Imported up front on purpose: hypothesis's pytest plugin otherwise imports it lazily in the final summary,
# after streaming pipelines ran, and CPython 3.11's parser (used by pytest's assertion rewriting) then fails with
# "AST constructor recursion depth mismatch" when a single integration test file is run on its own.
import hypothesis  # noqa: F401
