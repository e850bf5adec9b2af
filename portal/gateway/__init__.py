"""The metering gateway (API.md §12): OpenAI-compatible /v1/chat/completions and /v1/models."""
