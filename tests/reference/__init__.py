"""Independent float64 numpy reference models, used as the spec in the tests."""
