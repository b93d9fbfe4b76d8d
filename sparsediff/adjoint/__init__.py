"""Differentiation rules of a linear solve (VJP, JVP, pattern gradients)."""
