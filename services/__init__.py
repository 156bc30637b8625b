"""Eureka services: one folder each; they meet only in proto/ and shared/."""
