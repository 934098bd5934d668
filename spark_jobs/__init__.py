"""Spark + Delta jobs: pure DataFrame -> DataFrame functions plus thin I/O entry points."""
