//! Wall-clock time as unix milliseconds, the one definition both sides use
//! for timestamps on the wire and on disk.

/// Milliseconds since the unix epoch; 0 if the clock is before it.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
