"""Test support: helpers shared by test modules. No production module imports this package."""
