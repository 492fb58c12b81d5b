"""Small, real evaluators shipped with nasps, for the default search and the tests."""
