"""memsvc: a self-hosted long-term memory service for conversational LLM agents."""

__version__ = "0.1.0"
