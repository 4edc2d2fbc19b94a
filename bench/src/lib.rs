//! Benchmarks land here (issue 6); see bench/README.md.
