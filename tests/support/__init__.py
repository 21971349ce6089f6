"""Test support: fixtures, toy pipelines and audit tools the product never imports."""
