"""Test helpers for Conductor (loopback protocol servers, ...)."""
