"""The buffer service."""
