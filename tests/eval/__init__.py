"""Tests of the evaluation runners."""
