"""Helpers shared by the test suites: real servers and the fixtures' plumbing."""
