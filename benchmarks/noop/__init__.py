"""A benchmark whose trial does almost nothing: it measures the orchestration itself."""
